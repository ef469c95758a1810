"""A freshly started server answers in time (issue 10, item 3).

greenstalk's own test suite starts the server, sleeps 0.1 s, connects, and asserts that a job
put with delay 1 is reserved 1.00-1.05 s later, and that ``reserve-with-timeout 1`` times out
1.00-1.05 s later. Every millisecond the first reply waits for the server's start-up shows up
in that window, so these checks reproduce it exactly: the real server process, spawned as the
other process tests spawn it (``ours_argv`` / ``ours_env``), on TCP, on a UNIX socket (as
greenstalk does) and with ``-b`` on an empty directory. The window is not widened, but a
loaded machine gets retries: CI's shared 2-core hosts have been seen to push two starts in a
row 55-65 ms past it (and two busy cores push the first reply to 110-240 ms), so a start
counts if any of ``ATTEMPTS`` lands in the window.

How fast a machine starts Python decides whether the old start-up (first reply after asyncio
was imported) happened to fit in that window; ``test_first_reply_comes_before_asyncio_...``
checks the property itself, relative to the same machine: the server answers before
``python -c 'import asyncio'`` has even exited.

The package's byte-code is compiled first, as an installed server's is: where
PYTHONDONTWRITEBYTECODE is set, a tree would otherwise compile every module on every start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import HOST, free_port, ours_argv, ours_env, short_unix_path

WINDOW = (1.00, 1.05)  # greenstalk's assert_seconds(1)
ATTEMPTS = 5
SHAPES = ["tcp", "unix", "tcp-empty-binlog"]


@pytest.fixture(scope="module", autouse=True)
def compiled_bytecode() -> None:
    env = ours_env()
    package = subprocess.run(
        [
            sys.executable,
            "-c",
            "import beanstalk_py, os; print(os.path.dirname(beanstalk_py.__file__))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if os.access(package, os.W_OK):
        subprocess.run([sys.executable, "-m", "compileall", "-q", package], env=env, check=True)


class Client:
    """A connection to the spawned server, made when the test says so."""

    def __init__(self, address: str | tuple[str, int], proc: subprocess.Popen[bytes]) -> None:
        self.address = address
        self.proc = proc
        self.sock: socket.socket | None = None

    def connect(self, retry_until: float | None = None) -> None:
        family = socket.AF_UNIX if isinstance(self.address, str) else socket.AF_INET
        while True:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(10)
            try:
                sock.connect(self.address)
                self.sock = sock
                return
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if retry_until is None or time.monotonic() > retry_until:
                    raise
                assert self.proc.poll() is None, "the server exited"
                time.sleep(0.001)

    def ask(self, request: bytes, reply: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(request)
        data = b""
        while len(data) < len(reply):
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        assert data == reply

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


@contextlib.contextmanager
def spawned(shape: str, tmp: Path) -> Iterator[tuple[float, Client]]:
    """Start the server in ``shape``; yield (exec time, a Client not yet connected)."""
    if shape == "unix":
        path = short_unix_path()
        argv = [a.format(listen=f"unix:{path}", port=0) for a in ours_argv()]
        address: str | tuple[str, int] = path
    else:
        port = free_port()
        extra = ["-b", tempfile.mkdtemp(dir=tmp)] if shape == "tcp-empty-binlog" else []
        argv = [a.format(listen=HOST, port=port) for a in ours_argv(*extra)]
        address = (HOST, port)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=ours_env(), stdin=subprocess.DEVNULL)
    client = Client(address, proc)
    try:
        yield t0, client
    finally:
        client.close()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def check_window(shape: str, tmp: Path, request: bytes, reply: bytes) -> None:
    seen: list[float | str] = []
    for _ in range(ATTEMPTS):
        with spawned(shape, tmp) as (_, conn):
            time.sleep(0.1)  # greenstalk's with_beanstalkd
            try:
                conn.connect()
            except (FileNotFoundError, ConnectionRefusedError):
                seen.append("not listening")
                continue
            t0 = time.monotonic()
            conn.ask(request, reply)
            elapsed = time.monotonic() - t0
        seen.append(round(elapsed, 3))
        if WINDOW[0] <= elapsed <= WINDOW[1]:
            return
    pytest.fail(f"elapsed {seen} s, not within {WINDOW} s")


@pytest.mark.parametrize("shape", SHAPES)
def test_delayed_job_is_reserved_one_second_after_a_fresh_start(shape: str, tmp_path: Path) -> None:
    check_window(
        shape,
        tmp_path,
        b"put 0 1 60 7\r\ndelayed\r\nreserve\r\n",
        b"INSERTED 1\r\nRESERVED 1 7\r\ndelayed\r\n",
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_reserve_with_timeout_times_out_one_second_after_a_fresh_start(
    shape: str, tmp_path: Path
) -> None:
    check_window(shape, tmp_path, b"reserve-with-timeout 1\r\n", b"TIMED_OUT\r\n")


def test_first_reply_comes_before_asyncio_could_even_be_imported(tmp_path: Path) -> None:
    starts = 9
    first_reply: dict[str, list[float]] = {"tcp": [], "tcp-empty-binlog": []}
    asyncio_import: list[float] = []
    for _ in range(starts):  # interleaved, so that load changes hit all alike
        for shape, times in first_reply.items():
            with spawned(shape, tmp_path) as (t0, conn):
                conn.connect(retry_until=t0 + 10)
                conn.ask(b"list-tube-used\r\n", b"USING default\r\n")
                times.append(time.monotonic() - t0)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import asyncio"], env=ours_env(), check=True)
        asyncio_import.append(time.monotonic() - t0)
    baseline = statistics.median(asyncio_import)
    medians = {shape: statistics.median(times) for shape, times in first_reply.items()}
    assert all(m < baseline for m in medians.values()), (medians, baseline)


def test_sigterm_while_the_early_loop_serves_is_a_graceful_exit(tmp_path: Path) -> None:
    port = free_port()
    argv = [a.format(listen=HOST, port=port) for a in ours_argv("-b", str(tmp_path), "-V")]
    proc = subprocess.Popen(argv, env=ours_env(), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = Client((HOST, port), proc)
        client.connect(retry_until=time.monotonic() + 10)
        client.ask(b"put 0 0 60 4\r\nkept\r\n", b"INSERTED 1\r\n")
        proc.terminate()  # at once: the event loop is not running yet
        assert proc.wait(10) == 0
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    # -V logs the accept before the event loop's "listening on": the early loop answered.
    assert log.index("accept ") < log.index("listening on"), log
    with spawned_on(port, tmp_path) as again:
        again.connect(retry_until=time.monotonic() + 10)
        again.ask(b"peek 1\r\n", b"FOUND 1 4\r\nkept\r\n")


@contextlib.contextmanager
def spawned_on(port: int, binlog: Path) -> Iterator[Client]:
    argv = [a.format(listen=HOST, port=port) for a in ours_argv("-b", str(binlog))]
    proc = subprocess.Popen(argv, env=ours_env(), stdin=subprocess.DEVNULL)
    client = Client((HOST, port), proc)
    try:
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
