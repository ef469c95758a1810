"""Cluster benchmark: a 3-node beanstalk-py cluster over 3 etcd members vs beanstalkd -b -f 0.

    python benchmarks/cluster.py                    # 3 rounds x 5 s, 5 failovers
    python benchmarks/cluster.py --quick            # smoke run, ~30-40 s
    python benchmarks/cluster.py --rounds 5 --failovers 10 --driver py

Everything runs on this machine, on 127.0.0.1: 3 etcd members (tests/support/etcd.py:
``--heartbeat-interval 100 --election-timeout 500``, data on /dev/shm) and 3 nodes
(tests/support/nodes.py: ``python -m beanstalk_py ... --cluster etcd://.../PREFIX --node-id nI
--lease-ttl 1``, binlogs in a temporary directory on the same file system as beanstalkd's).

Put figures (put50: 50 connections, one put of 100 bytes in flight each), alternating round by
round, each run on fresh servers (a fresh etcd cluster and fresh nodes for the cluster runs):

* ``cluster-leader``: the 50 connections go to the leader;
* ``beanstalkd-f0``: ``beanstalkd -b DIR -f 0`` (fsync before every reply), the durable
  single-node reference; ratios are against it;
* ``cluster-relay``: the 50 connections go to a follower, which relays them to the leader;
* ``cluster-leader-baseline`` (``--baseline DIR``): as cluster-leader, the nodes run from
  another build (e.g. main's), to compare two builds side by side in one run.

For each run: ops/s, put acknowledgement latency p50/p99 (the driver's ``lat_us``: write of a
put until its reply), server CPU per op from /proc/PID/stat (utime+stime) over the driver's
measured window, for the leader, the follower(s), the etcd members together, and beanstalkd;
and, for the cluster runs, the replication lag sampled from the nodes' own /metrics
(``beanstalkd_cluster_lag_batches`` of the followers, and the leader's ``last_batch`` minus
each follower's; the leader is sampled first, so the second figure can overstate by the batches
committed during one sampling round). Sampled every ``--lag-interval`` s (default 1; it was
0.25 s before 2 December 2026, which cost the nodes ~5 % more CPU per put in /metrics scrapes).

Failover: on one fresh cluster, ``--failovers`` times: one put connection per surviving node
(a put every 10 ms, reconnecting on any error), kill -9 of the leader, then (a) time until a
surviving node's /readyz says ``leader``, (b) time until the first put written after the kill
is acknowledged through a surviving node, (c) the same for both surviving nodes. The killed
node is restarted on its binlog before the next run.

Prints a table and writes JSON to benchmarks/results/cluster-*.json (--quick: to the temp dir).
Every process started here is stopped on exit, Ctrl-C or SIGTERM. Figures on a shared machine
are noisy: only compare figures of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

import loadgen  # noqa: E402
import run  # noqa: E402
from support.etcd import EtcdCluster  # noqa: E402
from support.nodes import Node, NodeCluster  # noqa: E402
from support.servers import PACKAGE_PATH_ENV, ours_process  # noqa: E402

TARGETS = (
    "cluster-leader",
    "beanstalkd-f0",
    "cluster-relay",
    "cluster-leader-etcd-disk",
    "cluster-leader-baseline",
)
REFERENCE = "beanstalkd-f0"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Interrupted(Exception):
    pass


def _on_term(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


# ----------------------------------------------------------------------------- measuring


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def core_kind() -> str:
    """The core ("mypyc" or "pure") of the beanstalk_py the nodes run."""
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from beanstalk_py.shell.build_info import core_kind as k; print(k())",
        ],
        capture_output=True,
        text=True,
        check=False,
        **ours_process(),
    )
    return r.stdout.strip() or f"unknown ({r.stderr.strip()[-200:]})"


def cluster_metrics(node: Node) -> dict[str, float]:
    """The node's own ``beanstalkd_cluster_*`` samples (unlabelled families), one GET."""
    status, body = node.http("/metrics", timeout=2.0)
    out: dict[str, float] = {}
    if status != 200:
        return out
    for line in body.splitlines():
        if line.startswith("beanstalkd_cluster_") and "{" not in line:
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name.removeprefix("beanstalkd_cluster_")] = float(value)
    return out


def summary(xs: list[float], digits: int = 3) -> dict[str, float | int] | None:
    if not xs:
        return None
    xs = sorted(xs)
    return {
        "n": len(xs),
        "min": round(xs[0], digits),
        "median": round(statistics.median(xs), digits),
        "max": round(xs[-1], digits),
    }


@dataclass
class Window:
    """CPU of groups of pids over the driver's measured window, and (cluster) the lag meanwhile.

    The window is taken from the driver's warm-up and duration, counted from when the driver
    is started; the driver opens its connections within milliseconds, so the two windows
    differ by that much."""

    groups: dict[str, list[int]]
    start_in: float
    length: float
    leader: Node | None = None
    followers: list[Node] = field(default_factory=list)
    interval: float = 1.0  # seconds between lag samples (each one scrapes every node's /metrics)
    cpu_s: dict[str, float] = field(default_factory=dict)
    window_s: float = 0.0
    lag_reported: list[float] = field(default_factory=list)
    lag_vs_leader: list[float] = field(default_factory=list)
    leader_start: dict[str, float] | None = None
    leader_end: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4))
    _thread: threading.Thread | None = None

    def _cpu(self) -> dict[str, float]:
        return {g: sum(cpu_seconds(p) for p in pids) for g, pids in self.groups.items()}

    def _run(self) -> None:
        if self._stop.wait(self.start_in):
            return
        t0, c0 = time.monotonic(), self._cpu()
        if self.leader is not None:
            self.leader_start = cluster_metrics(self.leader)
        end = t0 + self.length
        while time.monotonic() < end and not self._stop.is_set():
            if self.leader is not None:
                # All nodes at once, so the leader's and the followers' figures are close in time.
                lead, *fols = self._pool.map(cluster_metrics, [self.leader, *self.followers])
                for m in fols:
                    if "lag_batches" in m:
                        self.lag_reported.append(m["lag_batches"])
                    if "last_batch" in lead and "last_batch" in m:
                        self.lag_vs_leader.append(max(0.0, lead["last_batch"] - m["last_batch"]))
            self._stop.wait(min(self.interval, max(0.0, end - time.monotonic())))
        if self.leader is not None:
            self.leader_end = cluster_metrics(self.leader)
        t1, c1 = time.monotonic(), self._cpu()
        self.window_s = t1 - t0
        self.cpu_s = {g: c1[g] - c0[g] for g in c0}

    def __enter__(self) -> Window:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None
        if exc[0] is not None:
            self._stop.set()
        self._thread.join()
        self._pool.shutdown()

    def batches(self) -> tuple[float, float] | None:
        """(etcd appends, their total seconds) of the leader over the window."""
        a, b = self.leader_start, self.leader_end
        keys = ("etcd_appends_total", "etcd_append_seconds_total")
        if not a or not all(k in a and k in b for k in keys):
            return None
        return b[keys[0]] - a[keys[0]], b[keys[1]] - a[keys[1]]


# ----------------------------------------------------------------------------- cluster


class Fleet:
    """The etcd members and nodes started by this script; ``close()`` stops them all."""

    def __init__(self) -> None:
        self.etcd: EtcdCluster | None = None
        self.nodes: NodeCluster | None = None

    def start(self, etcd_dir: str | None = None) -> NodeCluster:
        self.etcd = EtcdCluster.start(base=etcd_dir or None)
        self.nodes = NodeCluster.start(self.etcd, f"bench-{uuid.uuid4().hex[:8]}")
        self.nodes.leader(timeout=30.0)
        self.nodes.followers_ready(timeout=30.0)
        return self.nodes

    def etcd_pids(self) -> list[int]:
        assert self.etcd is not None
        return [m.proc.pid for m in self.etcd.members if m.proc is not None]

    def close(self) -> None:
        if self.nodes is not None:
            with contextlib.suppress(Exception):
                self.nodes.close()
            shutil.rmtree(self.nodes.root, ignore_errors=True)
            self.nodes = None
        if self.etcd is not None:
            with contextlib.suppress(Exception):
                self.etcd.close()
            self.etcd = None


@contextlib.contextmanager
def fleet() -> Iterator[Fleet]:
    f = Fleet()
    try:
        yield f
    finally:
        f.close()


@contextlib.contextmanager
def nodes_from(pythonpath: str) -> Iterator[None]:
    """Nodes started meanwhile run from the build installed at ``pythonpath``."""
    old = os.environ.get(PACKAGE_PATH_ENV)
    os.environ[PACKAGE_PATH_ENV] = str(Path(pythonpath).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(PACKAGE_PATH_ENV, None)
        else:
            os.environ[PACKAGE_PATH_ENV] = old


def pid_of(node: Node) -> int:
    assert node.proc is not None
    return node.proc.pid


# ----------------------------------------------------------------------------- put50


def put50(
    driver: run.Driver, port: int, server_pid: int, groups: dict[str, list[int]], a: Any, **kw: Any
) -> dict[str, Any]:
    spec = loadgen.Spec(
        "put",
        port=port,
        conns=50,
        depth=1,
        body=100,
        warmup=a.warmup,
        duration=a.duration,
        server_pid=server_pid,
        tube="bench",
    )
    with Window(groups, a.warmup, a.duration, interval=a.lag_interval, **kw) as w:
        res = driver.run(spec)
    ops_s = res.get("ops_per_s") or 0
    res["cpu_window_s"] = round(w.window_s, 3)
    res["cpu_s"] = {g: round(v, 3) for g, v in w.cpu_s.items()}
    if ops_s and w.window_s:
        res["cpu_us_per_op"] = {
            g: round(v / w.window_s / ops_s * 1e6, 2) for g, v in w.cpu_s.items()
        }
    if kw.get("leader") is not None:
        res["lag_batches_reported"] = summary(w.lag_reported, 1)
        res["lag_batches_vs_leader"] = summary(w.lag_vs_leader, 1)
        appended = w.batches()
        if appended and appended[0] > 0:
            res["etcd_appends"] = appended[0]
            res["etcd_append_ms_mean"] = round(appended[1] / appended[0] * 1000, 3)
            res["puts_per_batch"] = round(ops_s * w.window_s / appended[0], 1)
    return res


def run_cluster_put(
    driver: run.Driver, via: str, a: Any, etcd_dir: str | None = None
) -> dict[str, Any]:
    with fleet() as f:
        nc = f.start(etcd_dir)
        leader = nc.leader()
        followers = [n for n in nc.nodes if n is not leader]
        entry = leader if via == "leader" else followers[0]
        groups = {
            "leader": [pid_of(leader)],
            "followers": [pid_of(n) for n in followers],
            "etcd": f.etcd_pids(),
        }
        res = put50(
            driver, entry.port, pid_of(leader), groups, a, leader=leader, followers=followers
        )
        if any(not n.running() for n in nc.nodes):
            res["ok"] = False
            res["fatal"] = "a node died during the run: " + nc.logs(600)
        # A leadership change during the run would make the figures a failover measurement.
        res["leader_at_end"] = leader.role() == "leader"
        res["entry"] = entry.name
        return res


def run_beanstalkd(driver: run.Driver, a: Any, scratch: Path) -> dict[str, Any]:
    bd = shutil.which("beanstalkd")
    if not bd:
        return {"ok": False, "fatal": "no beanstalkd on PATH (apt-get install beanstalkd)"}
    target = run.Target("beanstalkd", f"{bd} -l 127.0.0.1 -p {{port}} {{binlog}}")
    srv = run.Server(target, "-b {dir} -f 0", scratch, scratch / "beanstalkd.log")
    try:
        srv.start()
        res = put50(driver, srv.port, srv.pid, {"server": [srv.pid]}, a)
        res["server_cmd"] = srv.cmd
        return res
    finally:
        srv.stop()
        shutil.rmtree(srv.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- failover


class Putter(threading.Thread):
    """One connection to one node, a put every ``pause`` s; reconnects after any error.

    ``acks`` holds (write time, reply time) of every INSERTED reply."""

    def __init__(self, node: Node, pause: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.node, self.pause = node, pause
        self.acks: list[tuple[float, float]] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        body = b"x" * 100
        cmd = b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body)
        while not self.stop.is_set():
            try:
                with socket.create_connection(self.node.address, timeout=1.0) as s:
                    s.settimeout(3.0)
                    while not self.stop.is_set():
                        t0 = time.monotonic()
                        s.sendall(cmd)
                        buf = b""
                        while not buf.endswith(b"\r\n"):
                            chunk = s.recv(256)
                            if not chunk:
                                raise ConnectionError("closed")
                            buf += chunk
                        if not buf.startswith(b"INSERTED "):
                            raise ConnectionError(buf.decode(errors="replace").strip())
                        self.acks.append((t0, time.monotonic()))
                        self.stop.wait(self.pause)
            except OSError:
                self.errors += 1
                self.stop.wait(0.01)

    def first_ack_after(self, t: float) -> float | None:
        return next((r for w, r in self.acks if w > t), None)


def failovers(runs: int, settle: float) -> dict[str, Any]:
    took_leader: list[float] = []
    first_put: list[float] = []
    all_put: list[float] = []
    details: list[dict[str, Any]] = []
    with fleet() as f:
        nc = f.start()
        for i in range(runs):
            old = nc.leader(timeout=30.0)
            nc.followers_ready(timeout=30.0)
            survivors = [n for n in nc.nodes if n is not old]
            putters = [Putter(n) for n in survivors]
            for p in putters:
                p.start()
            time.sleep(settle)
            acked_before = sum(len(p.acks) for p in putters)
            killed = time.monotonic()
            nc.kill(old)
            new: Node | None = None
            deadline = killed + 30.0
            while new is None and time.monotonic() < deadline:
                new = next((n for n in survivors if n.role() == "leader"), None)
                if new is None:
                    time.sleep(0.005)
            t_leader = time.monotonic() - killed
            while time.monotonic() < deadline and any(
                p.first_ack_after(killed) is None for p in putters
            ):
                time.sleep(0.01)
            for p in putters:
                p.stop.set()
            for p in putters:
                p.join(10)
            acks = [p.first_ack_after(killed) for p in putters]
            got = [t - killed for t in acks if t is not None]
            row = {
                "run": i + 1,
                "killed": old.name,
                "new_leader": new.name if new else None,
                "leader_s": round(t_leader, 3) if new else None,
                "first_put_s": round(min(got), 3) if got else None,
                "all_nodes_put_s": round(max(got), 3) if len(got) == len(putters) else None,
                "acks_before_kill": acked_before,
                "client_errors": sum(p.errors for p in putters),
            }
            details.append(row)
            print(f"  failover     r{i + 1} {json.dumps(row)}", file=sys.stderr)
            if new is not None:
                took_leader.append(t_leader)
            if got:
                first_put.append(min(got))
            if len(got) == len(putters):
                all_put.append(max(got))
            nc.spawn(old)  # on its own binlog, as a restarted host
        nc.leader(timeout=30.0)
        nc.followers_ready(timeout=30.0)
    return {
        "runs": runs,
        "leader_s": summary(took_leader),
        "first_put_s": summary(first_put),
        "all_nodes_put_s": summary(all_put),
        "failed_runs": sum(1 for d in details if d["all_nodes_put_s"] is None),
        "details": details,
    }


# ----------------------------------------------------------------------------- report


def figures(r: dict[str, Any]) -> dict[str, float | None]:
    if not r.get("ok"):
        return {}
    lat = r.get("lat_us") or {}
    cpu = r.get("cpu_us_per_op") or {}
    out: dict[str, float | None] = {
        "ops/s": r.get("ops_per_s"),
        "ack p50 ms": lat["p50"] / 1000 if "p50" in lat else None,
        "ack p99 ms": lat["p99"] / 1000 if "p99" in lat else None,
    }
    if "server" in cpu:
        out["server CPU us/op"] = cpu["server"]
    else:
        out["server CPU us/op"] = cpu.get("leader")
        out["follower CPU us/op (each)"] = (
            cpu["followers"] / 2 if cpu.get("followers") is not None else None
        )
        out["etcd CPU us/op (3 members)"] = cpu.get("etcd")
        out["etcd append mean ms"] = r.get("etcd_append_ms_mean")
        out["puts per batch (approx.)"] = r.get("puts_per_batch")
        for key, label in (("lag_batches_reported", "lag"), ("lag_batches_vs_leader", "behind")):
            s = r.get(key)
            out[f"{label} median batches"] = s["median"] if s else None
            out[f"{label} max batches"] = s["max"] if s else None
    return out


def summarize(runs: list[dict[str, Any]], targets: list[str]) -> list[dict[str, Any]]:
    keys: list[str] = []
    for r in runs:
        for k in figures(r["result"]):
            if k not in keys:
                keys.append(k)
    rows = []
    for k in keys:
        med: dict[str, float | None] = {}
        for t in targets:
            vals = [figures(r["result"]).get(k) for r in runs if r["target"] == t]
            good = [float(v) for v in vals if v is not None]
            med[t] = statistics.median(good) if good else None
        ref = med.get(REFERENCE)
        ratio = {
            t: (med[t] / ref if ref and med[t] is not None else None)  # type: ignore[operator]
            for t in targets
            if t != REFERENCE
        }
        rows.append({"figure": k, "median": med, "ratio": ratio})
    return rows


def print_table(rows: list[dict[str, Any]], targets: list[str], fo: dict[str, Any] | None) -> None:
    others = [t for t in targets if t != REFERENCE]
    head = ["put50 (median of rounds)", *targets, *[f"{t}/{REFERENCE}" for t in others]]
    lines = [head]
    for r in rows:
        line = [r["figure"], *[run.fmt(r["median"][t]) for t in targets]]
        if r["figure"] in ("ops/s", "ack p50 ms", "ack p99 ms", "server CPU us/op"):
            line += [f"{r['ratio'][t]:.2f}" if r["ratio"][t] is not None else "-" for t in others]
        else:
            line += [""] * len(others)
        lines.append(line)
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w[j]) if j == 0 else c.rjust(w[j]) for j, c in enumerate(line)))
        if i == 0:
            print("  ".join("-" * x for x in w))
    if fo:
        print()
        print(f"failover after kill -9 of the leader ({fo['runs']} runs)  min / median / max s")
        for key, label in (
            ("leader_s", "a surviving node's /readyz says leader"),
            ("first_put_s", "first put acknowledged through a surviving node"),
            ("all_nodes_put_s", "puts acknowledged through both surviving nodes"),
        ):
            s = fo.get(key)
            vals = f"{s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f}" if s else "-"
            print(f"  {label:<50} {vals}")
        if fo.get("failed_runs"):
            print(f"  runs without both surviving nodes serving within 30 s: {fo['failed_runs']}")


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the three put50 runs")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before")
    ap.add_argument("--failovers", type=int, help="leader kills (default 5, --quick 1; 0: skip)")
    ap.add_argument("--settle", type=float, default=1.0, help="light load before each kill (s)")
    ap.add_argument(
        "--etcd-disk",
        action="store_true",
        help="also run cluster-leader-etcd-disk: etcd's data in the temp dir (beanstalkd's file"
        " system) instead of /dev/shm",
    )
    ap.add_argument("--no-relay", action="store_true", help="skip the cluster-relay runs")
    ap.add_argument(
        "--lag-interval",
        type=float,
        default=1.0,
        help="seconds between replication-lag samples during a run; each sample scrapes"
        " every node's /metrics, CPU the nodes spend for the benchmark (default 1)",
    )
    ap.add_argument(
        "--pythonpath",
        help="run the nodes from this installed build (e.g. pip install --no-deps --target DIR .,"
        " the mypyc-compiled core) instead of the checkout",
    )
    ap.add_argument(
        "--baseline",
        help="also run cluster-leader-baseline: the nodes from this other installed build"
        " (compare two builds in one run)",
    )
    ap.add_argument("--driver", choices=("auto", "c", "py"), default="auto")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s, 1 failover")
    ap.add_argument("--out", help="JSON result file (default benchmarks/results/cluster-*.json)")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.warmup, a.settle = 1, 1.0, 0.5, 0.5
    if a.failovers is None:
        a.failovers = 1 if a.quick else 5
    if not (1 <= a.rounds <= 50 and 0 <= a.failovers <= 100):
        ap.error("--rounds must be 1..50 and --failovers 0..100")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.pythonpath:
        os.environ[PACKAGE_PATH_ENV] = str(Path(a.pythonpath).resolve())
    core = core_kind()
    old = {s: signal.signal(s, _on_term) for s in (signal.SIGTERM, signal.SIGHUP)}
    scratch = Path(tempfile.mkdtemp(prefix="beanstalk-py-cluster-bench."))
    t_start = time.monotonic()
    runs: list[dict[str, Any]] = []
    fo: dict[str, Any] | None = None
    rc = 0
    targets = [
        t
        for t in TARGETS
        if not (a.no_relay and t == "cluster-relay")
        and not (not a.etcd_disk and t == "cluster-leader-etcd-disk")
        and not (not a.baseline and t == "cluster-leader-baseline")
    ]
    try:
        driver = run.Driver(a.driver, scratch)
        print(
            f"cluster.py: driver {driver.kind}, nodes' core {core}, CPU {cpu_model()}",
            file=sys.stderr,
        )
        for rnd in range(1, a.rounds + 1):
            for t in targets:
                t0 = time.monotonic()
                try:
                    if t == REFERENCE:
                        res = run_beanstalkd(driver, a, scratch)
                    elif t == "cluster-leader-etcd-disk":
                        res = run_cluster_put(driver, "leader", a, str(scratch))
                    elif t == "cluster-leader-baseline":
                        with nodes_from(a.baseline):
                            res = run_cluster_put(driver, "leader", a)
                    else:
                        res = run_cluster_put(driver, t.removeprefix("cluster-"), a)
                except (RuntimeError, AssertionError) as e:
                    res = {"ok": False, "fatal": str(e)[-2000:]}
                runs.append(
                    {
                        "target": t,
                        "round": rnd,
                        "elapsed_s": round(time.monotonic() - t0, 1),
                        "result": res,
                    }
                )
                f = figures(res)
                brief = ", ".join(f"{k}={run.fmt(v)}" for k, v in list(f.items())[:4])
                print(f"  put50        r{rnd} {t:<15} {brief or res.get('fatal')}", file=sys.stderr)
                if not res.get("ok"):
                    rc = 1
        if a.failovers:
            try:
                fo = failovers(a.failovers, a.settle)
                if fo["failed_runs"]:
                    rc = 1
            except (RuntimeError, AssertionError) as e:
                fo = {"runs": a.failovers, "fatal": str(e)[-2000:]}
                print(f"  failover: {fo['fatal']}", file=sys.stderr)
                rc = 1
    except (KeyboardInterrupt, Interrupted):
        print("cluster.py: interrupted; all processes stopped", file=sys.stderr)
        rc = 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        shutil.rmtree(scratch, ignore_errors=True)
    rows = summarize(runs, targets)
    print_table(rows, targets, fo if fo and "fatal" not in fo else None)
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "nodes_core": core,
        "nodes_pythonpath": os.environ.get(PACKAGE_PATH_ENV),
        "baseline_pythonpath": str(Path(a.baseline).resolve()) if a.baseline else None,
        "beanstalkd": subprocess.run(
            ["beanstalkd", "-v"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if shutil.which("beanstalkd")
        else None,
        "driver": getattr(locals().get("driver"), "kind", None),
        "args": vars(a),
        "total_s": round(time.monotonic() - t_start, 1),
    }
    run.save_results(a, "cluster", {"meta": meta, "summary": rows, "failover": fo, "runs": runs})
    return rc


if __name__ == "__main__":
    sys.exit(main())
