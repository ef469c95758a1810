"""Relay of a follower's beanstalk connection to the leader: bytes both ways, unchanged.

A cluster follower serves a client by passing its bytes to a TCP connection to the leader's
advertised address (``Server.set_relay``) and the leader's bytes back. The follower's engine is
not involved: a relayed connection has no ``Session``, so it counts in no engine statistic.

Invariants:
- Bytes keep their order: what the client sends before the leader connection is made is kept
  (``_pending``) and written first.
- Back-pressure both ways: the client is not read while more than ``RELAY_BUFFER`` bytes wait
  for the leader (before the connection is made, or in the leader transport's buffer), and the
  leader is not read while the client transport's buffer is over its limit. Neither buffer
  grows past its limit by more than one read.
- A half-close of the client reaches the leader (``write_eof``) after the bytes before it, so
  pipelined commands still get their replies; the leader's EOF or close closes the client once
  the replies before it are written. Either side lost closes the other.
- A failed or timed-out connect to the leader closes the client at once (one INFO line).
- ``drop`` (a leadership change) ends both sides as a restart of the server would: the leader
  connection is aborted, the client is closed after the replies already received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beanstalk_py.shell.connection import Connection

RELAY_BUFFER = 256 * 1024  # bytes buffered per direction before the sending side is paused
CONNECT_TIMEOUT = 3.0  # seconds for the TCP connect to the leader

log = logging.getLogger("beanstalk_py.relay")


class Relay:
    """One client connection relayed to ``address``; owned by its ``Connection``."""

    __slots__ = (
        "_client_full",
        "_client_reading",
        "_connect",
        "_pending",
        "_pending_size",
        "address",
        "client",
        "client_eof",
        "conn",
        "done",
        "upstream",
        "upstream_full",
    )

    def __init__(self, conn: Connection, address: tuple[str, int]) -> None:
        self.conn = conn
        self.client: Any = conn.transport  # asyncio's or uvloop's transport
        self.address = address
        self.upstream: Any = None  # the transport to the leader, once connected
        self._pending: list[bytes] = []  # client bytes before the leader connection is made
        self._pending_size = 0
        self._connect: asyncio.Task[Any] | None = None
        self._client_reading = True
        self._client_full = False  # the client transport's buffer is over its limit
        self.upstream_full = False  # the leader transport's buffer is over its limit
        self.client_eof = False
        self.done = False  # closed (either side gone, or dropped): no more relaying
        self.client.set_write_buffer_limits(high=RELAY_BUFFER)

    def start(self, data: bytes) -> None:
        """Begin: connect to the leader, with the client's first bytes ``data`` to send."""
        self.feed(data)
        self._connect = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        host, port = self.address
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: Upstream(self), host, port), CONNECT_TIMEOUT
            )
        except Exception as exc:  # refused, unreachable, timed out, bad name: all alike
            if not self.done:
                reason = str(exc) or type(exc).__name__
                log.info(
                    "relay %s: cannot connect to leader %s:%d: %s", self._who(), host, port, reason
                )
                self._close_client()

    def _who(self) -> str:
        peer = self.client.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "unix")

    # --- client -> leader -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the client."""
        if self.done:
            return
        if self.upstream is not None:
            self.upstream.write(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        self._sync_client_reading()

    def on_client_eof(self) -> bool:
        """The client half-closed: pass it on after its bytes. Returns eof_received's answer."""
        self.client_eof = True
        if self.upstream is not None:
            self._upstream_eof_out()
        return True  # keep the client open for the replies still to come

    def _upstream_eof_out(self) -> None:
        if self.upstream.can_write_eof():
            self.upstream.write_eof()
        else:
            self.upstream.close()

    def _sync_client_reading(self) -> None:
        want = not self.done and not self.upstream_full and self._pending_size <= RELAY_BUFFER
        if want != self._client_reading and not self.client.is_closing():
            self._client_reading = want
            if want:
                self.client.resume_reading()
            else:
                self.client.pause_reading()

    # --- leader side (called by Upstream) ---------------------------------------------

    def upstream_made(self, transport: Any) -> None:
        if self.done:
            transport.abort()
            return
        self.upstream = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=RELAY_BUFFER)
        if self._client_full:
            transport.pause_reading()
        pending = self._pending
        self._pending = []
        self._pending_size = 0
        if pending:
            transport.write(b"".join(pending))
        if self.client_eof:
            self._upstream_eof_out()
        self._sync_client_reading()

    def from_upstream(self, data: bytes) -> None:
        if not self.done:
            self.client.write(data)

    def upstream_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.done:
            log.info("relay %s: leader connection lost: %s", self._who(), exc)
        self._close_client()

    def set_upstream_full(self, full: bool) -> None:
        self.upstream_full = full
        self._sync_client_reading()

    # --- leader -> client back-pressure (called by Connection) ------------------------

    def set_client_full(self, full: bool) -> None:
        self._client_full = full
        up = self.upstream
        if up is not None and not up.is_closing():
            if full:
                up.pause_reading()
            else:
                up.resume_reading()

    # --- ending -----------------------------------------------------------------------

    def _close_client(self) -> None:
        """The leader side ended: close the client once its replies are written."""
        self.done = True
        self.client.close()

    def client_lost(self) -> None:
        """The client connection is gone: close the leader side after what it still has."""
        self.done = True
        if self.upstream is not None:
            self.upstream.close()
        elif self._connect is not None:
            self._connect.cancel()

    def drop(self) -> None:
        """The leader changed: abort the leader side, close the client (as a restart would)."""
        self.done = True
        if self.upstream is not None:
            self.upstream.abort()
        elif self._connect is not None:
            self._connect.cancel()
        self.client.close()

    def buffered(self) -> tuple[int, int]:
        """Bytes waiting here: (client -> leader, leader -> client)."""
        up = self._pending_size
        if self.upstream is not None:
            up += self.upstream.get_write_buffer_size()
        return up, self.client.get_write_buffer_size()


class Upstream(asyncio.Protocol):
    """The relay's connection to the leader (an asyncio protocol)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay.upstream_made(transport)

    def data_received(self, data: bytes) -> None:
        self.relay.from_upstream(data)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost closes the client

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.upstream_lost(exc)

    def pause_writing(self) -> None:
        self.relay.set_upstream_full(True)

    def resume_writing(self) -> None:
        self.relay.set_upstream_full(False)
