"""Profile one server under a steady load: CPU split, syscalls, perf and py-spy, per request.

    PYTHONPATH=/tmp/pf python benchmarks/profile_server.py --tool cpu,strace,perf,pyspy \\
        --target beanstalk-py --scenario put50
    python benchmarks/profile_server.py --tool cpu --target null-reader --target beanstalkd

A target is a run.py shortcut (beanstalkd, beanstalk-py, null-protocol, null-buffered,
null-reader) or a command template with {port}. For every target and tool: a fresh server, the
C driver (bqdrive, as run.py builds it; or bqload with --bqload PATH) in the background for
warm-up + duration, and the tool attached to the server's pid for the measured window only:

- cpu: user and system CPU of the server (/proc/PID/stat) per request over the window;
- strace: ``strace -c -f -p PID``; syscalls per request (strace slows the server a lot, so
  only the counts per request mean anything, not its throughput);
- perf: ``perf record -F 999 -g -p PID`` (cpu-clock; native frames only, Python 3.11 has no
  perf trampoline), then the top symbols and the split by shared object;
- pyspy: ``py-spy record --native -r 997 -f raw``, then the top frames by self time and the
  inclusive share of the functions named by ``--focus``.
Raw outputs go to --out (default: a temporary directory, printed). Requests per window come
from the driver's JSON (its window is the same [warm-up, warm-up + duration) by clock, so
the per-request figures are close, not exact). Loopback only; every server is stopped by pid.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402

SCEN = {
    "put50": ("put", 50, 1, 0),
    "put1": ("put", 1, 1, 0),
    "cycle": ("cycle", 10, 1, 10),
    "pipeline": ("pipeline", 4, 64, 0),
}
READS = ("read", "recvfrom", "recvmsg", "readv")
FOCUS = (
    "data_received",
    "buffer_updated",
    "on_readable",
    "feed",
    "_command",
    "_finish_put",
    "put",
    "deliver",
    "after_input",
    "flush",
    "take_output",
    "write",
    "sync_reading",
    "maybe_close",
    "_arm_timer",
    "next_deadline",
    "perf_counter",
    "observe",
    "Job",
    "_make_ready",
    "uv__io_poll",
    "uv__read",
    "uv__write",
    "epoll_wait",
    "_PyObject_Malloc",
    "gc_collect",
)


def ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def cpu_split(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / ticks(), int(fields[12]) / ticks()


def driver_cmd(a: argparse.Namespace, exe: str, port: int, pid: int) -> list[str]:
    scen, conns, depth, consumers = SCEN[a.scenario]
    common = ["-p", str(port), "-c", str(conns), "-w", str(a.warmup), "-d", str(a.duration)]
    common += ["-s", str(pid), "-t", "bench"]
    if a.bqload:
        extra = ["-k", str(depth)] if scen == "pipeline" else []
        extra += ["-C", str(consumers), "-L", "100"] if scen == "cycle" else []
        return [a.bqload, scen, "-h", "127.0.0.1", *common, *extra]
    extra = ["-k", str(depth), "-C", str(consumers), "-L", "100" if scen == "cycle" else "0"]
    return [exe, scen, "-H", "127.0.0.1", *common, *extra]


def collapse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            stacks.append((stack.split(";"), int(n)))
    return stacks


def short(frame: str) -> str:
    """py-spy frame 'name (file:line)' -> 'name (file)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({os.path.basename(where)})" if where else name


IDLE = ("epoll_pwait", "epoll_wait")
# User-space samples go to the first group (in this order) one of whose names occurs in one of
# their frames: the most specific work first, the frames that enclose it last.
GROUPS = (
    ("/metrics sampling (perf_counter, observe)", ("observe", "perf_counter", "LatencyHisto")),
    ("Job record (Job(), setup)", ("Job_setup", "CPyDef_job___Job", "Job.__init__")),
    ("clock.wall()", ("SystemClock___wall", "SystemClock.wall")),
    ("journal.put", ("Journal___put", "Journal.put")),
    ("ready queue (_make_ready, push_ready, Level.push)", ("_make_ready", "push_ready", "push")),
    ("Engine.put own (dict insert, counters, reply)", ("Engine___put", "Engine.put")),
    ("command dispatch + put line parse", ("_command", "cmd_put")),
    (
        "Session.feed framing (+ _finish_put, deliver)",
        ("Session___feed", "Session.feed", "_finish_put", "deliver"),
    ),
    (
        "flush: take_output + transport write (user)",
        ("take_output", "Connection___write", "UVStream_write", ".send"),
    ),
    (
        "after_input, flush, sync_reading, maybe_close, _arm_timer",
        ("after_input", "Server___flush", "sync_reading", "maybe_close", "_arm_timer"),
    ),
    ("null server parse (nullsrv.py)", ("Conn.parse",)),
    (
        "read callback own (data_received, feed, on_readable)",
        ("data_received", "buffer_updated", "on_readable", "feed"),
    ),
)
SYSCALLS = ("read", "write", "recv", "send", "recvfrom", "sendto", "readv", "writev")


def pyspy_report(path: Path, ops: int, cpu_s: float, top: int, user_s: float = 0.0) -> str:
    """py-spy samples wall-clock stacks: samples waiting in epoll (idle) are dropped, the rest
    is scaled to the server's CPU per request. A syscall leaf (write, read) still includes
    time the server was preempted in it on a busy machine, so it reads high."""
    if not path.exists():
        return "py-spy: no samples (not a Python process?)"
    stacks = [
        (frames, n) for frames, n in collapse(path) if short(frames[-1]).split(" (")[0] not in IDLE
    ]
    total = sum(n for _, n in stacks) or 1
    self_ct: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    focus: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    in_sys = 0
    for frames, n in stacks:
        leaf = short(frames[-1])
        self_ct[leaf] += n
        if leaf.split(" (")[0] in SYSCALLS:
            in_sys += n
        else:
            for gname, subs in GROUPS:
                if any(sub in f for f in frames for sub in subs):
                    groups[gname] += n
                    break
            else:
                groups["other (event loop, uvloop, interpreter)"] += n
        for f in {short(f) for f in frames}:
            incl[f] += n
        names = {f.partition(" (")[0].rsplit(".", 1)[-1] for f in frames}
        for want in FOCUS:
            if any(x == want or x.endswith("___" + want) or x.endswith("_" + want) for x in names):
                focus[want] += n
    us = cpu_s / ops * 1e6 if ops else 0.0

    def line(n: int, name: str) -> str:
        return f"  {100 * n / total:5.1f} %  {us * n / total:6.2f} us  {name}"

    out = [
        f"py-spy: {total} samples not idle in epoll; server CPU {us:.2f} us/request over the"
        f" window; {100 * in_sys / total:.1f} % of the samples are in a read/write syscall,"
        f" {100 * (total - in_sys) / total:.1f} % = {us * (total - in_sys) / total:.2f} us"
        " in user space"
    ]
    out.append(f"\ntop {top} by self time (% of non-idle samples, scaled to us/request):")
    out.extend(line(n, f) for f, n in self_ct.most_common(top))
    out.append(f"\ntop {top} inclusive:")
    out.extend(line(n, f) for f, n in incl.most_common(top))
    out.append("\nfocus (inclusive, any frame whose function name matches):")
    out.extend(line(focus.get(want, 0), want) for want in FOCUS)
    user = total - in_sys or 1
    uus = user_s / ops * 1e6 if ops else 0.0
    out.append(f"\nuser-space samples by group, scaled to the user CPU ({uus:.2f} us/request):")
    out.extend(
        f"  {100 * n / user:5.1f} %  {uus * n / user:6.2f} us  {g}" for g, n in groups.most_common()
    )
    return "\n".join(out)


def perf_report(data: Path, top: int) -> str:
    out = []
    for sort in ("dso", "dso,sym"):
        r = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", sort],
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [x for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")]
        lines = [x for x in lines if "%" in x.split()[0]] if lines else []
        out.append(f"perf report --sort {sort} (top {top}):")
        out.extend("  " + x.strip() for x in lines[:top])
    return "\n".join(out)


def profile_one(
    a: argparse.Namespace, target: run.Target, tool: str, drv: str, outdir: Path
) -> str:
    scratch = Path(tempfile.mkdtemp(prefix="profile.", dir=outdir))
    srv = run.Server(target, None, scratch, outdir / f"{target.name}.log")
    tag = f"{target.name}-{a.scenario}-{tool}"
    tool_proc: subprocess.Popen[bytes] | None = None
    drv_proc: subprocess.Popen[str] | None = None
    try:
        srv.start()
        pid = srv.pid
        drv_proc = subprocess.Popen(
            driver_cmd(a, drv, srv.port, pid), stdout=subprocess.PIPE, text=True
        )
        time.sleep(a.warmup)
        u0, s0 = cpu_split(pid)
        if tool == "strace":
            tool_proc = subprocess.Popen(
                ["strace", "-c", "-f", "-p", str(pid), "-o", str(outdir / f"{tag}.strace")],
                stderr=subprocess.DEVNULL,
            )
        elif tool == "perf":
            tool_proc = subprocess.Popen(
                [
                    "perf",
                    "record",
                    "-F",
                    "999",
                    "-g",
                    "-p",
                    str(pid),
                    "-o",
                    str(outdir / f"{tag}.perf"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        elif tool == "pyspy":
            spy = ["py-spy", "record", "--native", "-r", "997", "-d", str(int(a.duration))]
            spy += ["-f", "raw", "-p", str(pid), "-o", str(outdir / f"{tag}.pyspy")]
            tool_proc = subprocess.Popen(
                spy,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(a.duration)
        u1, s1 = cpu_split(pid)
        if tool_proc is not None and tool != "pyspy":
            tool_proc.send_signal(signal.SIGINT)
        if tool_proc is not None:
            tool_proc.wait(timeout=120)
        res: dict[str, Any] = {}
        if drv_proc is not None:
            stdout, _ = drv_proc.communicate(timeout=a.warmup + a.duration + 60)
            try:
                res = json.loads(stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                res = {}
        ops = int(res.get("ops") or 0)
        head = f"== {tag}: {res.get('ops_per_s', 0):,.0f} ops/s, ok={res.get('ok')}"
        if tool == "cpu":
            if not ops:
                return head + " (no ops)"
            return (
                head
                + f"\n   server user {(u1 - u0) / ops * 1e6:.2f} us/request, system"
                + f" {(s1 - s0) / ops * 1e6:.2f} us/request, total"
                + f" {(u1 - u0 + s1 - s0) / ops * 1e6:.2f}"
                + f" ({100 * (u1 - u0 + s1 - s0) / a.duration:.0f} % of a core)"
            )
        if tool == "strace":
            text = (outdir / f"{tag}.strace").read_text()
            rows: dict[str, tuple[int, int]] = {}  # syscall -> (calls, errors)
            for ln in text.splitlines():
                c = ln.split()
                if len(c) >= 5 and c[3].isdigit() and c[-1] != "total":
                    errs = int(c[4]) if len(c) == 6 and c[4].isdigit() else 0
                    rows[c[-1]] = (int(c[3]), errs)
            # With one request in flight per connection, every read that returned data
            # carried exactly one request: the exact count under strace's slowdown.
            reads = sum(n - e for k, (n, e) in rows.items() if k in READS) or 1
            per = ", ".join(f"{k} {n / reads:.3f}" for k, (n, _) in rows.items())
            return head + f"\n   syscalls per successful read ({reads}): {per}\n" + text
        if tool == "perf":
            return head + "\n" + perf_report(outdir / f"{tag}.perf", a.top)
        if tool == "pyspy":
            spy = pyspy_report(outdir / f"{tag}.pyspy", ops, u1 - u0 + s1 - s0, a.top, u1 - u0)
            return head + "\n" + spy
        return head
    finally:
        if tool_proc is not None and tool_proc.poll() is None:
            tool_proc.kill()
            tool_proc.wait()
        if drv_proc is not None and drv_proc.poll() is None:
            drv_proc.kill()
            drv_proc.wait()
        srv.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--target", action="append", default=[])
    ap.add_argument("--tool", default="cpu", help="comma list of cpu, strace, perf, pyspy")
    ap.add_argument("--scenario", choices=tuple(SCEN), default="put50")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--bqload", help="use this bqload binary instead of bqdrive")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", help="directory for raw outputs (default: a new temporary one)")
    a = ap.parse_args()
    outdir = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="beanstalk-py-profile."))
    outdir.mkdir(parents=True, exist_ok=True)
    targets: list[run.Target] = []
    for t in a.target or ["beanstalk-py"]:
        short_t = run.shortcut_targets(t)
        targets += short_t if short_t is not None else [run.Target(f"target{len(targets)}", t)]
    drv = ""
    if not a.bqload:
        d = run.Driver("c", outdir)
        drv = d.exe
    tools = [x for x in a.tool.split(",") if x]
    for tool in tools:
        if tool not in ("cpu", "strace", "perf", "pyspy"):
            ap.error(f"unknown tool {tool}")
        need = {"strace": "strace", "perf": "perf", "pyspy": "py-spy"}.get(tool)
        if need and not shutil.which(need):
            print(f"profile_server.py: {need} not found, skipping {tool}", file=sys.stderr)
            continue
        for t in targets:
            print(profile_one(a, t, tool, drv, outdir), flush=True)
            print()
    print(f"profile_server.py: raw outputs in {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
