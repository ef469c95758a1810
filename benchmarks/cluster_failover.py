"""Failover and append figures of the cluster layer (beanstalk_py/cluster) on 3 local etcd members.

    python benchmarks/cluster_failover.py                 # lease TTL 1 s, 10 runs per figure
    python benchmarks/cluster_failover.py --ttl 2 --runs 5

Starts 3 etcd members on 127.0.0.1 (tests/support/etcd.py: ``--heartbeat-interval 100
--election-timeout 500``, data on /dev/shm) and measures:

* ``takeover``: SIGKILL of the lease holder (its own process, tests/cluster/contender.py) until
  one of two waiting contenders has won (their campaign returned);
* ``etcd_leader_kill``: SIGKILL of etcd's raft leader under a sequential append loop: the longest
  gap between two acknowledged appends, and whether the lease holder self-fenced meanwhile (its
  keepalives stall during etcd's election); the member is restarted between runs;
* ``append``: sequential fenced appends (one in flight) of 1 KiB and 64 KiB batches, latency.

Prints one JSON document. Figures on a shared machine are noisy; compare runs side by side.
The engine is not involved (see docs/CLUSTER.md, status).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.etcd import EtcdCluster  # noqa: E402

from beanstalk_py.cluster.client import EtcdClient, EtcdUnavailable  # noqa: E402
from beanstalk_py.cluster.config import parse_cluster_url  # noqa: E402
from beanstalk_py.cluster.etcdlog import EtcdLog, Fenced  # noqa: E402
from beanstalk_py.cluster.leadership import Election, NotLeader  # noqa: E402

CONTENDER = ROOT / "tests" / "cluster" / "contender.py"


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "min": round(xs[0], 4),
        "p50": round(statistics.median(xs), 4),
        "p99": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))], 4),
        "max": round(xs[-1], 4),
    }


async def client_for(cluster: EtcdCluster, order: list[int]) -> EtcdClient:
    eps = parse_cluster_url(cluster.url).endpoints
    return await EtcdClient.connect([eps[i] for i in order])


async def takeover(cluster: EtcdCluster, ttl: int, runs: int) -> list[float]:
    out = []
    for run in range(runs):
        prefix = f"bench-takeover-{os.getpid()}-{run}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BQ_TTL": str(ttl)}
        holder = await asyncio.create_subprocess_exec(
            sys.executable, str(CONTENDER), ",".join(cluster.endpoints), prefix, "a",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert holder.stdout is not None
        while json.loads(await holder.stdout.readline())["event"] != "leader":
            pass
        clients = [await client_for(cluster, o) for o in ([1, 2, 0], [2, 0, 1])]
        waiting = [
            asyncio.ensure_future(Election(c, prefix, n, n, ttl=ttl).campaign())
            for c, n in zip(clients, "bc", strict=True)
        ]
        await asyncio.sleep(0.3)
        killed = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        done, pending = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        term = done.pop().result()
        out.append(term.won_at - killed)
        for t in pending:
            t.cancel()
        await term.resign()
        await holder.wait()
        for c in clients:
            await c.close()
    return out


async def etcd_leader_kill(cluster: EtcdCluster, ttl: int, runs: int) -> dict[str, object]:
    stalls, lost = [], 0
    for run in range(runs):
        prefix = f"bench-etcdkill-{os.getpid()}-{run}"
        client = await client_for(cluster, [0, 1, 2])
        election = Election(client, prefix, "a", "a", ttl=ttl)
        log = EtcdLog(client, prefix)
        term = await election.campaign()
        first_epoch = term.epoch
        acks: list[float] = []
        seq = 1
        killed = 0.0
        victim = None
        while True:
            try:
                await term.append(log, seq, b"x" * 1024)
            except EtcdUnavailable:
                continue
            except (NotLeader, Fenced):
                await term.close()
                term = await election.campaign()
                seq = await log.last_seq() + 1
                continue
            acks.append(time.monotonic())
            seq += 1
            if seq == 50:
                victim = cluster.wait_raft_leader()
                killed = time.monotonic()
                cluster.kill(victim)
            if killed and acks[-1] > killed + 1.0 and len(acks) > 100:
                break
        around = [max(t for t in acks if t <= killed)] + [t for t in acks if t > killed]
        stalls.append(max(b - a for a, b in itertools.pairwise(around)))
        lost += term.epoch != first_epoch
        await term.resign()
        await client.close()
        assert victim is not None
        cluster.restart(victim)
    return {"append_stall_s": summary(stalls), "leadership_lost_runs": lost, "runs": runs}


async def appends(cluster: EtcdCluster, ttl: int, n: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for size in (1024, 65536):
        prefix = f"bench-append-{os.getpid()}-{size}"
        client = await client_for(cluster, [0, 1, 2])
        term = await Election(client, prefix, "a", "a", ttl=ttl).campaign()
        log = EtcdLog(client, prefix)
        lat = []
        start = time.monotonic()
        for seq in range(1, n + 1):
            t0 = time.monotonic()
            await term.append(log, seq, b"x" * size)
            lat.append((time.monotonic() - t0) * 1000)
        elapsed = time.monotonic() - start
        out[f"{size}B"] = {"latency_ms": summary(lat), "appends_per_s": round(n / elapsed)}
        await term.resign()
        await client.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ttl", type=int, default=1, help="lease TTL requested (etcd raises it)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--appends", type=int, default=1000)
    args = ap.parse_args()
    with EtcdCluster.start() as cluster:
        result = {
            "ttl_requested": args.ttl,
            "takeover_s": summary(await takeover(cluster, args.ttl, args.runs)),
            "etcd_leader_kill": await etcd_leader_kill(cluster, args.ttl, args.runs),
            "append": await appends(cluster, args.ttl, args.appends),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
