"""One client socket: bytes in to its Session, the Session's replies out.

Invariants:
- The first bytes decide what the socket speaks: a line starting ``GET `` or ``HEAD `` (no
  beanstalk command starts so) makes it an HTTP connection (``httpd.HttpHandler``), and the
  Session made at accept - which counts in ``current-connections`` like beanstalkd's idle
  connections - is withdrawn from the engine (``Session.withdraw``) before it ran a command.
- Reading stops while the session cannot parse (a reserve waits, output is over the limit,
  the transport is over its own limit) and resumes when that ends (``sync_reading``).
- The connection closes only once its replies are out, none is held for an fsync and no
  reserve waits (``maybe_close``).
- A connection accepted while the server relays (``Server.set_relay``, a cluster follower)
  gets no Session: unless it speaks HTTP, its bytes go to the leader through a
  ``relay.Relay``, and ``Server.set_relay`` with another address closes it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from beanstalk_py.protocol.session import Session
from beanstalk_py.protocol.tracing import TracingSession
from beanstalk_py.shell.metrics import (
    BATCH_BUCKETS,
    BATCH_SAMPLE_MASK,
    COMMAND_NAMES,
    LatencyHistogram,
)

if TYPE_CHECKING:
    from beanstalk_py.shell.httpd import HttpHandler
    from beanstalk_py.shell.relay import Relay
    from beanstalk_py.shell.server import Server

WAIT_INPUT_LIMIT: Final = 65536  # bytes read ahead while a reserve blocks

# HTTP on the beanstalk port (POST: the console's actions); no beanstalk command starts so.
HTTP_METHODS: Final = (b"GET ", b"HEAD ", b"POST ")

conn_log = logging.getLogger("beanstalk_py.conn")


def _not_connected(data: bytes) -> None:
    raise RuntimeError("write before connection_made")


class Connection:
    """One client socket: bytes in to its Session, the Session's replies out.

    An asyncio protocol by its methods (the loop calls them by name); it does not subclass
    ``asyncio.Protocol`` so that mypyc can compile it into a native class.
    """

    __slots__ = (
        "_cont",
        "_first",
        "_reading",
        "_send",
        "_write_paused",
        "eof",
        "http",
        "name",
        "relay",
        "relay_to",
        "server",
        "session",
        "transport",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        # Any: uvloop's transports are no subclass of asyncio.Transport
        self.transport: Any = None
        # transport.write bound once: called per reply batch without a lookup by name
        self._send: Callable[[bytes], Any] = _not_connected
        self.session: Session | None = None
        self._reading = True
        self._write_paused = False
        self.eof = False
        self.name = ""
        self._first: bytes | None = b""  # opening bytes until we know whether this is HTTP
        self.http: HttpHandler | None = None  # once the client spoke HTTP
        self._cont = False  # a _continue is scheduled (output back-pressure)
        # accepted while the server relayed to this leader address: no Session, and a Relay
        # once the first bytes are not HTTP
        self.relay_to: tuple[str, int] | None = None
        self.relay: Relay | None = None

    def connection_made(self, transport: Any) -> None:
        if self.transport is not None:
            # Handed over from the start-up loop (startup.py): same session, the loop's
            # transport; the old one passes on its unsent replies and paused state.
            old = self.transport
            self.transport = transport
            self._send = transport.write
            old.hand_over(transport)
            return
        tr = transport
        if not self.server.admit(tr):
            return  # closed at accept (--max-connections, fd budget, --allow)
        self.transport = tr
        self._send = tr.write
        srv = self.server
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tr.set_write_buffer_limits(high=srv.config.output_limit)
        if srv.relay_address is not None:
            # A follower: the leader's engine serves this client (or httpd does, for HTTP).
            self.relay_to = srv.relay_address
            srv.conns.add(self)
            self._log_accept(transport)
            return
        # -VV: a Session that logs commands and replies, chosen once per connection so that
        # without DEBUG the command path has no logging check at all.
        cls = TracingSession if conn_log.isEnabledFor(logging.DEBUG) else Session
        sess = self.session = cls(srv.engine, srv.pending, srv.auth_token)
        srv.sessions[sess] = self
        sess.set_output_limit(srv.config.output_limit)
        srv.conns.add(self)
        self._log_accept(transport)
        if isinstance(sess, TracingSession):
            sess.peer = self.name

    def _log_accept(self, transport: Any) -> None:
        if conn_log.isEnabledFor(logging.INFO):
            peer = transport.get_extra_info("peername")
            # host:port (IPv4 and IPv6 tuples alike), as log readers and parsers expect
            self.name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "unix")
            conn_log.info("accept %s", self.name)

    def data_received(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.feed(data)
            return
        if self.http is not None:
            self.http.feed(data)
            return
        if self._first is not None:
            # A first line starting "GET ", "HEAD " or "POST " is HTTP.
            data = self._first + data
            if len(data) < 5 and any(m.startswith(data) for m in HTTP_METHODS):
                self._first = data
                return
            self._first = None
            if self.server.config.http and data.startswith(HTTP_METHODS):
                if self.server.early:
                    # The HTTP handler needs the event loop: wait for it (set_ready).
                    self._first = b""
                    self._wait_ready(data)
                    return
                self._become_http(data)
                return
        if self.relay_to is not None:
            if self.server.early:
                # The relay needs the event loop: wait for it (set_ready).
                self._first = b""
                self._wait_ready(data)
                return
            self._become_relay(self.relay_to, data)
            return
        if not self.server.ready:
            # Commands wait for the binlog replay.
            self._wait_ready(data)
            return
        sess = self.session
        assert sess is not None
        srv = self.server
        srv.reads = reads = srv.reads + 1
        if reads & BATCH_SAMPLE_MASK:
            sess.feed(data)
        else:
            # One read in 64 is timed for /metrics; the others pay only the count above.
            t0 = time.perf_counter()
            sess.feed(data)
            elapsed = time.perf_counter() - t0
            srv.batch_latency.observe(elapsed)
            # ...and filed under the read's first command (most clients send one per read)
            word = data[:24].split(b" ", 1)[0].split(b"\r", 1)[0]
            name = COMMAND_NAMES.get(word, "other")
            hist = srv.command_latency.get(name)
            if hist is None:
                hist = srv.command_latency[name] = LatencyHistogram(BATCH_BUCKETS)
            hist.observe(elapsed)
        self.sync_reading()
        self.server.after_input()
        if sess.closing:
            self.maybe_close()

    def _wait_ready(self, data: bytes) -> None:
        """Keep ``data`` and stop reading until ``Server.set_ready`` feeds it back."""
        assert self.transport is not None
        self.transport.pause_reading()
        self.server.wait_ready(self, data)

    def _become_http(self, data: bytes) -> None:
        from beanstalk_py.shell.httpd import HttpHandler

        srv = self.server
        sess = self.session
        assert self.transport is not None
        if sess is not None:
            # Not a beanstalk client after all: it leaves the engine as if it never came. It
            # ran no command, so it has no replies on the pending lists.
            sess.withdraw()
            srv.sessions.pop(sess, None)
            self.session = None
        self.relay_to = None  # answered here: a leader change does not close it
        self.http = HttpHandler(srv, self.transport)
        self.http.feed(data)

    def relay_instead(self, address: tuple[str, int]) -> None:
        """A connection accepted before the server relayed, whose commands wait for a role
        (cluster mode, ``Server.set_relay``): it ran nothing here, so it leaves the engine as
        if it never came and is relayed to ``address`` from its first bytes on."""
        sess = self.session
        if sess is not None:
            sess.withdraw()
            self.server.sessions.pop(sess, None)
            self.session = None
        self.relay_to = address

    def _become_relay(self, address: tuple[str, int], data: bytes) -> None:
        from beanstalk_py.shell.relay import Relay

        srv = self.server
        self.relay = Relay(self, address)
        srv.relayed_current += 1
        srv.relayed_total += 1
        self.relay.start(data)

    def drop_relay(self) -> None:
        """Close this relayed connection (``Server.set_relay``: the leader changed)."""
        self.relay_to = None
        if self.relay is not None:
            self.relay.drop()
        elif self.transport is not None:
            self.transport.close()  # accepted for relaying, sent nothing yet

    def eof_received(self) -> bool | None:
        if self.http is not None:
            return False
        if self.relay is not None:
            return self.relay.on_client_eof()
        if self.session is None:
            return False  # accepted for relaying, sent nothing: nothing to answer
        # A half-closed client ends a blocking reserve with TIMED_OUT (beanstalkd EPOLLRDHUP);
        # what it had pipelined still runs, then the connection closes once replies are out.
        self.eof = True
        sess = self.session
        assert sess is not None
        if sess.waiting:
            self.server.engine.cancel_wait(sess.client)
        self.server.after_input()
        self.maybe_close()
        return True

    def maybe_close(self) -> None:
        sess = self.session
        if (
            sess is not None
            and (sess.closing or self.eof)
            and not sess.out
            and not self.server.group_commit.holds(sess)
            and not sess.waiting
            and not sess.output_full
            and self.transport is not None
        ):
            self.transport.close()

    def sync_reading(self) -> None:
        """Read only while the session can parse and the client keeps up with replies."""
        sess = self.session
        assert sess is not None and self.transport is not None
        if self.eof and sess.waiting:
            self.server.engine.cancel_wait(sess.client)
        # While a reserve waits the socket is still read (so a half-close is seen, as with
        # beanstalkd's EPOLLRDHUP), but only up to a small buffer of pipelined input.
        want = (
            not self._write_paused
            and not sess.closing
            and not sess.output_full
            and not (sess.waiting and sess.buffered > WAIT_INPUT_LIMIT)
        )
        if want != self._reading:
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    @property
    def write_paused(self) -> bool:
        """The transport's buffer is over its limit (the peer is not reading)."""
        return self._write_paused

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.relay is not None:
            self.relay.set_client_full(True)
            return
        self.sync_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.relay is not None:
            self.relay.set_client_full(False)
            return
        if self.session is not None and not self.session.disconnected:
            self.sync_reading()
            if self.session.output_full:
                self._schedule_continue()

    def write(self, data: bytes) -> None:
        self._send(data)
        if self.session is not None and self.session.output_full:
            self._schedule_continue()

    # Output back-pressure: a session stops parsing (``output_full``) once ``output_limit`` bytes
    # of replies are pending, so one read of pipelined commands cannot produce unbounded
    # output. It resumes (on a later loop turn, so other connections get theirs) after its
    # replies were handed to the transport and the transport is not over its own limit.

    def _schedule_continue(self) -> None:
        if not self._cont:
            self._cont = True
            self.server.loop.call_soon(self._continue)

    def _continue(self) -> None:
        self._cont = False
        sess = self.session
        tr = self.transport
        if sess is None or sess.disconnected or not sess.output_full:
            return
        if tr is None or tr.is_closing():
            return
        if self._write_paused or self.server.group_commit.holds(sess):
            return  # resume_writing / the fsync's write call us again
        sess.feed(b"")
        self.sync_reading()
        self.server.after_input()
        if sess.closing or self.eof:
            self.maybe_close()

    def connection_lost(self, exc: Exception | None) -> None:
        srv = self.server
        srv.conns.discard(self)
        if self.http is not None:
            self.http.close()
        if self.relay is not None:
            self.relay.client_lost()
            srv.relayed_current -= 1
            if self.name:
                conn_log.info("close %s", self.name)
        sess = self.session
        if sess is not None:
            sess.close()
            if self.name:
                conn_log.info("close %s", self.name)
            srv.after_input()
            srv.sessions.pop(sess, None)
            srv.group_commit.forget(sess)
