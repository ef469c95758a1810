"""Start-up latency: milliseconds from exec to the first reply, median of N starts.

    python benchmarks/startup.py                     # the tree, without and with -b, + context
    python benchmarks/startup.py -n 15 --pythonpath /tmp/x   # an installed (compiled) build
    python benchmarks/startup.py --no-site           # without this machine's .pth hooks
    python benchmarks/startup.py --target 'beanstalkd -l 127.0.0.1 -p {port}'

Each start: a fresh server process (with -b: on a fresh empty directory), then the client
connects as soon as the port accepts (retrying every 1 ms) and sends ``list-tube-used``; the
figure is from just before ``Popen`` (fork + exec) to the reply's arrival. Servers are stopped
with SIGTERM (SIGKILL after 5 s). For context the same number of runs of ``python -c pass`` and
``python -c 'import asyncio'`` (exec to exit) are timed on the same machine, and beanstalkd when
it is installed. Runs alternate target by target so that load drifts hit all alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import site
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
REPLY_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def first_reply_ms(argv: list[str], env: dict[str, str], cwd: str, port: int) -> float:
    """Exec ``argv`` and time exec -> the reply to ``list-tube-used``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    try:
        deadline = t0 + REPLY_TIMEOUT
        while True:
            try:
                sock = socket.create_connection((HOST, port), timeout=REPLY_TIMEOUT)
                break
            except OSError:
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{argv[0]} did not start (exit {proc.poll()})") from None
                time.sleep(0.001)
        with sock:
            sock.sendall(b"list-tube-used\r\n")
            reply = sock.recv(64)
            elapsed = time.perf_counter() - t0
        if reply != b"USING default\r\n":
            raise RuntimeError(f"unexpected reply {reply!r}")
        return elapsed * 1000
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def exit_ms(argv: list[str], env: dict[str, str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True)
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=9, help="starts per target (default 9)")
    ap.add_argument(
        "--pythonpath",
        help="run this installed build (pip install --target DIR) instead of the tree",
    )
    ap.add_argument(
        "--target",
        action="append",
        help="a server command with {port} (and {binlog}: -b DIR); replaces the defaults",
    )
    ap.add_argument(
        "--no-site",
        action="store_true",
        help="run every python with -S (site-packages put on PYTHONPATH instead): leaves out\n"
        "start-up hooks in .pth files, which some machines have (e.g. a sandbox's certifi hook)",
    )
    args = ap.parse_args()

    env = dict(os.environ)
    path = [args.pythonpath or str(REPO)]
    py = [sys.executable]
    if args.no_site:
        py.append("-S")
        path += site.getsitepackages()
    env["PYTHONPATH"] = os.pathsep.join(path)
    cwd = tempfile.mkdtemp(prefix="bspy-startup-")  # empty: the tree is not imported by accident
    ours = f"{shlex.join(py)} -m beanstalk_py -l {HOST} -p {{port}}"
    targets = args.target or [ours, f"{ours} {{binlog}}"]
    if not args.target and shutil.which("beanstalkd"):
        targets.append(f"beanstalkd -l {HOST} -p {{port}}")
    contexts = {
        f"{shlex.join(py)} -c pass": [*py, "-c", "pass"],
        f"{shlex.join(py)} -c 'import asyncio'": [*py, "-c", "import asyncio"],
    }
    times: dict[str, list[float]] = {t: [] for t in [*targets, *contexts]}
    try:
        for _ in range(args.n):
            for target in targets:
                binlog = tempfile.mkdtemp(dir=cwd)
                argv = shlex.split(target.format(port="{port}", binlog=f"-b {binlog}"))
                port = free_port()
                argv = [a.replace("{port}", str(port)) for a in argv]
                times[target].append(first_reply_ms(argv, env, cwd, port))
                shutil.rmtree(binlog, ignore_errors=True)
            for name, argv in contexts.items():
                times[name].append(exit_ms(argv, env, cwd))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(cwd)
    build = args.pythonpath or f"{REPO} (tree)"
    print(f"# beanstalk_py from {build}; {args.n} starts each; ms, exec -> first reply")
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
    for name, values in times.items():
        values.sort()
        print(
            f"{statistics.median(values):7.1f} median  {values[0]:7.1f} min  "
            f"{values[-1]:7.1f} max   {name}"
        )


if __name__ == "__main__":
    main()
