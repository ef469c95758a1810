"""Binlog directory size under churn around long-lived jobs (issue 10, item 2).

    python benchmarks/binlog_churn.py                      # the issue's scenario: -s 1 MiB, 40 MB
    python benchmarks/binlog_churn.py -s 131072 --churn-mb 6 --report-mb 1

Starts ``python -m beanstalk_py -b DIR -s SIZE`` (the checkout first on PYTHONPATH), keeps
long-lived jobs (2,000-byte bodies: ready in two tubes, one delayed an hour, one buried, one
reserved by a connection that stays open), then churns ``--churn-mb`` MB through another tube in
rounds of 100 pipelined ``put 0 0 60 5000`` followed by 100 pipelined ``delete``. Prints the
binlog directory size after every ``--report-mb`` MB, then kills the server with SIGKILL,
starts it again on the same directory and checks every long-lived job (body, tube, state,
priority; the reserved one must come back ready). Exit status 1 if a check fails or the
directory ever exceeds ``--limit`` bytes (default: 4 segments).

``tests/integration/test_binlog_churn.py`` runs the same code with small segments, and the
issue's exact scenario.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BODY = 2000
CHURN_BODY = 5000
ROUND = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Conn:
    """A blocking protocol client that reads exactly what it asked for."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 15
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.02)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        out, _, self.buf = self.buf.partition(b"\r\n")
        return out

    def data(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n + 2 :]
        return out

    def ask(self, line: bytes, body: bytes | None = None) -> bytes:
        self.send(line + b"\r\n" + (body + b"\r\n" if body is not None else b""))
        return self.line()

    def yaml(self, line: bytes) -> dict[str, str]:
        reply = self.ask(line)
        if not reply.startswith(b"OK "):
            raise AssertionError(f"{line!r}: {reply!r}")
        out = {}
        for row in self.data(int(reply.split()[1])).decode().splitlines()[1:]:
            key, _, value = row.partition(": ")
            out[key] = value.strip('"')
        return out


class Server:
    def __init__(self, bdir: Path, seg_size: int) -> None:
        self.port = _free_port()
        env = dict(os.environ)
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + old if old else "")
        argv = [sys.executable, "-m", "beanstalk_py", "-l", "127.0.0.1", "-p", str(self.port)]
        argv += ["-b", str(bdir), "-s", str(seg_size)]
        self.proc = subprocess.Popen(argv, env=env)

    def conn(self) -> Conn:
        return Conn(self.port, self.proc)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@dataclass
class LongLived:
    """A job that must outlive the churn: what a restart must show for it."""

    name: str
    tube: str
    pri: int
    body: bytes
    state: str  # after the restart
    id: int = 0


@dataclass
class Result:
    sizes: list[tuple[float, int]] = field(default_factory=list)  # (churned MB, dir bytes)
    max_size: int = 0
    problems: list[str] = field(default_factory=list)


SHAPES = ("ready", "ready", "delayed", "buried", "reserved")


def dir_bytes(bdir: Path) -> int:
    """Bytes of the binlog segments (``binlog.N``; allocated size of preallocated ones)."""
    total = 0
    for p in bdir.iterdir():
        if p.name.startswith("binlog."):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue  # removed by the server meanwhile
            total += max(st.st_size, st.st_blocks * 512)
    return total


def _setup(srv: Server, shapes: tuple[str, ...]) -> tuple[list[LongLived], list[Conn]]:
    jobs: list[LongLived] = []
    keep_open: list[Conn] = []
    c = srv.conn()
    keep_open.append(c)
    for n, shape in enumerate(shapes):
        tube = f"keep-{n}-{shape}"
        body = (b"%s-%d-" % (shape.encode(), n) * BODY)[:BODY]
        job = LongLived(tube, tube, 100 + n, body, "ready" if shape == "reserved" else shape)
        assert c.ask(b"use " + tube.encode()) == b"USING " + tube.encode()
        delay = 3600 if shape == "delayed" else 0
        reply = c.ask(b"put %d %d 600 %d" % (job.pri, delay, BODY), body)
        assert reply.startswith(b"INSERTED "), reply
        job.id = int(reply.split()[1])
        if shape == "buried":
            assert c.ask(b"reserve-job %d" % job.id).startswith(b"RESERVED"), shape
            c.data(BODY)
            assert c.ask(b"bury %d %d" % (job.id, job.pri)) == b"BURIED"
        elif shape == "reserved":
            # Reserved by a connection that stays open (through the kill).
            w = srv.conn()
            keep_open.append(w)
            assert w.ask(b"reserve-job %d" % job.id).startswith(b"RESERVED")
            w.data(BODY)
        jobs.append(job)
    return jobs, keep_open


def churn_round(c: Conn, body: bytes, jobs: int = ROUND) -> None:
    c.send(b"".join(b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body) for _ in range(jobs)))
    ids = []
    for _ in range(jobs):
        reply = c.line()
        if not reply.startswith(b"INSERTED "):
            raise AssertionError(f"churn put: {reply!r}")
        ids.append(int(reply.split()[1]))
    c.send(b"".join(b"delete %d\r\n" % i for i in ids))
    for _ in range(jobs):
        reply = c.line()
        if reply != b"DELETED":
            raise AssertionError(f"churn delete: {reply!r}")


def check_after_restart(srv: Server, jobs: list[LongLived]) -> list[str]:
    problems = []
    c = srv.conn()
    try:
        for job in jobs:
            st = c.yaml(b"stats-job %d" % job.id)
            got = (st.get("tube"), st.get("state"), st.get("pri"))
            want = (job.tube, job.state, str(job.pri))
            if got != want:
                problems.append(f"{job.name} job {job.id}: (tube, state, pri) {got} != {want}")
            reply = c.ask(b"peek %d" % job.id)
            if not reply.startswith(b"FOUND "):
                problems.append(f"{job.name} job {job.id}: peek {reply!r}")
                continue
            body = c.data(int(reply.split()[2]))
            if body != job.body:
                problems.append(f"{job.name} job {job.id}: body differs")
    finally:
        c.close()
    return problems


@contextlib.contextmanager
def _scratch(bdir: Path | None) -> Iterator[Path]:
    if bdir is not None:
        yield bdir
        return
    with tempfile.TemporaryDirectory(prefix="bspy-churn-") as d:
        yield Path(d)


def run(
    seg_size: int,
    churn_mb: float,
    *,
    report_mb: float = 1.0,
    shapes: tuple[str, ...] = SHAPES,
    round_jobs: int = ROUND,
    limit: int | None = None,
    bdir: Path | None = None,
    echo: bool = False,
) -> Result:
    """The whole scenario; ``limit``: the directory bound checked after every round.

    ``round_jobs``: puts (then deletes) per round. Keep a round about half a segment, as the
    issue's 100 x 5,000 bytes in 1 MiB segments: then segments mix puts and the deletes of
    earlier puts, which is what chained their removal one after the other."""
    res = Result()
    per_round = round_jobs * CHURN_BODY / 1e6
    rounds = round(churn_mb / per_round)
    every = max(1, round(report_mb / per_round))
    body = b"c" * CHURN_BODY
    with _scratch(bdir) as d:
        srv = Server(d, seg_size)
        try:
            jobs, conns = _setup(srv, shapes)
            churner = conns[0]
            assert churner.ask(b"use churn") == b"USING churn"
            for r in range(1, rounds + 1):
                churn_round(churner, body, round_jobs)
                size = dir_bytes(d)
                res.max_size = max(res.max_size, size)
                if limit is not None and size > limit:
                    res.problems.append(
                        f"after {r * per_round:.1f} MB of churn the directory holds {size} bytes "
                        f"(limit {limit}): {sorted(p.name for p in d.iterdir())}"
                    )
                if r % every == 0 or r == rounds:
                    res.sizes.append((r * per_round, size))
                    if echo:
                        print(
                            f"churn {r * per_round:6.1f} MB  dir {size / 1e6:7.2f} MB", flush=True
                        )
                if res.problems:
                    break
        finally:
            srv.kill9()
        srv = Server(d, seg_size)
        try:
            res.problems += check_after_restart(srv, jobs)
        finally:
            srv.kill9()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-s", "--segment-size", type=int, default=1048576)
    ap.add_argument("--churn-mb", type=float, default=40.0)
    ap.add_argument("--report-mb", type=float, default=10.0)
    ap.add_argument("--round", type=int, default=ROUND, help="jobs per round (default 100)")
    ap.add_argument("--limit", type=int, default=None, help="bytes (default: 4 segments)")
    args = ap.parse_args()
    limit = args.limit if args.limit is not None else 4 * args.segment_size
    t0 = time.monotonic()
    res = run(
        args.segment_size,
        args.churn_mb,
        report_mb=args.report_mb,
        round_jobs=args.round,
        limit=limit,
        echo=True,
    )
    print(f"max {res.max_size / 1e6:.2f} MB, {time.monotonic() - t0:.1f} s")
    for p in res.problems:
        print("FAIL:", p)
    return 1 if res.problems else 0


if __name__ == "__main__":
    sys.exit(main())
