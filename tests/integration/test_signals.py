"""The process as operators run it: ``python -m beanstalk_py`` under SIGTERM and SIGUSR1.

Covers graceful shutdown (exit 0, in-flight clients answered), drain mode, durability of every
acknowledged put across a SIGTERM under load (with ``-b``), the fsync histogram, ``-VV`` command
lines, ``--metrics-addr`` and the healthcheck module against our server. Every wait is bounded
and every child is reaped (``ServerProcess.stop`` kills what did not exit).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.servers import ServerProcess, free_port

from beanstalk_py.app import healthcheck

TIMEOUT = 5.0
ServerProcessFactory = Callable[..., ServerProcess]


@pytest.fixture
def start(start_ours: ServerProcessFactory) -> ServerProcessFactory:
    return start_ours  # tests/integration/conftest.py


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def call(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` and read one reply line."""
    sock.sendall(data)
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def wait_exit(proc: ServerProcess) -> int:
    assert proc.proc is not None
    try:
        return int(proc.proc.wait(TIMEOUT))
    except subprocess.TimeoutExpired:
        pytest.fail(f"server did not exit within {TIMEOUT}s:\n{proc.output()}")


def http_get(port: int, path: str) -> tuple[int, bytes]:
    with connect(port) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def until(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_sigterm_exits_0_and_answers_first(start: ServerProcessFactory) -> None:
    proc = start()
    with connect(proc.port) as c:
        assert call(c, b"put 0 0 10 2\r\nhi\r\n") == b"INSERTED 1\r\n"
        c.sendall(b"put 0 0 10 2\r\nho\r\n")
        proc.send_signal(signal.SIGTERM)
        got = b""
        while chunk := c.recv(4096):  # the in-flight reply, then EOF, never a hang
            got += chunk
        # The put reached the server before the signal: it is answered, not dropped.
        assert got == b"INSERTED 2\r\n"
    assert wait_exit(proc) == 0
    assert "Traceback" not in proc.output()


def test_sigterm_answers_puts_waiting_for_their_fsync(
    start: ServerProcessFactory, tmp_path: Path
) -> None:
    # -f 0: a put's reply waits for the fsync of its record. Puts read before SIGTERM are in
    # flight; the graceful stop must finish their fsync and send every reply.
    proc = start("-b", str(tmp_path), "-f", "0")
    with connect(proc.port) as c:
        assert call(c, b"list-tube-used\r\n") == b"USING default\r\n"  # handlers installed
        c.sendall(b"put 0 0 60 2\r\nhi\r\n" * 200)
        proc.send_signal(signal.SIGTERM)
        got = b""
        while chunk := c.recv(65536):
            got += chunk
    assert got == b"".join(b"INSERTED %d\r\n" % i for i in range(1, 201)), got[-200:]
    assert wait_exit(proc) == 0, proc.output()
    proc2 = start("-b", str(tmp_path))
    with connect(proc2.port) as c:
        assert call(c, b"peek 200\r\n") == b"FOUND 200 2\r\nhi\r\n"


def test_sigusr1_drains(start: ServerProcessFactory) -> None:
    metrics_port = free_port()
    proc = start("--metrics-addr", f"127.0.0.1:{metrics_port}")

    def readyz() -> int:  # the metrics listener opens just after the beanstalk port
        try:
            return http_get(metrics_port, "/readyz")[0]
        except OSError:
            return 0

    until(lambda: readyz() == 200, "/readyz on --metrics-addr")
    assert healthcheck.main([f"127.0.0.1:{proc.port}"]) == 0
    with connect(proc.port) as c:
        assert call(c, b"put 0 0 10 1\r\na\r\n") == b"INSERTED 1\r\n"
        proc.send_signal(signal.SIGUSR1)
        until(lambda: call(c, b"put 0 0 10 1\r\nb\r\n") == b"DRAINING\r\n", "DRAINING")
        assert call(c, b"reserve-with-timeout 0\r\n").startswith(b"RESERVED 1 1\r\n")
    assert http_get(metrics_port, "/readyz") == (503, b"draining\n")
    assert http_get(proc.port, "/healthz") == (200, b"ok\n")
    status, body = http_get(metrics_port, "/metrics")
    assert status == 200 and b"\nbeanstalkd_draining 1.0\n" in body
    assert healthcheck.main([f"127.0.0.1:{proc.port}"]) == 0  # draining is healthy
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 0


def test_vv_logs_commands_and_replies_without_bodies(start: ServerProcessFactory) -> None:
    proc = start("-VV")
    with connect(proc.port) as c:
        assert call(c, b"put 0 0 10 10\r\nSECRETBODY\r\n") == b"INSERTED 1\r\n"
        reply = call(c, b"reserve\r\n")
        assert reply.startswith(b"RESERVED 1 10\r\n")
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 0
    out = proc.output()
    assert re.search(r"cmd=put\b", out), out
    assert 'reply="INSERTED 1"' in out
    assert 'reply="RESERVED 1 10"' in out
    assert "accept " in out and "close " in out and "shutting down" in out
    assert "SECRETBODY" not in out


def test_default_verbosity_is_quiet(start: ServerProcessFactory) -> None:
    proc = start()
    with connect(proc.port) as c:
        assert call(c, b"put 0 0 10 1\r\nx\r\n") == b"INSERTED 1\r\n"
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 0
    assert "cmd=" not in proc.output() and "accept" not in proc.output()


def test_sigterm_under_load_keeps_every_acknowledged_job(
    start: ServerProcessFactory, tmp_path: Path
) -> None:
    proc = start("-b", str(tmp_path))
    acked: list[list[int]] = [[] for _ in range(4)]
    started = threading.Barrier(len(acked) + 1)

    def producer(out: list[int]) -> None:
        # Pipelined puts; stop at EOF/reset (the server is shutting down).
        with connect(proc.port) as c:
            started.wait(TIMEOUT)
            buf = b""
            try:
                while True:
                    c.sendall(b"put 0 0 60 4\r\nwork\r\n" * 20)
                    while buf.count(b"\r\n") < 20:
                        chunk = c.recv(65536)
                        if not chunk:
                            raise ConnectionError
                        buf += chunk
                    lines = buf.split(b"\r\n")
                    buf = b"\r\n".join(lines[20:])
                    out.extend(int(line.split()[1]) for line in lines[:20])
            except OSError:
                pass
            # Replies that arrived before the close count too.
            out.extend(int(m) for m in re.findall(rb"INSERTED (\d+)\r\n", buf))

    threads = [threading.Thread(target=producer, args=(out,)) for out in acked]
    for t in threads:
        t.start()
    started.wait(TIMEOUT)
    until(lambda: sum(map(len, acked)) >= 200, "200 acknowledged puts")
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive()
    assert wait_exit(proc) == 0, proc.output()
    ids = sorted(i for out in acked for i in out)
    assert len(ids) == len(set(ids)) >= 200

    proc2 = start("-b", str(tmp_path), "-f", "0")
    with connect(proc2.port) as c:
        missing = [i for i in ids if not call(c, b"peek %d\r\n" % i).startswith(b"FOUND ")]
        assert not missing, f"{len(missing)} acknowledged jobs lost, e.g. {missing[:5]}"
        # -f 0: the reply waits for its fsync, so the histogram has an observation by now.
        assert call(c, b"put 0 0 10 1\r\nz\r\n").startswith(b"INSERTED ")
    status, body = http_get(proc2.port, "/metrics")
    assert status == 200
    count = re.search(rb"\nbeanstalkd_binlog_fsync_duration_seconds_count (\S+)\n", body)
    assert count is not None and float(count[1]) >= 1
    written = re.search(rb"\nbeanstalkd_binlog_write_bytes_total (\S+)\n", body)
    assert written is not None and float(written[1]) > 0
    assert re.search(rb"\nbeanstalkd_binlog_replay_duration_seconds \S+\n", body)
