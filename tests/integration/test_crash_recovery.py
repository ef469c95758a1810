"""kill -9 at random moments under concurrent load, then restart on the same -b directory.

Each worker connection runs a random mix of put, reserve-job + delete / bury / release (with
and without delay) on its own jobs and keeps a model of what the server *acknowledged*. A
command whose reply did not arrive before the kill is uncertain: either outcome is fine. After
the restart every acknowledged job must be there with its body, priority, state (reserved
ones come back ready) and counters, no acknowledged delete may come back, and ids never repeat.

Worker threads run under ``concurrent.futures`` and their results are collected, so an
assertion or an unexpected error in a worker fails the test. The only error tolerated is the
connection dropping (reset, EOF, broken pipe) *after* the kill was sent, and only the command
that was in flight then becomes uncertain; any other reply (an error, NOT_FOUND for one of the
worker's own jobs) fails.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.servers import ours_process

WORKERS = 4
ROUNDS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(bdir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "beanstalk_py", "-l", "127.0.0.1", "-p", str(port), "-b", str(bdir)],
        **ours_process(),
    )


def connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 15
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = connect(port)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def body(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def ask(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.line()


@dataclass
class Known:
    body: bytes
    pri: int
    state: str = "ready"  # ready | buried | delayed | deleted
    releases: int = 0
    buries: int = 0
    uncertain: bool = False  # a command on it got no reply before the kill


@dataclass
class Model:
    jobs: dict[int, Known] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    max_id: int = 0


# What a kill -9 does to a client: EOF ("closed"), reset, broken pipe. Timeouts are not here:
# a server that stops answering while alive is a failure.
KILL_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def dropped_by_kill(exc: BaseException, killed: threading.Event) -> bool:
    """True when ``exc`` is the connection dropping after the kill was sent."""
    if not killed.is_set():
        return False
    return isinstance(exc, KILL_ERRORS) or (
        type(exc) is ConnectionError and exc.args == ("closed",)
    )


def worker(
    port: int, model: Model, stop: threading.Event, killed: threading.Event, seed: float
) -> int:
    """Run commands until ``stop``; return how many were acknowledged."""
    rnd = random.Random(seed)
    acked = 0
    try:
        conn = Conn(port)
    except OSError as exc:
        if killed.is_set():  # the kill came before this worker got going
            return 0
        raise AssertionError(f"worker could not connect before the kill: {exc!r}") from exc
    mine: list[int] = []
    pending: int | None = None
    try:
        while not stop.is_set():
            if mine and rnd.random() < 0.4:
                job_id = rnd.choice(mine)
                known = model.jobs[job_id]
                if known.state != "ready":
                    continue
                pending = job_id
                known.uncertain = True  # until every step below is acknowledged
                reply = conn.ask(b"reserve-job %d\r\n" % job_id)
                assert reply.startswith(b"RESERVED %d " % job_id), reply
                conn.body(len(known.body))
                action = rnd.choice(("delete", "bury", "release0", "release"))
                pri = rnd.randrange(0, 2000)
                if action == "delete":
                    assert conn.ask(b"delete %d\r\n" % job_id) == b"DELETED"
                    known.state = "deleted"
                    mine.remove(job_id)
                elif action == "bury":
                    assert conn.ask(b"bury %d %d\r\n" % (job_id, pri)) == b"BURIED"
                    known.state, known.pri = "buried", pri
                    known.buries += 1
                    mine.remove(job_id)
                else:
                    delay = 0 if action == "release0" else 1000
                    reply = conn.ask(b"release %d %d %d\r\n" % (job_id, pri, delay))
                    assert reply == b"RELEASED", reply
                    known.state, known.pri = ("ready" if delay == 0 else "delayed"), pri
                    known.releases += 1
                    if delay:
                        mine.remove(job_id)
                known.uncertain = False
                pending = None
                acked += 1
            else:
                body = rnd.randbytes(rnd.randrange(0, 200)).replace(b"\r\n", b"..")
                pri = rnd.randrange(0, 2000)
                pending = -1
                reply = conn.ask(b"put %d 0 60 %d\r\n%s\r\n" % (pri, len(body), body))
                assert reply.startswith(b"INSERTED "), reply
                job_id = int(reply.split()[1])
                with model.lock:
                    assert job_id not in model.jobs, f"id {job_id} handed out twice"
                    model.jobs[job_id] = Known(body, pri)
                    model.max_id = max(model.max_id, job_id)
                mine.append(job_id)
                pending = None
                acked += 1
    except OSError as exc:
        if not dropped_by_kill(exc, killed):
            raise
        # The reply to the command in flight was lost: its outcome is unknown.
        if pending is not None and pending > 0:
            model.jobs[pending].uncertain = True
    finally:
        conn.sock.close()
    return acked


def check(port: int, model: Model) -> None:
    conn = Conn(port)
    for job_id, known in model.jobs.items():
        if known.uncertain:
            continue
        reply = conn.ask(b"stats-job %d\r\n" % job_id)
        if known.state == "deleted":
            assert reply == b"NOT_FOUND", f"deleted job {job_id} came back"
            continue
        assert reply.startswith(b"OK "), (job_id, reply)
        stats = dict(
            line.split(": ", 1)
            for line in conn.body(int(reply.split()[1])).decode().splitlines()[1:]
        )
        assert stats["state"] == known.state, (job_id, stats, known)
        assert int(stats["pri"]) == known.pri, (job_id, stats, known)
        assert int(stats["releases"]) == known.releases, (job_id, stats, known)
        assert int(stats["buries"]) == known.buries, (job_id, stats, known)
        reply = conn.ask(b"peek %d\r\n" % job_id)
        assert reply == b"FOUND %d %d" % (job_id, len(known.body)), reply
        assert conn.body(len(known.body)) == known.body
    reply = conn.ask(b"put 0 0 1 1\r\nz\r\n")
    new_id = int(reply.split()[1])
    assert new_id > model.max_id, "an id was reused after the restart"
    assert conn.ask(b"delete %d\r\n" % new_id) == b"DELETED"
    conn.sock.close()


def test_kill_9_under_concurrent_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rnd = random.Random(int(os.environ.get("BEANSTALK_PY_CRASH_SEED", "7")))
    model = Model()
    for _ in range(ROUNDS):
        port = free_port()
        server = start(tmp_path, port)
        try:
            check(port, model)  # everything acknowledged in earlier rounds survived
            stop, killed = threading.Event(), threading.Event()
            with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
                futures = [
                    pool.submit(worker, port, model, stop, killed, rnd.random())
                    for _ in range(WORKERS)
                ]
                try:
                    time.sleep(rnd.uniform(0.2, 0.8))  # a random kill point under load
                    killed.set()
                    server.send_signal(signal.SIGKILL)
                    server.wait(10)
                finally:
                    stop.set()
                # A worker's assertion or unexpected error fails the test here.
                acked = sum(f.result(timeout=30) for f in futures)
            assert acked > 0, "no command was acknowledged before the kill"
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(10)
    port = free_port()
    server = start(tmp_path, port)
    try:
        check(port, model)
    finally:
        server.terminate()
        server.wait(10)
    assert sum(1 for k in model.jobs.values() if not k.uncertain) > 50  # it did real work
