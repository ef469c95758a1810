"""The asyncio shell: listeners, connections, the one timer and the flush that ends every read.

Order of work after input (``Server.flush``), which is what makes replies safe and cheap:
1. sessions whose blocking reserve ended are resumed (their buffered commands run);
2. binlog records produced by *all* connections are written with one ``write`` (group
   commit) - with a binlog this step is deferred to ``call_soon`` so that every connection
   read in the same loop iteration shares it;
3. each session's replies go out with one ``transport.write``; with ``-f 0`` they wait until
   an fsync covering their records completed (the fsync runs on a worker thread, so the loop
   keeps reading and the next batch shares the next fsync);
4. the single timer is re-armed for the engine's earliest deadline.

asyncio is imported only where a loop is needed (``start``, ``stop``): until then a ``Server``
may run on startup.EarlyLoop, which answers the first requests while asyncio still imports.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import time
from typing import Any

from beanstalk_py.core.clock import Clock
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.restore import restore_many
from beanstalk_py.protocol.session import Pending, Session
from beanstalk_py.protocol.trace import TracingSession
from beanstalk_py.shell import listeners, security
from beanstalk_py.shell.config import Config
from beanstalk_py.shell.metrics import (
    BATCH_BUCKETS,
    BATCH_SAMPLE_MASK,
    COMMAND_NAMES,
    FSYNC_BUCKETS,
    LatencyHistogram,
)
from beanstalk_py.system import SystemClock, SystemHost

WAIT_INPUT_LIMIT = 65536  # bytes read ahead while a reserve blocks

log = logging.getLogger("beanstalk_py.server")
conn_log = logging.getLogger("beanstalk_py.conn")


class Connection:
    """One client socket: bytes in to its Session, the Session's replies out.

    An asyncio protocol by its methods (the loop calls them by name); it does not subclass
    ``asyncio.Protocol`` so that mypyc can compile it into a native class.
    """

    __slots__ = (
        "_cont",
        "_first",
        "_reading",
        "_write_blocked",
        "eof",
        "http",
        "name",
        "server",
        "session",
        "transport",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        # Any: uvloop's transports are no subclass of asyncio.Transport
        self.transport: Any = None
        self.session: Session | None = None
        self._reading = True
        self._write_blocked = False
        self.eof = False
        self.name = ""
        self._first: bytes | None = b""  # opening bytes until we know whether this is HTTP
        self.http: Any = None  # an http.HttpHandler once the client spoke HTTP
        self._cont = False  # a _continue is scheduled (output back-pressure)

    def connection_made(self, transport: Any) -> None:
        if self.transport is not None:
            # Handed over from the start-up loop (startup.py): same session, the loop's
            # transport; the old one passes on its unsent replies and paused state.
            old = self.transport
            self.transport = transport
            old.hand_over(transport)
            return
        tr = transport
        if not self.server.admit(tr):
            return  # closed at accept (--max-connections, fd budget, --allow)
        self.transport = tr
        srv = self.server
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tr.set_write_buffer_limits(high=srv.config.output_limit)
        # -VV: a Session that logs commands and replies, chosen once per connection so that
        # without DEBUG the command path has no logging check at all.
        cls = TracingSession if conn_log.isEnabledFor(logging.DEBUG) else Session
        sess = self.session = cls(srv.engine, srv.pending, srv.auth_token)
        srv.sessions[sess] = self
        sess.set_output_limit(srv.config.output_limit)
        srv.conns.add(self)
        if conn_log.isEnabledFor(logging.INFO):
            peer = transport.get_extra_info("peername")
            # host:port (IPv4 and IPv6 tuples alike), as log readers and parsers expect
            self.name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "unix")
            conn_log.info("accept %s", self.name)
        if isinstance(sess, TracingSession):
            sess.peer = self.name

    def data_received(self, data: bytes) -> None:
        if self.http is not None:
            self.http.feed(data)
            return
        if self._first is not None:
            # A first line starting "GET " or "HEAD " is HTTP (no beanstalk command starts so).
            data = self._first + data
            if len(data) < 5 and (b"GET ".startswith(data) or b"HEAD ".startswith(data)):
                self._first = data
                return
            self._first = None
            if self.server.config.http and data.startswith((b"GET ", b"HEAD ")):
                if self.server.early:
                    # The HTTP handler needs the event loop: wait for it (set_ready).
                    self._first = b""
                    self._wait_ready(data)
                    return
                self._become_http(data)
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
        self.server._not_ready.append((self, data))

    def _become_http(self, data: bytes) -> None:
        from beanstalk_py.shell.httpd import HttpHandler

        srv = self.server
        sess = self.session
        assert sess is not None and self.transport is not None
        # Not a beanstalk client after all: it must not show in the protocol's counters.
        sess.close()
        srv.engine.total_conns -= 1
        srv.pending.dirty = [s for s in srv.pending.dirty if s is not sess]
        srv.sessions.pop(sess, None)
        self.http = HttpHandler(srv, self.transport)
        self.http.feed(data)

    def eof_received(self) -> bool | None:
        if self.http is not None:
            return False
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
            and not sess.held
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
            not self._write_blocked
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

    def pause_writing(self) -> None:
        self._write_blocked = True
        self.sync_reading()

    def resume_writing(self) -> None:
        self._write_blocked = False
        if self.session is not None and not self.session.disconnected:
            self.sync_reading()
            if self.session.output_full:
                self._schedule_continue()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
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
        if self._write_blocked or sess.held:
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
        sess = self.session
        if sess is not None:
            sess.close()
            if self.name:
                conn_log.info("close %s", self.name)
            srv.after_input()
            srv.sessions.pop(sess, None)


class Server:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        binlog: Any = None,
        loop: Any = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.binlog = binlog
        self.engine = Engine(
            self.clock,
            binlog,
            max_job_size=config.max_job_size,
            max_jobs=config.max_jobs,
            max_job_bytes=config.max_job_bytes,
            binlog_max_size=config.binlog_size,
            host=SystemHost(),
        )
        self.conns: set[Connection] = set()
        # sessions with output or a finished reserve, and each session's connection
        self.pending = Pending()
        self.sessions: dict[Session, Connection] = {}
        self.servers: list[Any] = []  # asyncio or uvloop Server objects
        self._loop = loop  # an asyncio loop, or startup.EarlyLoop until asyncio is imported
        self.early = False  # on startup.EarlyLoop: HTTP on this port waits for the real loop
        self._flush_pending = False
        self._timer: Any = None  # the one TimerHandle (asyncio's or uvloop's)
        self._timer_when = math.inf
        # -f 0: replies wait in Session.held until the binlog batch they follow is durable
        self._always_sync = binlog is not None and config.fsync_ms == 0
        self._written_seq = 0
        self._durable_seq = 0
        self._held: set[Session] = set()
        self._syncing = False
        self._sync_timer: Any = None
        self._sync_future: Any = None  # the fsync running on a worker thread, if any
        self.failed = False
        self.ready = True  # False while the binlog replays: connections wait
        self._not_ready: list[tuple[Connection, bytes]] = []
        self.stopped: Any = None  # an asyncio.Event, created by start()
        # /metrics (metrics.py): reads parsed, a sampled timing of them, binlog fsync timing
        self.reads = 0
        self._metrics_exporter: Any = None  # metrics.exporter_for() creates it on first scrape
        self.batch_latency = LatencyHistogram(BATCH_BUCKETS)
        self.command_latency: dict[str, LatencyHistogram] = {}  # sampled, by first command
        self.fsync_latency = LatencyHistogram(FSYNC_BUCKETS)
        # hardening (security.py): the accept gate, TLS on the main listener, token auth
        self.gate = security.Gate(config.max_connections, config.allow)
        self.ssl_context = security.tls_from_config(
            config.tls_cert, config.tls_key, config.tls_client_ca
        )
        self.auth_token: bytes | None = None
        if config.auth_token_file is not None:
            self.auth_token = security.load_token(config.auth_token_file)

    @property
    def loop(self) -> Any:  # asyncio.AbstractEventLoop, or startup.EarlyLoop
        if self._loop is None:
            import asyncio

            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def port(self) -> int:
        for srv in self.servers:
            for sock in srv.sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    return int(sock.getsockname()[1])
        return 0

    # --- listening --------------------------------------------------------------------

    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        """Listen on ``sockets`` (pre-bound, e.g. systemd's) or on the configured address."""
        import asyncio

        if self.stopped is None:
            self.stopped = asyncio.Event()
        loop = self.loop
        cfg = self.config
        tls = self._tls()
        if sockets:
            for sock in sockets:
                if sock.family == socket.AF_UNIX:
                    srv = await loop.create_unix_server(
                        self._protocol, sock=sock, backlog=1024, **tls
                    )
                else:
                    srv = await loop.create_server(self._protocol, sock=sock, backlog=1024, **tls)
                self.servers.append(srv)
        elif cfg.unix_path is not None:
            sock = listeners.bind_unix(cfg.unix_path)
            self.servers.append(
                await loop.create_unix_server(self._protocol, sock=sock, backlog=1024, **tls)
            )
        else:
            sock = listeners.bind_tcp(cfg.host, cfg.port)
            self.servers.append(
                await loop.create_server(self._protocol, sock=sock, backlog=1024, **tls)
            )
        if cfg.plain_listen is not None:
            self.servers.append(await self._listen_plain(cfg.plain_listen))
        for srv in self.servers:
            for sock in srv.sockets:
                log.info("listening on %s", sock.getsockname())

    def move_to_loop(self, loop: Any) -> None:
        """Continue on ``loop`` what startup.EarlyLoop began: re-arm the timers there."""
        self._loop = loop
        self.early = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = math.inf
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        self._arm_timer()
        if self.binlog is not None:
            self._schedule_sync()

    def attach_binlog(self, binlog: Any) -> None:
        """Start journaling to ``binlog`` (after replay, before serving commands)."""
        self.binlog = binlog
        self.engine.journal = binlog
        if hasattr(binlog, "on_fsync"):
            binlog.on_fsync = self.fsync_latency.observe  # called on the fsync worker thread
        self._always_sync = self.config.fsync_ms == 0

    def restore(self, result: Any) -> None:
        """Load the jobs a binlog replay built (``ReplayResult``) into the engine, in bulk.

        Run on the loop thread; the replay itself may have run in a worker thread. The jobs
        are the binlog's own bookkeeping too (``job.file``, ``job.log_meta``), so nothing
        has to be linked back."""
        restore_many(self.engine, result.by_id, result.tubes, result.buried, result.next_id)

    def set_ready(self) -> None:
        """Replay is over: serve the connections that arrived meanwhile."""
        self.ready = True
        waiting = self._not_ready
        self._not_ready = []
        for conn, data in waiting:
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.resume_reading()
                conn.data_received(data)

    def _protocol(self) -> Any:  # a Connection (asyncio wants a BaseProtocol type)
        return Connection(self)

    def _tls(self) -> dict[str, Any]:
        """create_server arguments for the main listener: TLS when configured."""
        if self.ssl_context is None:
            return {}
        return {"ssl": self.ssl_context, "ssl_handshake_timeout": security.TLS_HANDSHAKE_TIMEOUT}

    async def _listen_plain(self, addr: str) -> Any:
        """The --plain-listen listener: ``HOST:PORT``, ``[V6]:PORT`` or ``unix:PATH``."""
        if addr.startswith("unix:"):
            sock = listeners.bind_unix(addr[5:])
            return await self.loop.create_unix_server(self._protocol, sock=sock, backlog=1024)
        host, port = security.split_host_port(addr)
        sock = listeners.bind_tcp(host, port)
        return await self.loop.create_server(self._protocol, sock=sock, backlog=1024)

    @property
    def rejected_connections(self) -> int:
        """Connections closed at accept (--max-connections, fd budget, --allow)."""
        return self.gate.rejected

    def admit(self, tr: Any) -> bool:
        """Accept-time gate (on a TLS listener: once the handshake is done); False: closed."""
        if self.gate.check(tr.get_extra_info("peername"), len(self.conns)):
            return True
        tr.close()
        return False

    async def stop(self) -> None:
        """Stop accepting, write what is pending, close every connection."""
        for srv in self.servers:
            srv.close()
        self.flush()
        await self._release_held()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        for srv in self.servers:
            await srv.wait_closed()
        if self._timer is not None:
            self._timer.cancel()
        if self._sync_timer is not None:
            self._sync_timer.cancel()

    # --- the flush after every read ---------------------------------------------------

    def after_input(self) -> None:
        binlog = self.binlog
        if binlog is not None and binlog.pending:
            if not self._flush_pending:
                self._flush_pending = True
                self.loop.call_soon(self.flush)
            return
        self.flush()

    def flush(self) -> None:
        self._flush_pending = False
        pending = self.pending
        sessions = self.sessions
        while pending.resumed:
            resumed = pending.resumed
            pending.resumed = []
            for sess in resumed:
                conn = sessions.get(sess)
                if sess.disconnected or conn is None:
                    continue
                sess.feed(b"")
                conn.sync_reading()
        binlog = self.binlog
        if binlog is not None and binlog.pending and not self._commit():
            return
        dirty = pending.dirty
        if dirty:
            pending.dirty = []
            unsynced = self._always_sync and self._written_seq > self._durable_seq
            for sess in dirty:
                data = sess.take_output()
                conn = sessions.get(sess)
                if not data or conn is None or conn.transport is None:
                    continue
                if unsynced or sess.held:
                    sess.held.append((self._written_seq, data))
                    self._held.add(sess)
                else:
                    conn.write(data)
                conn.maybe_close()
        if self._held and not self._syncing:
            self._start_fsync()
        self._arm_timer()

    def _commit(self) -> bool:
        """Write the binlog batch; on failure stop serving (no reply may claim success)."""
        try:
            self._written_seq = self.binlog.write_pending()
        except OSError as exc:
            self._fail(exc)
            return False
        if self.binlog.sync_deadline() is not None and not self._always_sync:
            self._schedule_sync()
        return True

    def _fail(self, exc: BaseException) -> None:
        log.critical("binlog write failed, stopping without acknowledging: %s", exc)
        self.failed = True
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        for srv in self.servers:
            srv.close()
        if self.stopped is not None:
            self.stopped.set()

    # --- fsync ------------------------------------------------------------------------

    def _schedule_sync(self) -> None:
        deadline = self.binlog.sync_deadline()
        if deadline is None or self._syncing:
            return
        delay = deadline - self.clock.now()
        if delay <= 0:
            self._start_fsync()
        elif self._sync_timer is None:
            self._sync_timer = self.loop.call_later(delay, self._sync_timer_fired)

    def _sync_timer_fired(self) -> None:
        self._sync_timer = None
        self._schedule_sync()

    def _start_fsync(self) -> None:
        self._syncing = True
        fut = self.loop.run_in_executor(None, self.binlog.fsync)
        fut.add_done_callback(self._fsync_done)
        self._sync_future = fut

    async def _release_held(self) -> None:
        """At stop, -f 0 replies held for an fsync are in flight: sync, then send them."""
        import asyncio

        while self._held and not self.failed:
            if not self._syncing:
                self._start_fsync()
            # _fsync_done was added first, so it has run (and released) when this wakes up.
            await asyncio.wait([self._sync_future])

    def _fsync_done(self, fut: Any) -> None:
        self._syncing = False
        exc = fut.exception()
        if exc is not None:
            self._fail(exc)
            return
        self._durable_seq = max(self._durable_seq, fut.result())
        durable = self._durable_seq
        for sess in list(self._held):
            conn = self.sessions.get(sess)
            held = sess.held
            i = 0
            while i < len(held) and held[i][0] <= durable:
                i += 1
            if i and conn is not None and conn.transport is not None:
                conn.write(b"".join(chunk for _, chunk in held[:i]))
            del held[:i]
            if not held:
                self._held.discard(sess)
                if conn is not None:
                    conn.maybe_close()
        if self.binlog.gc_due and not self._commit():
            return  # segment removal waited for this fsync; don't wait for the next put
        if self._held or (self.binlog.pending or self._written_seq > durable):
            if self._always_sync and self._held:
                self._start_fsync()
            else:
                self._schedule_sync()

    # --- the one timer ----------------------------------------------------------------

    def _arm_timer(self) -> None:
        when = self.engine.next_deadline()
        if when is None or when >= self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
        # +1 ms: uvloop's clock has millisecond resolution and may fire a hair early.
        delay = max(0.0, when - self.clock.now()) + 0.001
        self._timer = self.loop.call_later(delay, self._on_timer)
        self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = math.inf
        self.engine.tick()
        self.after_input()

    def advance(self, seconds: float) -> None:
        """Test hook: move a ManualClock forward and run what became due."""
        self.clock.advance(seconds)  # type: ignore[attr-defined]
        self.engine.tick()
        self.flush()
