"""Restart a real server process on the same -b directory after kill -9."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.servers import ours_process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    def __init__(self, bdir: Path, *extra: str) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "beanstalk_py",
                "-l",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-b",
                str(bdir),
                *extra,
            ],
            **ours_process(),
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    pytest.fail("server did not start")
                time.sleep(0.05)
        self.buf = b""

    def cmd(self, line: bytes, body: bytes | None = None) -> bytes:
        self.sock.sendall(line + b"\r\n" + (body + b"\r\n" if body is not None else b""))
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk
            self.buf += chunk
        out, _, self.buf = self.buf.partition(b"\r\n")
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.mark.slow
def test_jobs_survive_kill9(tmp_path: Path) -> None:
    srv = _Server(tmp_path, "-s", "65536")
    try:
        ids = []
        for i in range(300):
            reply = srv.cmd(b"put %d 0 60 5" % i, b"j%04d" % i)
            assert reply.startswith(b"INSERTED"), reply
            ids.append(int(reply.split()[1]))
        for i in ids[:200]:
            assert srv.cmd(b"delete %d" % i) == b"DELETED"
        assert srv.cmd(b"reserve-with-timeout 0").startswith(b"RESERVED")
        srv.buf = b""  # drop the body of the reserved job
        time.sleep(0.05)
    finally:
        srv.kill()
    srv = _Server(tmp_path, "-s", "65536")
    try:
        reply = srv.cmd(b"stats-job %d" % ids[250])
        assert reply.startswith(b"OK"), reply
        n = int(reply.split()[1])
        while len(srv.buf) < n + 2:
            srv.buf += srv.sock.recv(65536)
        assert b"state: ready" in srv.buf
        srv.buf = b""
        assert srv.cmd(b"peek %d" % ids[10]) == b"NOT_FOUND"
        reply = srv.cmd(b"put 0 0 60 1", b"x")
        assert int(reply.split()[1]) == ids[-1] + 1  # ids never repeat
    finally:
        srv.kill()
