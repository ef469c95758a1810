"""Protocol-level health check: ``python -m beanstalk_py.healthcheck [ADDR] [--port P]``.

Connects to a beanstalkd-compatible server (beanstalk-py or beanstalkd itself), sends
``stats``, and checks that the reply is a complete ``OK <n>`` frame whose YAML mentions
``draining:``. It is meant for Docker's ``HEALTHCHECK`` and similar probes, so it uses only the
stdlib (no curl or nc in slim images) and never imports the server.

``ADDR`` is ``host``, ``host:port``, ``[v6addr]:port`` or ``unix:/path``; without it the value of
``BEANSTALK_PY_HEALTHCHECK_ADDR`` is used, else ``127.0.0.1:11300``. ``--port`` replaces the port
of a TCP address.

Invariants:

* Exit status 0 means healthy, 1 means anything else, including usage errors: Docker reserves
  status 2, so argparse's usual 2 is remapped.
* Output is exactly one line (stdout when healthy, stderr otherwise), never a traceback.
* Every wait is bounded by ``--timeout`` (total for connect, send and receive), and the reply
  is capped at :data:`MAX_STATS_BYTES`, so a wedged or hostile peer cannot hang the probe.
* A draining server (SIGUSR1) is reported healthy: it is alive and finishing its work, and an
  orchestrator restarting it mid-drain would defeat the point of draining.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from beanstalk_py.shell.listeners import split_host_port

__all__ = [
    "DEFAULT_ADDR",
    "ENV_ADDR",
    "HealthError",
    "Target",
    "check",
    "main",
    "parse_addr",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11300
DEFAULT_ADDR = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_TIMEOUT = 3.0
ENV_ADDR = "BEANSTALK_PY_HEALTHCHECK_ADDR"

#: Largest ``stats`` body accepted. Real ones are about 1 KiB; this only bounds memory.
MAX_STATS_BYTES = 1 << 20
# "OK " + up to 20 digits + CRLF, with room to spare; longer means it is not a stats reply.
_MAX_HEADER = 64


class HealthError(Exception):
    """The server is unreachable or did not answer ``stats`` like a beanstalkd server."""


@dataclass(frozen=True)
class Target:
    """Where to connect: ``unix_path`` for a UNIX socket, else ``host`` and ``port``."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"invalid port {text!r}")
    return int(text)


def parse_addr(addr: str, port: int | None = None) -> Target:
    """Parse ``host``, ``host:port``, ``[v6]:port``, a bare IPv6 address or ``unix:/path``.

    ``port``, if given, replaces the port of a TCP address; it is an error with ``unix:``.
    Raises ``ValueError`` on malformed input.
    """
    addr = addr.strip()
    if addr.startswith("unix:"):
        path = addr[len("unix:") :]
        if not path:
            raise ValueError("empty unix socket path")
        if port is not None:
            raise ValueError("--port cannot be used with a unix: address")
        return Target(unix_path=path)
    # More than one ':' without brackets: a bare IPv6 address, default port.
    host, parsed_port = split_host_port(addr, default_port=DEFAULT_PORT)
    if not host:
        raise ValueError(f"missing host in {addr!r}")
    if parsed_port == 0:
        raise ValueError(f"invalid port 0 in {addr!r}")
    return Target(host=host, port=parsed_port if port is None else port)


def _connect(target: Target, timeout: float) -> socket.socket:
    if target.unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(target.unix_path)
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection((target.host, target.port), timeout=timeout)


class _Reader:
    """Buffered reads from ``sock`` that all share one absolute deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buf = bytearray()

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self._sock.settimeout(remaining)
        chunk = self._sock.recv(65536)
        if not chunk:
            raise HealthError("connection closed by server")
        self._buf += chunk

    def line(self, limit: int) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > limit:
                raise HealthError(f"unexpected reply {bytes(self._buf[:40])!r}")
            self._fill()
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def exactly(self, size: int) -> bytes:
        while len(self._buf) < size:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data


def check(target: Target, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run one ``stats`` round trip; return a short summary or raise :class:`HealthError`.

    ``OSError`` (including ``TimeoutError``) from the socket propagates unchanged.
    """
    deadline = time.monotonic() + timeout
    with _connect(target, timeout) as sock:
        sock.sendall(b"stats\r\n")
        reader = _Reader(sock, deadline)
        header = reader.line(_MAX_HEADER)
        fields = header.split(b" ")
        if len(fields) != 2 or fields[0] != b"OK" or not fields[1].isdigit():
            raise HealthError(f"unexpected reply {header[:40]!r}")
        size = int(fields[1])
        if size > MAX_STATS_BYTES:
            raise HealthError(f"stats reply too large ({size} bytes)")
        payload = reader.exactly(size + 2)
    if payload[-2:] != b"\r\n":
        raise HealthError("stats body not terminated by CRLF")
    body = payload[:-2].decode("utf-8", "replace")
    values = {}
    for row in body.splitlines():
        key, sep, value = row.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    if "draining" not in values:
        raise HealthError("stats reply has no 'draining:' field")
    summary = f"healthy: {target}"
    if "version" in values:
        summary += f" version {values['version'].strip(chr(34))}"
    if values["draining"] == "true":
        summary += " (draining)"
    return summary


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line and status 1: Docker treats status 2 as reserved, and probes want one line.
        self.exit(1, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m beanstalk_py.healthcheck",
        description="Exit 0 if a beanstalkd-compatible server answers 'stats', else 1.",
    )
    parser.add_argument(
        "addr",
        nargs="?",
        metavar="ADDR",
        help=f"host, host:port or unix:/path (default: ${ENV_ADDR} or {DEFAULT_ADDR})",
    )
    parser.add_argument("--port", "-p", type=int, help="TCP port, replacing the one in ADDR")
    parser.add_argument(
        "--timeout",
        "-t",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"total seconds for connect, send and reply (default: {DEFAULT_TIMEOUT:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status instead of raising."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # --help exits 0; argparse errors already printed their one line and carry status 1.
        return exc.code if isinstance(exc.code, int) else 1
    addr: str = args.addr or os.environ.get(ENV_ADDR) or DEFAULT_ADDR
    try:
        if not args.timeout > 0:
            raise ValueError("--timeout must be positive")
        if args.port is not None:
            _port(str(args.port))
        target = parse_addr(addr, args.port)
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    try:
        summary = check(target, args.timeout)
    except TimeoutError:
        print(f"unhealthy: {target}: no answer within {args.timeout:g}s", file=sys.stderr)
        return 1
    except (HealthError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"unhealthy: {target}: {reason}", file=sys.stderr)
        return 1
    except BaseException as exc:
        # A probe must report, never die with a traceback (even on Ctrl-C).
        print(f"unhealthy: {target}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
