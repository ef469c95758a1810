#!/usr/bin/env bash
# Build docker/Dockerfile's image from this repository and probe a running container.
#
#   bash docker/test-image.sh            # from anywhere; exits non-zero on any failed check
#
# Engine: docker when a Docker daemon answers, else podman (rootful). With podman, the base is
# a Debian bookworm rootfs made here with debootstrap and imported ("podman import"), because no
# registry of base images may be reachable; it is cached as an image and as a tarball under
# $BEANSTALK_PY_CI_CACHE (default /var/cache/beanstalk-py-ci) when that directory can be used,
# and rebuilt from nothing otherwise. Set BEANSTALK_PY_BASE_IMAGE to use another base instead
# (e.g. docker.io/library/python:3.11-slim).
#
# Podman quirks handled here: crun fails on hybrid cgroups (runc is used when installed), the
# sandboxed root cannot raise rlimits (--ulimit on build and run), and pip inside the build
# needs the host's CA bundle and pip configuration (mounted read-only) and the host network.
#
# Checks: compiled core in the image, nothing of the build stage in it, its size; the server
# runs as uid 10001; put/reserve/delete, /metrics, /healthz, /readyz answer; the HEALTHCHECK
# command succeeds; jobs survive "stop" and "kill" on the same volume; SIGTERM exits 0 quickly.
# Only loopback ports are published.
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
IMAGE="${BEANSTALK_PY_TEST_IMAGE:-localhost/beanstalk-py:test}"
CACHE="${BEANSTALK_PY_CI_CACHE:-/var/cache/beanstalk-py-ci}"
BASE_TAG="localhost/beanstalk-py-base:bookworm-1"  # bump the suffix when the recipe changes
MAX_IMAGE_MB="${BEANSTALK_PY_MAX_IMAGE_MB:-250}"
STOP_SECONDS=5  # SIGTERM must end the server within this
tag="bsp-test-$$"
work="$(mktemp -d)"
failures=0
results=()
started=$(date +%s)

pass() { results+=("PASS  $1"); echo "PASS  $1"; }
fail() { results+=("FAIL  $1"); echo "FAIL  $1" >&2; failures=$((failures + 1)); }
check() {  # check "description" command...: PASS if the command succeeds
  local what="$1"
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
summary() {
  echo
  echo "== docker/test-image.sh summary (engine: ${ENGINE_NAME:-none}, $(( $(date +%s) - started )) s) =="
  printf '%s\n' "${results[@]}"
  if [ "$failures" -eq 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL ($failures failed)"; fi
}

# --- engine --------------------------------------------------------------------------------
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE_NAME=docker
  E=(docker)
  BUILD_OPTS=()
  RUN_OPTS=()
elif command -v podman >/dev/null 2>&1; then
  ENGINE_NAME=podman
  E=(podman)
  if command -v runc >/dev/null 2>&1; then E+=(--runtime runc); fi
  ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1000:1000)
  # --format docker keeps HEALTHCHECK (the OCI format has no field for it).
  BUILD_OPTS=(--format docker --network host "${ULIMITS[@]}"
              --ignorefile docker/Dockerfile.dockerignore)
  RUN_OPTS=("${ULIMITS[@]}")
else
  echo "FAIL  neither a Docker daemon nor podman is available" >&2
  exit 1
fi

cleanup() {
  for c in "$tag-a" "$tag-b" "$tag-c" "$tag-d"; do
    "${E[@]}" rm -f -t 0 "$c" >/dev/null 2>&1 || "${E[@]}" rm -f "$c" >/dev/null 2>&1
  done
  "${E[@]}" volume rm -f "$tag-data" >/dev/null 2>&1
  if [ -n "${compose_up:-}" ]; then compose down -v >/dev/null 2>&1; fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- base image (podman without a registry) --------------------------------------------------
debian_mirror() {
  # The host's own Debian mirror (one-line or deb822 sources), else deb.debian.org.
  local m
  m="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null | grep -v '^\s*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ')"
  echo "${m:-http://deb.debian.org/debian}"
}

make_base() {
  if "${E[@]}" image exists "$BASE_TAG" 2>/dev/null; then
    echo "base: $BASE_TAG (cached image)"
    return 0
  fi
  local tarball="$CACHE/$(basename "${BASE_TAG//:/-}").tar"
  if [ -s "$tarball" ]; then
    echo "base: importing $tarball"
    "${E[@]}" import --change 'CMD ["python3"]' "$tarball" "$BASE_TAG" >/dev/null && return 0
  fi
  command -v debootstrap >/dev/null 2>&1 || { echo "debootstrap is not installed" >&2; return 1; }
  local mirror rootfs="$work/rootfs"
  mirror="$(debian_mirror)"
  echo "base: debootstrap bookworm from $mirror (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; return 1; }
  # Smaller base: no package cache, lists or docs. "python" is what the Dockerfile calls.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  tar --numeric-owner -C "$rootfs" -cf "$work/base.tar" .
  rm -rf "$rootfs"
  "${E[@]}" import --change 'CMD ["python3"]' "$work/base.tar" "$BASE_TAG" >/dev/null || return 1
  if mkdir -p "$CACHE" 2>/dev/null && [ -w "$CACHE" ]; then
    mv "$work/base.tar" "$tarball" && echo "base: cached as $tarball"
  fi
}

BUILD_ARGS=()
if [ -n "${BEANSTALK_PY_BASE_IMAGE:-}" ]; then
  BUILD_ARGS=(--build-arg "PYTHON_IMAGE=$BEANSTALK_PY_BASE_IMAGE")
elif [ "$ENGINE_NAME" = podman ]; then
  if ! make_base; then fail "bootstrap a Debian base image"; summary; exit 1; fi
  BUILD_ARGS=(--build-arg "PYTHON_IMAGE=$BASE_TAG")
fi

# --- pip configuration for the build (podman: read-only mounts) ------------------------------
if [ "$ENGINE_NAME" = podman ]; then
  # Whole directories, so files a configuration names next to it (constraints) come along.
  for f in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip" \
           /etc/ssl/certs/ca-certificates.crt; do
    # The build runs as root: user configuration goes to root's home.
    [ -e "$f" ] && BUILD_OPTS+=(-v "$f:${f/#$HOME//root}:ro")
  done
  # PIP_* variables (an index URL, a CA bundle...) as a configuration file pip reads too.
  # Lower precedence than in the host's pip, where the environment wins over files.
  if env | grep -q '^PIP_' && [ ! -e /etc/xdg/pip ]; then
    {
      echo "[global]"
      env | grep '^PIP_' | grep -v '^PIP_CONFIG_FILE=' | while IFS='=' read -r k v; do
        k="${k#PIP_}"
        k="${k,,}"
        echo "${k//_/-} = $v"
      done
    } >"$work/pip-env.conf"
    BUILD_OPTS+=(-v "$work/pip-env.conf:/etc/xdg/pip/pip.conf:ro")
    pip_ca="${PIP_CERT:-}"
    if [ -n "$pip_ca" ] && [ -f "$pip_ca" ] && [ "$pip_ca" != /etc/ssl/certs/ca-certificates.crt ]; then
      BUILD_OPTS+=(-v "$pip_ca:$pip_ca:ro")
    fi
  fi
fi

# --- build ----------------------------------------------------------------------------------
echo "build: ${E[*]} build ${BUILD_OPTS[*]} ${BUILD_ARGS[*]} -f docker/Dockerfile -t $IMAGE ."
t0=$(date +%s)
if ! "${E[@]}" build "${BUILD_OPTS[@]}" "${BUILD_ARGS[@]}" -f docker/Dockerfile -t "$IMAGE" . \
    >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  fail "image builds (with BEANSTALK_PY_REQUIRE_COMPILED=1)"
  summary
  exit 1
fi
pass "image builds with the compiled core required ($(( $(date +%s) - t0 )) s)"

# --- the image ------------------------------------------------------------------------------
version="$("${E[@]}" run --rm "${RUN_OPTS[@]}" "$IMAGE" -v 2>>"$work/run.log")"
echo "image: $version"
check "beanstalk-py -v in the image says core: mypyc" grep -q "(core: mypyc" <<<"$version"
check "no compiler, no sources in the final stage" \
  "${E[@]}" run --rm "${RUN_OPTS[@]}" --entrypoint /bin/sh "$IMAGE" \
  -c '! command -v gcc && ! command -v cc && [ ! -e /src ] && [ ! -e /usr/include/python3.11/Python.h ]' \
  2>>"$work/run.log"
size_bytes="$("${E[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
size_mb=$((size_bytes / 1000000))
check "image size ${size_mb} MB (limit ${MAX_IMAGE_MB} MB)" [ "$size_mb" -le "$MAX_IMAGE_MB" ]
config_user="$("${E[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")"
health="$("${E[@]}" image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")"
check "image declares USER 10001:10001 (got '$config_user')" [ "$config_user" = "10001:10001" ]
check "image keeps its HEALTHCHECK" grep -q beanstalk_py.healthcheck <<<"$health"

# --- a running container --------------------------------------------------------------------
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${E[@]}" volume create "$tag-data" >/dev/null

start() {  # start NAME: a server with its binlog on the volume, published on loopback only
  "${E[@]}" run -d --name "$1" "${RUN_OPTS[@]}" -p "127.0.0.1:$port:11300" \
    -v "$tag-data:/var/lib/beanstalkd" "$IMAGE" -l 0.0.0.0 -p 11300 -b /var/lib/beanstalkd -V \
    >/dev/null 2>>"$work/run.log" || { cat "$work/run.log" >&2; return 1; }
}

# The client side of the probes: plain sockets, no client library.
probe() {
  python3 - "$port" "$@" <<'EOF'
import socket, sys, time

port, action = int(sys.argv[1]), sys.argv[2]

def connect():
    deadline = time.monotonic() + 30
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"list-tubes\r\n")  # a published port may accept before the server does
            if s.recv(4096).startswith(b"OK "):
                return s
            s.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"no beanstalk server on 127.0.0.1:{port}")
        time.sleep(0.2)

def cmd(s, line, body=None):
    s.sendall(line + b"\r\n" + (body + b"\r\n" if body is not None else b""))
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection closed after {line!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n")
    if head.split()[0] in (b"RESERVED", b"FOUND", b"OK"):
        size = int(head.split()[-1])
        while len(rest) < size + 2:
            rest += s.recv(4096)
        return head, rest[:size]
    return head, None

def http(path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as h:
        h.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := h.recv(65536):
            data += chunk
    status = data.split(b"\r\n", 1)[0]
    return status, data.partition(b"\r\n\r\n")[2]

def expect(cond, what):
    if not cond:
        sys.exit(what)

s = connect()
if action == "ops":
    head, _ = cmd(s, b"use probe")
    expect(head == b"USING probe", head)
    head, _ = cmd(s, b"put 0 0 60 5", b"hello")
    expect(head.startswith(b"INSERTED "), head)
    jid = head.split()[1]
    cmd(s, b"watch probe")
    head, body = cmd(s, b"reserve-with-timeout 5")
    expect(head == b"RESERVED " + jid + b" 5" and body == b"hello", (head, body))
    head, _ = cmd(s, b"delete " + jid)
    expect(head == b"DELETED", head)
    for path in ("/healthz", "/readyz"):
        status, _ = http(path)
        expect(status.split()[1] == b"200", (path, status))
    status, body = http("/metrics")
    expect(status.split()[1] == b"200", ("/metrics", status))
    info = [l for l in body.decode().splitlines() if l.startswith("beanstalkd_build_info{")]
    expect(info and 'core="mypyc"' in info[0], f"build_info: {info}")
    expect(b"beanstalkd_cmd_put_total" in body or b"beanstalkd_" in body, "no metrics")
elif action == "put":
    cmd(s, b"use persist")
    head, _ = cmd(s, b"put 0 0 60 " + str(len(sys.argv[3])).encode(), sys.argv[3].encode())
    expect(head.startswith(b"INSERTED "), head)
    print(head.split()[1].decode())
elif action == "has":
    jid, body = sys.argv[3], sys.argv[4].encode()
    head, got = cmd(s, b"peek " + jid.encode())
    expect(head.startswith(b"FOUND ") and got == body, f"job {jid}: {head!r} {got!r}")
s.close()
EOF
}

wait_healthy() {  # the image's own HEALTHCHECK command, run by the engine
  local i
  for i in $(seq 1 30); do
    if [ "$ENGINE_NAME" = podman ]; then
      "${E[@]}" healthcheck run "$1" >/dev/null 2>&1 && return 0
    else
      [ "$(docker inspect --format '{{.State.Health.Status}}' "$1")" = healthy ] && return 0
    fi
    sleep 1
  done
  return 1
}

if ! start "$tag-a"; then
  fail "container starts"
else
  check "server answers put/reserve/delete, /healthz, /readyz, /metrics (core=\"mypyc\")" probe ops
  check "HEALTHCHECK command succeeds" wait_healthy "$tag-a"
  uid="$("${E[@]}" exec "$tag-a" sh -c 'grep ^Uid: /proc/1/status' | awk '{print $2}')"
  check "server process runs as uid 10001 (got '$uid')" [ "$uid" = 10001 ]
  log_a="$("${E[@]}" logs "$tag-a" 2>&1)"
  check "-V startup log says core: mypyc" grep -q "(core: mypyc)" <<<"$log_a"
  job1="$(probe put before-stop)"
  t0=$(date +%s.%N)
  "${E[@]}" stop -t 20 "$tag-a" >/dev/null 2>>"$work/run.log"
  elapsed="$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")"
  code="$("${E[@]}" inspect --format '{{.State.ExitCode}}' "$tag-a")"
  check "SIGTERM (stop): exit code 0 (got $code) within ${STOP_SECONDS} s (took ${elapsed} s)" \
    python3 -c "import sys; sys.exit(not ('$code' == '0' and $elapsed < $STOP_SECONDS))"
fi

if start "$tag-b"; then
  check "job put before 'stop' is there after a restart on the same volume" \
    probe has "${job1:-0}" before-stop
  job2="$(probe put before-kill)"
  "${E[@]}" kill -s KILL "$tag-b" >/dev/null 2>>"$work/run.log"
  "${E[@]}" wait "$tag-b" >/dev/null 2>&1
  if start "$tag-c"; then
    check "job put before 'kill' (SIGKILL) is there after a restart on the same volume" \
      probe has "${job2:-0}" before-kill
    check "first job still there after the second restart" probe has "${job1:-0}" before-stop
    "${E[@]}" kill -s TERM "$tag-c" >/dev/null 2>>"$work/run.log"
    code="$("${E[@]}" wait "$tag-c" 2>/dev/null | tail -n1)"
    check "kill -s TERM: exit code 0 (got '$code')" [ "$code" = 0 ]
  else
    fail "container starts again after kill"
  fi
else
  fail "container starts again after stop"
fi

# --- compose --------------------------------------------------------------------------------
# docker/compose.yaml's beanstalk-py service, built and started by the compose tool, restarted
# with "down" (volume kept) and "up". Its prometheus service needs prom/prometheus from a
# registry, which may not be reachable, so it is not started here.
compose_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
project="bsp-compose-$$"
if [ "$ENGINE_NAME" = docker ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(); fi
else
  if command -v podman-compose >/dev/null 2>&1; then
    pc=podman-compose
  else
    # Not packaged for this Debian release: from PyPI, pinned, in a venv kept in the cache.
    pcdir="$work/podman-compose"
    if mkdir -p "$CACHE" 2>/dev/null && [ -w "$CACHE" ]; then pcdir="$CACHE/podman-compose-1.6.0"; fi
    if [ ! -x "$pcdir/bin/podman-compose" ]; then
      python3 -m venv "$pcdir" && "$pcdir/bin/pip" install -q podman-compose==1.6.0 >"$work/pc.log" 2>&1 \
        || { tail -n 5 "$work/pc.log" >&2; rm -rf "$pcdir"; }
    fi
    pc="$pcdir/bin/podman-compose"
  fi
  if [ -x "$pc" ] || command -v "$pc" >/dev/null 2>&1; then
    COMPOSE=("$pc" --podman-args="${E[*]:1}" --podman-run-args="${RUN_OPTS[*]}"
             --podman-build-args="${BUILD_OPTS[*]} ${BUILD_ARGS[*]}")
  else
    COMPOSE=()
  fi
fi
if [ "${#COMPOSE[@]}" -eq 0 ]; then
  fail "compose: no compose tool (docker compose, podman-compose)"
else
  compose() {
    BEANSTALK_PY_PORT="$compose_port" "${COMPOSE[@]}" -p "$project" -f docker/compose.yaml "$@" \
      >>"$work/compose.log" 2>&1
  }
  port="$compose_port"  # probe() talks to this port now
  compose_up=1
  if compose build beanstalk-py && compose up -d beanstalk-py; then
    pass "compose: build and up (beanstalk-py service, port 127.0.0.1:$compose_port)"
    check "compose: server answers put/reserve/delete, HTTP endpoints" probe ops
    job3="$(probe put before-down)"
    compose down
    if compose up -d beanstalk-py; then
      check "compose: job put before 'down' is there after 'up' (named volume)" \
        probe has "${job3:-0}" before-down
    else
      fail "compose: up again after down"
    fi
  else
    tail -n 30 "$work/compose.log" >&2
    fail "compose: build and up"
  fi
  compose down -v || true
fi

summary
[ "$failures" -eq 0 ]
