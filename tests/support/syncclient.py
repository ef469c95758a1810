"""A blocking beanstalk client for tests that drive a server *process* from plain test code.

``Conn.cmd(line, body)`` sends one command and returns ``(reply line, body or None)``; every
read is bounded by a timeout and a closed connection raises, so a dead or silent server fails
the test instead of hanging it. ``http_get`` fetches a path from the same port (metrics).
"""

from __future__ import annotations

import re
import socket
import time

TIMEOUT = 10.0
_WITH_BODY = re.compile(rb"^(?:OK|FOUND \d+|RESERVED \d+) (\d+)$")


class Conn:
    def __init__(self, port: int, host: str = "127.0.0.1", *, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        out, _, self.buf = self.buf.partition(b"\r\n")
        return out

    def body(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def cmd(self, line: bytes, body: bytes | None = None) -> tuple[bytes, bytes | None]:
        """Send ``line`` (and ``body``), read the reply line and the body it announces."""
        data = line + b"\r\n"
        if body is not None:
            data += body + b"\r\n"
        self.sock.sendall(data)
        reply = self.line()
        m = _WITH_BODY.match(reply)
        return reply, (self.body(int(m[1])) if m else None)

    def put(self, body: bytes, *, pri: int = 0, delay: int = 0, ttr: int = 60) -> bytes:
        return self.cmd(b"put %d %d %d %d" % (pri, delay, ttr, len(body)), body)[0]

    def stats_job(self, job_id: int) -> dict[str, str]:
        reply, body = self.cmd(b"stats-job %d" % job_id)
        assert reply.startswith(b"OK ") and body is not None, reply
        return _yaml_dict(body)

    def stats(self) -> dict[str, str]:
        reply, body = self.cmd(b"stats")
        assert reply.startswith(b"OK ") and body is not None, reply
        return _yaml_dict(body)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _yaml_dict(body: bytes) -> dict[str, str]:
    out = {}
    for raw in body.decode().splitlines()[1:]:  # skip the "---" line
        key, _, value = raw.partition(": ")
        out[key.strip()] = value.strip().strip('"')
    return out


def http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET ``path``; returns (status, body). The server closes after one answer."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
