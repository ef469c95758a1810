"""A raw-bytes beanstalk client for transcript tests (the Python twin of testserv.c's ckresp).

Everything is bytes: what the test sends goes on the wire unchanged and what it expects is
compared byte for byte. Every read is bounded by a timeout so a silent server fails the test
instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time

import yaml

DEFAULT_TIMEOUT = 5.0

# Replies that carry a body: the last number on the line is the body length (without CRLF).
_BODY_REPLY = re.compile(rb"^(?:OK|FOUND \d+|RESERVED \d+) (\d+)\r\n$")


class ReplyTimeout(AssertionError):
    """The server did not send the expected bytes in time."""


class RawClient:
    """One connection to a beanstalk server, speaking raw bytes."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        name: str = "client",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.name = name

    # -- connecting -------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT, name: str = "client"
    ) -> RawClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=2**20), timeout
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, timeout=timeout, name=name)

    @classmethod
    async def connect_unix(
        cls, path: str, *, timeout: float = DEFAULT_TIMEOUT, name: str = "client"
    ) -> RawClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(path, limit=2**20), timeout
        )
        return cls(reader, writer, timeout=timeout, name=name)

    # -- sending ----------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Write ``data`` unchanged and wait until it is handed to the kernel."""
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def send_large(self, size: int, *, fill: bytes = b"x", chunk: int = 1 << 20) -> None:
        """Stream ``size`` bytes of ``fill`` without building one huge buffer."""
        block = (fill * (chunk // len(fill) + 1))[:chunk]
        left = size
        while left > 0:
            n = min(left, chunk)
            self.writer.write(block[:n])
            await asyncio.wait_for(self.writer.drain(), max(self.timeout, 30.0))
            left -= n

    # -- receiving --------------------------------------------------------------------------

    async def read_exactly(self, n: int, *, timeout: float | None = None) -> bytes:
        """Read exactly ``n`` bytes; on timeout or EOF fail showing what did arrive."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplyTimeout(
                    f"{self.name}: timed out after {limit}s waiting for {n} bytes; "
                    f"got {len(buf)}: {bytes(buf)!r}"
                )
            try:
                chunk = await asyncio.wait_for(self.reader.read(n - len(buf)), left)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(
                    f"{self.name}: connection closed after {len(buf)} of {n} bytes: {bytes(buf)!r}"
                )
            buf += chunk
        return bytes(buf)

    async def expect(self, expected: bytes, *, timeout: float | None = None) -> None:
        """Read ``len(expected)`` bytes and assert they equal ``expected``."""
        try:
            got = await self.read_exactly(len(expected), timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"expected {expected!r}\n{exc}") from None
        if got != expected:
            # Grab whatever else is immediately available to make the failure readable.
            extra = await self.read_available(0.05)
            raise AssertionError(
                f"{self.name}: reply mismatch\n expected: {expected!r}\n      got: {got!r}"
                + (f"\n  then: {extra!r}" if extra else "")
            )

    async def read_line(self, *, timeout: float | None = None) -> bytes:
        """Read one line up to and including ``\\r\\n``."""
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(self.reader.readuntil(b"\r\n"), limit)
        except TimeoutError:
            raise ReplyTimeout(f"{self.name}: no complete line within {limit}s") from None
        except asyncio.IncompleteReadError as exc:
            raise AssertionError(
                f"{self.name}: connection closed mid-line: {exc.partial!r}"
            ) from None

    async def read_reply(self, *, timeout: float | None = None) -> bytes:
        """Read one full reply: the line, plus ``<body>\\r\\n`` for OK / FOUND / RESERVED."""
        line = await self.read_line(timeout=timeout)
        m = _BODY_REPLY.match(line)
        if m is None:
            return line
        body = await self.read_exactly(int(m.group(1)) + 2, timeout=timeout)
        return line + body

    async def read_yaml(self, *, timeout: float | None = None) -> bytes:
        """Read an ``OK <n>`` reply and return just the payload (without the final CRLF)."""
        reply = await self.read_reply(timeout=timeout)
        assert reply.startswith(b"OK "), f"{self.name}: expected OK <n>, got {reply!r}"
        header, _, rest = reply.partition(b"\r\n")
        assert rest.endswith(b"\r\n"), reply
        payload = rest[:-2]
        assert int(header[3:]) == len(payload), f"length header does not match: {reply!r}"
        loaded = yaml.safe_load(payload)  # every YAML reply must parse
        assert isinstance(loaded, dict | list), f"{self.name}: not a YAML map/list: {reply!r}"
        return payload

    async def read_available(self, idle: float = 0.1) -> bytes:
        """Collect whatever arrives until nothing new came for ``idle`` seconds (or EOF)."""
        buf = bytearray()
        while True:
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), idle)
            except TimeoutError:
                break
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    async def expect_nothing(self, within: float = 0.1) -> None:
        """Assert that no byte arrives (and the connection stays open) for ``within`` s."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(65536), within)
        except TimeoutError:
            return
        if chunk:
            raise AssertionError(f"{self.name}: expected no reply, got {chunk!r}")
        raise AssertionError(f"{self.name}: expected no reply, but the connection was closed")

    async def expect_closed(self, *, timeout: float | None = None) -> None:
        """Assert the server closes the connection without sending anything more."""
        limit = self.timeout if timeout is None else timeout
        try:
            chunk = await asyncio.wait_for(self.reader.read(65536), limit)
        except TimeoutError:
            raise AssertionError(f"{self.name}: connection still open after {limit}s") from None
        except ConnectionResetError:
            return
        assert chunk == b"", f"{self.name}: expected close, got {chunk!r}"

    async def half_close(self) -> None:
        """Shut down our sending side (the server sees EOF / EPOLLRDHUP)."""
        if self.writer.can_write_eof():
            self.writer.write_eof()

    async def close(self) -> None:
        if self.writer.is_closing():
            return
        self.writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
