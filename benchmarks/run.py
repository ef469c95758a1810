"""beanstalk-py benchmark runner: the same scenarios against one or more servers, side by side.

    python benchmarks/run.py                        # beanstalk-py (+ beanstalkd if on PATH)
    python benchmarks/run.py --quick --scenario put1
    python benchmarks/run.py --target 'beanstalkd -l 127.0.0.1 -p {port} {binlog}' \\
        --target 'python -m beanstalk_py -l 127.0.0.1 -p {port} {binlog}' --rounds 5
    python benchmarks/run.py --target beanstalkd --target nulls --target beanstalk-py \\
        --scenario put50,cycle,pipeline        # with the floor: the null servers (nullsrv.py)

Every run gets a fresh server process (and a fresh binlog directory for binlog scenarios); the
targets alternate round by round (A B A B ...). Placeholders in a target: {port} (a free loopback
port), {binlog} (the scenario's binlog flags, "" or "-b DIR ..."), {dir} (a fresh scratch dir).
A target without {binlog} skips the binlog scenarios. The command must exec the server itself
(its pid is used for CPU and VmRSS). The reference is the target named "beanstalkd"; ratios are
target / reference. See README.md for the scenarios and the CPU accounting.

Shortcut targets (a --target that is just a name): beanstalkd, beanstalk-py (this interpreter,
`-m beanstalk_py`), null-protocol, null-buffered, null-reader (nullsrv.py: asyncio.Protocol,
asyncio.BufferedProtocol, loop.add_reader on uvloop; the floor for a Python server here), and
nulls (all three null servers).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import loadgen  # noqa: E402

# name -> (driver scenario, driver args, binlog flags or None)
TIMED: dict[str, tuple[str, dict[str, int], str | None]] = {
    "put1": ("put", {"conns": 1, "depth": 1}, None),
    "put50": ("put", {"conns": 50, "depth": 1}, None),
    "cycle": ("cycle", {"conns": 10, "consumers": 10, "cap": 100}, None),
    "pipeline": ("pipeline", {"conns": 4, "depth": 64}, None),
    "put50-binlog": ("put", {"conns": 50, "depth": 1}, "-b {dir}"),
    "put50-f0": ("put", {"conns": 50, "depth": 1}, "-b {dir} -f 0"),
    "put50-F": ("put", {"conns": 50, "depth": 1}, "-b {dir} -F"),
}
HEAVY = ("mem", "startup")
ALL = (*TIMED, *HEAVY)
START_TIMEOUT = 15.0
PIN: dict[str, tuple[set[int] | None, set[int] | None]] = {
    "none": (None, None),  # (server CPUs, driver CPUs)
    "split": ({0}, {1}),
    "same": ({0}, {0}),
}
PIN_MODE = "none"


def _pinner(which: int) -> Any:
    cpus = PIN[PIN_MODE][which]
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


@dataclass
class Target:
    name: str
    template: str
    null: bool = False  # a null server (nullsrv.py): timed scenarios without binlog only


class Interrupted(Exception):
    pass


def _on_term(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


# ----------------------------------------------------------------------------- driver


class Driver:
    """bqdrive (C, built on demand) or loadgen.py (pure Python); both return the same dict."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind, self.exe = "py", ""
        if kind in ("auto", "c"):
            exe = self._build(workdir)
            if exe:
                self.kind, self.exe = "c", exe
            elif kind == "c":
                raise SystemExit("run.py: cannot build bqdrive.c (need cc)")

    @staticmethod
    def _build(workdir: Path) -> str:
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            return ""
        src = HERE / "bqdrive.c"
        tag = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
        cache = Path(tempfile.gettempdir()) / f"beanstalk-py-bqdrive-{os.getuid()}-{tag}"
        if cache.exists():
            return str(cache)
        tmp = workdir / "bqdrive"
        r = subprocess.run(
            [cc, "-O2", "-Wall", "-o", str(tmp), str(src)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode:
            print(f"run.py: cc failed, using loadgen.py:\n{r.stderr}", file=sys.stderr)
            return ""
        with contextlib.suppress(OSError):
            shutil.copy2(tmp, cache)
            return str(cache)
        return str(tmp)

    def run(self, spec: loadgen.Spec) -> dict[str, Any]:
        if self.kind == "py":
            return loadgen.run_load(spec)
        args = [
            self.exe,
            spec.scenario,
            "-H",
            spec.host,
            "-p",
            str(spec.port),
            "-c",
            str(spec.conns),
            "-C",
            str(spec.consumers),
            "-k",
            str(spec.depth),
            "-b",
            str(spec.body),
            "-t",
            spec.tube,
            "-w",
            str(spec.warmup),
            "-d",
            str(spec.duration),
            "-n",
            str(spec.jobs),
            "-L",
            str(spec.cap),
            "-m",
            str(spec.max_time),
            "-s",
            str(spec.server_pid),
        ]
        limit = (
            spec.warmup + spec.duration + 30
            if spec.scenario in ("put", "pipeline", "cycle")
            else spec.max_time + 30
        )
        try:
            r = subprocess.run(
                args, capture_output=True, text=True, timeout=limit, preexec_fn=_pinner(1)
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "fatal": "bqdrive timed out"}
        try:
            out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"ok": False, "fatal": f"bqdrive rc={r.returncode}: {r.stderr.strip()[:300]}"}
        return out


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_fill(driver: Any, srv: Any, jobs: int, max_time: float) -> Any:
    """Put ``jobs`` jobs into ``srv`` over 4 connections x 64 in flight."""
    return driver.run(
        loadgen.Spec(
            "fill",
            port=srv.port,
            conns=4,
            depth=64,
            jobs=jobs,
            server_pid=srv.pid,
            max_time=max_time,
        )
    )


def server_env(cmd: str) -> dict[str, str]:
    """The servers' environment. For `python -m beanstalk_py` targets, when the package is not
    installed, the checkout this script lives in goes on PYTHONPATH so the working tree runs
    from any directory. An installed package (`pip install .`, with its compiled core) is
    left alone, as is any other command (e.g. an installed `beanstalk-py` script)."""
    env = dict(os.environ)
    root = HERE.parent
    if "-m beanstalk_py" not in cmd:
        return env
    probe = subprocess.run(
        [shlex.split(cmd)[0], "-c", "import beanstalk_py"],
        capture_output=True,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    if probe.returncode != 0 and (root / "beanstalk_py" / "__init__.py").exists():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """One fresh server process from a template; always stopped by stop() (pid only)."""

    def __init__(
        self, target: Target, binlog: str | None, scratch: Path, log: Path, bdir: Path | None = None
    ) -> None:
        self.port = free_port()
        self.dir = bdir or Path(tempfile.mkdtemp(dir=scratch, prefix="srv."))
        flags = (binlog or "").replace("{dir}", str(self.dir))
        cmd = target.template.replace("{binlog}", flags).replace("{port}", str(self.port))
        self.cmd = cmd.replace("{dir}", str(self.dir))
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_exec = 0.0

    def start(self, wait: bool = True) -> None:
        with open(self.log, "ab") as lf:
            lf.write(f"# {time.strftime('%H:%M:%S')} {self.cmd}\n".encode())
            lf.flush()
            self.t_exec = time.monotonic()
            self.proc = subprocess.Popen(
                shlex.split(self.cmd),
                stdout=lf,
                stderr=lf,
                stdin=subprocess.DEVNULL,
                preexec_fn=_pinner(0),
                env=server_env(self.cmd),
                # not the checkout: `python -m` would import its pure-Python source first
                cwd=tempfile.gettempdir(),
            )
        if wait:
            self.wait_listening(START_TIMEOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited rc={self.proc.returncode}: {self.cmd}: {self.log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"server did not listen within {timeout}s: {self.cmd}")

    def log_tail(self) -> str:
        try:
            return self.log.read_bytes()[-400:].decode(errors="replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


# ----------------------------------------------------------------------------- scenarios


def run_timed(
    driver: Driver, target: Target, name: str, a: argparse.Namespace, scratch: Path
) -> dict[str, Any]:
    dscen, kw, binlog = TIMED[name]
    srv = Server(target, binlog, scratch, scratch / f"{target.name}.log")
    try:
        srv.start()
        spec = loadgen.Spec(
            dscen,
            port=srv.port,
            warmup=a.warmup,
            duration=a.duration,
            server_pid=srv.pid,
            tube="bench",
            **kw,
        )
        res = driver.run(spec)
        if srv.proc is not None and srv.proc.poll() is not None:
            res["ok"] = False
            res["fatal"] = f"server died during the run (rc={srv.proc.returncode}); " + str(
                res.get("fatal", "")
            )
        res["rss_kib"] = rss_kib(srv.pid)
        res["server_cmd"] = srv.cmd
        return res
    finally:
        srv.stop()
        shutil.rmtree(srv.dir, ignore_errors=True)


def run_mem(driver: Driver, target: Target, a: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    srv = Server(target, None, scratch, scratch / f"{target.name}.log")
    try:
        srv.start()
        time.sleep(0.2)
        r0 = rss_kib(srv.pid)
        fill = run_fill(driver, srv, a.mem_jobs, a.heavy_max)
        r1, hwm = rss_kib(srv.pid), rss_kib(srv.pid, "VmHWM")
        drain = driver.run(
            loadgen.Spec(
                "drain", port=srv.port, conns=4, depth=16, server_pid=srv.pid, max_time=a.heavy_max
            )
        )
        time.sleep(0.2)
        r2 = rss_kib(srv.pid)
        jobs = max(int(fill.get("jobs", 0)), 1)
        ok = (
            bool(fill.get("ok")) and bool(drain.get("ok")) and drain.get("jobs") == fill.get("jobs")
        )
        return {
            "ok": ok,
            "fatal": fill.get("fatal")
            or drain.get("fatal")
            or ("" if ok else f"drained {drain.get('jobs')} of {fill.get('jobs')}"),
            "jobs": fill.get("jobs"),
            "rss0_kib": r0,
            "rss_fill_kib": r1,
            "hwm_kib": hwm,
            "rss_drain_kib": r2,
            "bytes_per_job": round((r1 - r0) * 1024 / jobs, 1),
            "fill": fill,
            "drain": drain,
            "server_cmd": srv.cmd,
        }
    finally:
        srv.stop()
        shutil.rmtree(srv.dir, ignore_errors=True)


def first_reserve(port: int, deadline: float, proc: subprocess.Popen[bytes]) -> tuple[float, int]:
    """Poll until `reserve-with-timeout 0` returns RESERVED; returns (monotonic time, attempts)."""
    attempts = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited rc={proc.returncode} during start-up")
        attempts += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                s.sendall(b"watch bench\r\nreserve-with-timeout 0\r\n")
                buf = b""
                while buf.count(b"\r\n") < 2:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                if b"\r\nRESERVED " in buf:
                    return time.monotonic(), attempts
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("no RESERVED reply before the deadline")


def run_startup(
    driver: Driver, target: Target, a: argparse.Namespace, scratch: Path
) -> dict[str, Any]:
    bdir = Path(tempfile.mkdtemp(dir=scratch, prefix="binlog."))
    log = scratch / f"{target.name}.log"
    srv = Server(target, "-b {dir}", scratch, log, bdir)
    try:
        srv.start()
        fill = run_fill(driver, srv, a.startup_jobs, a.heavy_max)
        srv.stop()
        du = sum(f.stat().st_size for f in bdir.iterdir() if f.is_file())
        srv2 = Server(target, "-b {dir}", scratch, log, bdir)
        try:
            srv2.start(wait=False)
            t1, attempts = first_reserve(srv2.port, srv2.t_exec + a.heavy_max, srv2.proc)  # type: ignore[arg-type]
            rss = rss_kib(srv2.pid)
        finally:
            srv2.stop()
        return {
            "ok": bool(fill.get("ok")),
            "fatal": fill.get("fatal", ""),
            "jobs": fill.get("jobs"),
            "startup_s": round(t1 - srv2.t_exec, 3),
            "attempts": attempts,
            "binlog_bytes": du,
            "rss_after_start_kib": rss,
            "fill": fill,
            "server_cmd": srv2.cmd,
        }
    finally:
        srv.stop()
        shutil.rmtree(bdir, ignore_errors=True)


# ----------------------------------------------------------------------------- report


def figures(scen: str, r: dict[str, Any]) -> dict[str, float | None]:
    """The numbers a run contributes to the table (None = missing)."""
    if not r.get("ok"):
        return {}
    if scen == "mem":
        return {
            "bytes/job": r["bytes_per_job"],
            "RSS after fill MiB": r["rss_fill_kib"] / 1024,
            "RSS after drain MiB": r["rss_drain_kib"] / 1024,
            "fill jobs/s": r["fill"].get("jobs_per_s"),
            "drain jobs/s": r["drain"].get("jobs_per_s"),
        }
    if scen == "startup":
        return {
            "start-up s": r["startup_s"],
            "RSS after start MiB": r["rss_after_start_kib"] / 1024,
        }
    cpu = r.get("cpu", {})
    lat = r.get("e2e_us") if scen == "cycle" else r.get("lat_us")
    lat = lat or {}
    out: dict[str, float | None] = {}
    if scen == "cycle":
        out["jobs/s"] = r.get("jobs_per_s")
    else:
        out["ops/s"] = r.get("ops_per_s")
    pre = "e2e " if scen == "cycle" else ""
    for p in ("p50", "p90", "p99", "p999"):
        out[f"{pre}{p} us"] = lat.get(p)
    out["server CPU %"] = cpu.get("server")
    out["driver CPU %"] = cpu.get("driver")
    if cpu.get("server") is not None and r.get("ops"):
        out["server CPU us/op"] = cpu["server"] / 100 * r["duration_s"] / r["ops"] * 1e6
    return out


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def summarize(
    runs: list[dict[str, Any]], targets: list[Target], ref: str | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for scen in ALL:
        mine = [r for r in runs if r["scenario_name"] == scen]
        if not mine:
            continue
        keys: list[str] = []
        for r in mine:
            for k in figures(scen, r["result"]):
                if k not in keys:
                    keys.append(k)
        for k in keys:
            row: dict[str, Any] = {
                "scenario": scen,
                "figure": k,
                "median": {},
                "n": {},
                "failed": {},
            }
            for t in targets:
                vals = [figures(scen, r["result"]).get(k) for r in mine if r["target"] == t.name]
                good = [float(v) for v in vals if v is not None]
                row["median"][t.name] = statistics.median(good) if good else None
                row["n"][t.name] = len(good)
                row["failed"][t.name] = sum(
                    1 for r in mine if r["target"] == t.name and not r["result"].get("ok")
                )
            if ref:
                rv = row["median"].get(ref)
                row["ratio"] = {
                    t.name: (
                        row["median"][t.name] / rv
                        if rv and row["median"][t.name] is not None
                        else None
                    )
                    for t in targets
                    if t.name != ref
                }
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], targets: list[Target], ref: str | None) -> None:
    others = [t.name for t in targets if t.name != ref]
    head = ["scenario", "figure", *[t.name for t in targets]]
    head += [f"{o}/{ref}" for o in others] if ref else []
    lines = [head]
    for r in rows:
        line = [r["scenario"], r["figure"], *[fmt(r["median"][t.name]) for t in targets]]
        if ref:
            line += [
                f"{r['ratio'][o]:.2f}" if r["ratio"].get(o) is not None else "-" for o in others
            ]
        lines.append(line)
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w[j]) if j < 2 else c.rjust(w[j]) for j, c in enumerate(line)))
        if i == 0:
            print("  ".join("-" * x for x in w))


# ----------------------------------------------------------------------------- main


NULL_IO = {"null-protocol": "protocol", "null-buffered": "buffered", "null-reader": "reader"}


def shortcut_targets(word: str) -> list[Target] | None:
    """The targets a shortcut name stands for (see the module docstring); None: not one."""
    py = shlex.quote(sys.executable)
    if word in NULL_IO:
        nullsrv = shlex.quote(str(HERE / "nullsrv.py"))
        cmd = f"{py} {nullsrv} --io {NULL_IO[word]} -l 127.0.0.1 -p {{port}}"
        return [Target(word, cmd, null=True)]
    if word == "nulls":
        return [t for w in NULL_IO for t in shortcut_targets(w) or []]
    if word == "beanstalk-py":
        return [Target(word, f"{py} -m beanstalk_py -l 127.0.0.1 -p {{port}} {{binlog}}")]
    if word == "beanstalkd":
        bd = shutil.which("beanstalkd")
        if not bd:
            raise SystemExit("run.py: --target beanstalkd: no beanstalkd on PATH")
        return [Target(word, f"{bd} -l 127.0.0.1 -p {{port}} {{binlog}}")]
    return None


def default_targets() -> list[Target]:
    ts = [
        Target(
            "beanstalk-py",
            f"{shlex.quote(sys.executable)} -m beanstalk_py -l 127.0.0.1 -p {{port}} {{binlog}}",
        )
    ]
    bd = shutil.which("beanstalkd")
    if bd:
        ts.append(Target("beanstalkd", f"{bd} -l 127.0.0.1 -p {{port}} {{binlog}}"))
    return ts


def name_of(template: str, i: int, taken: set[str]) -> str:
    words = shlex.split(template)
    base = f"target{i}"
    if words and os.path.basename(words[0]) == "beanstalkd":
        base = "beanstalkd"
    elif "beanstalk_py" in template or "beanstalk-py" in template:
        base = "beanstalk-py"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(ALL),
    )
    ap.add_argument(
        "--target",
        action="append",
        default=[],
        help="server command template, or a shortcut: beanstalkd, beanstalk-py, null-protocol,"
        " null-buffered, null-reader, nulls",
    )
    ap.add_argument("--name", action="append", default=[], help="label per --target, in order")
    ap.add_argument(
        "--scenario",
        action="append",
        default=[],
        help="scenario(s), repeatable or comma list (default: all)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds of timed scenarios")
    ap.add_argument("--heavy-rounds", type=int, default=1, help="rounds of mem and startup")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before")
    ap.add_argument("--mem-jobs", type=int, default=1_000_000)
    ap.add_argument("--startup-jobs", type=int, default=1_000_000)
    ap.add_argument("--heavy-max", type=float, default=300.0, help="limit per fill/drain/start")
    ap.add_argument("--max-total", type=float, default=1800.0, help="skip runs after this (s)")
    ap.add_argument(
        "--pin",
        choices=tuple(PIN),
        default="none",
        help="CPU pinning: split = server on CPU 0, C driver on CPU 1; same = both on CPU 0",
    )
    ap.add_argument("--driver", choices=("auto", "c", "py"), default="auto")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 round, 1 s, 20k jobs")
    ap.add_argument("--out", help="JSON result file (default benchmarks/results/bench-*.json)")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.heavy_rounds, a.duration, a.warmup = 1, 1, 1.0, 0.2
        a.mem_jobs = a.startup_jobs = 20_000
    scen = [s for x in a.scenario for s in x.split(",") if s] or list(ALL)
    bad = [s for s in scen if s not in ALL]
    if bad:
        ap.error(f"unknown scenario(s) {bad}; choose from {', '.join(ALL)}")
    a.scenarios = [s for s in ALL if s in scen]
    if not (1 <= a.rounds <= 50 and 0 <= a.heavy_rounds <= 10):
        ap.error("--rounds must be 1..50 and --heavy-rounds 0..10")
    return a


def main(argv: list[str] | None = None) -> int:
    global PIN_MODE
    a = parse_args(argv)
    PIN_MODE = a.pin
    if a.target:
        taken: set[str] = set()
        targets = []
        for i, t in enumerate(a.target):
            short = shortcut_targets(t.strip())
            if short is not None:
                for st in short:
                    if st.name in taken:
                        raise SystemExit(f"run.py: target {st.name} given twice")
                    taken.add(st.name)
                    targets.append(st)
                continue
            if "{port}" not in t:
                raise SystemExit(f"run.py: --target must contain {{port}} or be a shortcut: {t}")
            n = a.name[i] if i < len(a.name) else name_of(t, i + 1, taken)
            taken.add(n)
            targets.append(Target(n, t))
    else:
        targets = default_targets()
    ref = "beanstalkd" if any(t.name == "beanstalkd" for t in targets) else None
    old = {s: signal.signal(s, _on_term) for s in (signal.SIGTERM, signal.SIGHUP)}
    scratch = Path(tempfile.mkdtemp(prefix="beanstalk-py-bench."))
    t_start = time.monotonic()
    runs: list[dict[str, Any]] = []
    skipped = 0
    rc = 0
    try:
        driver = Driver(a.driver, scratch)
        print(
            f"run.py: driver {driver.kind} ({driver.exe or 'loadgen.py'}), targets: "
            + ", ".join(f"{t.name}={t.template!r}" for t in targets),
            file=sys.stderr,
        )
        plan: list[tuple[str, int, Target]] = []
        for scen in a.scenarios:
            rounds = a.heavy_rounds if scen in HEAVY else a.rounds
            binlog = scen == "startup" or (scen in TIMED and TIMED[scen][2] is not None)
            for rnd in range(rounds):
                for t in targets:
                    if binlog and "{binlog}" not in t.template:
                        continue
                    if t.null and scen in HEAVY:
                        continue  # it stores nothing: no memory or start-up figure
                    plan.append((scen, rnd + 1, t))
        for scen, rnd, t in plan:
            if time.monotonic() - t_start > a.max_total:
                skipped += 1
                continue
            t0 = time.monotonic()
            try:
                if scen == "mem":
                    res = run_mem(driver, t, a, scratch)
                elif scen == "startup":
                    res = run_startup(driver, t, a, scratch)
                else:
                    res = run_timed(driver, t, scen, a, scratch)
            except RuntimeError as e:
                res = {"ok": False, "fatal": str(e)}
            runs.append(
                {
                    "scenario_name": scen,
                    "round": rnd,
                    "target": t.name,
                    "elapsed_s": round(time.monotonic() - t0, 2),
                    "result": res,
                }
            )
            f = figures(scen, res)
            brief = ", ".join(f"{k}={fmt(v)}" for k, v in list(f.items())[:3]) or res.get("fatal")
            print(f"  {scen:<13} r{rnd} {t.name:<14} {brief}", file=sys.stderr)
            if not res.get("ok"):
                rc = 1
    except (KeyboardInterrupt, Interrupted):
        print("run.py: interrupted; servers stopped", file=sys.stderr)
        rc = 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        shutil.rmtree(scratch, ignore_errors=True)
    if skipped:
        print(f"run.py: --max-total reached, {skipped} run(s) skipped", file=sys.stderr)
    rows = summarize(runs, targets, ref)
    print_table(rows, targets, ref)
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "driver": getattr(locals().get("driver"), "kind", None),
        "targets": [t.__dict__ for t in targets],
        "reference": ref,
        "args": {k: v for k, v in vars(a).items()},
        "skipped_runs": skipped,
        "total_s": round(time.monotonic() - t_start, 1),
    }
    save_results(a, "bench", {"meta": meta, "summary": rows, "runs": runs})
    return rc


def save_results(a: Any, stem: str, doc: dict[str, Any]) -> Path:
    """Write a run's JSON to --out, else results/STEM-<time>.json (a temp file for --quick)."""
    if a.out:
        out = Path(a.out)
    elif a.quick:
        out = Path(tempfile.gettempdir()) / f"beanstalk-py-{stem}-quick.json"
    else:
        out = HERE / "results" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{Path(sys.argv[0]).name}: results in {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    sys.exit(main())
