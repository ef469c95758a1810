#!/usr/bin/env bash
# cluster_target.sh: a 3-node beanstalk-py cluster as ONE server command, for drivers that start
# a single server per run (the shared bench-side-by-side.sh):
#
#   bench-side-by-side.sh --name cluster --binlog f0 --binlog-scenarios put50 \
#     --scenarios none --mem-jobs 0 --interference 0 --warmup 3 \
#     --target 'benchmarks/cluster_target.sh leader {port} {dir} {binlog}'
#
# Starts 3 etcd members (127.0.0.1, free ports, --heartbeat-interval 100 --election-timeout 500,
# data in ETCD_DIR, default /dev/shm as tests/support/etcd.py) and 3 nodes, then EXECs one node
# on PORT, so the caller's pid is that node (its CPU and RSS are what the driver reports):
#   leader: the exec'd node starts alone, wins the election, and a watcher starts the other two
#           once its /readyz says leader;
#   relay:  a leader is started first, then the exec'd node joins as a follower and relays.
# The watcher stops etcd and the other nodes when the exec'd node exits (SIGTERM, then SIGKILL).
# {binlog} is accepted and ignored except for its directory: cluster mode always acknowledges
# after the local binlog write and the etcd commit. The etcd members' and other nodes' CPU is
# not in the driver's "server" figure (it shows up as other processes: hence --interference 0);
# benchmarks/cluster.py measures them.
set -euo pipefail

mode="${1:?usage: cluster_target.sh leader|relay PORT DIR [binlog flags]}"
port="${2:?PORT}"
py="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(cd "${3:?DIR}" && pwd)"
# The build to run: BEANSTALK_PY_TEST_PYTHONPATH (an installed, compiled build, as for the
# tests), else this checkout. Not run from the checkout: "python -m" would import its sources.
export PYTHONPATH="${BEANSTALK_PY_TEST_PYTHONPATH:-$here/..}${PYTHONPATH:+:$PYTHONPATH}"
cd "$dir"
etcd_root="$(mktemp -d "${ETCD_DIR:-/dev/shm}/bq-target-etcd.XXXXXX")"
read -r -a p <<<"$("$py" -c '
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')"
cluster="etcd://127.0.0.1:${p[0]},127.0.0.1:${p[2]},127.0.0.1:${p[4]}/bench"
initial="m0=http://127.0.0.1:${p[1]},m1=http://127.0.0.1:${p[3]},m2=http://127.0.0.1:${p[5]}"
pids=()
for i in 0 1 2; do
  c="${p[$((2 * i))]}" q="${p[$((2 * i + 1))]}"
  etcd --name "m$i" --data-dir "$etcd_root/m$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$q" --initial-advertise-peer-urls "http://127.0.0.1:$q" \
    --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "$etcd_root" \
    --heartbeat-interval 100 --election-timeout 500 --logger zap --log-level warn \
    >"$etcd_root/m$i.log" 2>&1 </dev/null &
  pids+=($!)
done

node() {  # node NAME PORT: one node in the background
  mkdir -p "$dir/$1"
  "$py" -m beanstalk_py -l 127.0.0.1 -p "$2" -b "$dir/$1" --cluster "$cluster" --node-id "$1" \
    --advertise "127.0.0.1:$2" --lease-ttl 1 </dev/null &
  pids+=($!)
}
role() {  # role PORT: the first word of the node's /readyz ("" while it does not answer)
  "$py" - "$1" <<'EOF' 2>/dev/null || true
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=0.5) as r:
    print(r.read().decode().split(" ", 1)[0])
EOF
}
wait_role() {  # wait_role PORT ROLE
  for _ in $(seq 1 300); do [ "$(role "$1")" = "$2" ] && return 0; sleep 0.1; done
  return 1
}

main=$$  # exec keeps the pid
if [ "$mode" = relay ]; then
  node n1 "${p[6]}"
  wait_role "${p[6]}" leader
fi
(
  trap '' TERM INT
  if [ "$mode" = leader ]; then
    wait_role "$port" leader && { node n1 "${p[6]}"; node n2 "${p[7]}"; }
  else
    node n2 "${p[7]}"
  fi
  while kill -0 "$main" 2>/dev/null; do sleep 0.2; done
  kill -TERM "${pids[@]}" 2>/dev/null || true
  sleep 2
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$etcd_root"
) >/dev/null 2>&1 &
# The members must answer before the node's first etcd call, or it waits out its retries.
for _ in $(seq 1 100); do
  "$py" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${p[0]}/health', timeout=0.5)" \
    2>/dev/null && break
  sleep 0.1
done
mkdir -p "$dir/n0"
exec "$py" -m beanstalk_py -l 127.0.0.1 -p "$port" -b "$dir/n0" --cluster "$cluster" \
  --node-id n0 --advertise "127.0.0.1:$port" --lease-ttl 1
