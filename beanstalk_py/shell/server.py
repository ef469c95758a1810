"""The asyncio shell's server: listeners, the one timer and the flush that ends every read.

Order of work after input (``Server.flush``), which is what makes replies safe and cheap:
1. sessions whose blocking reserve ended are resumed (their buffered commands run);
2. binlog records produced by *all* connections are written with one ``write`` (group
   commit, ``commit.GroupCommit``) - with a binlog this step is deferred to ``call_soon`` so
   that every connection read in the same loop iteration shares it;
3. each session's replies go out with one ``transport.write``; with ``-f 0`` they wait until
   an fsync covering their records completed (the fsync runs on a worker thread, so the loop
   keeps reading and the next batch shares the next fsync);
4. the single timer is re-armed for the engine's earliest deadline.

asyncio is imported only where a loop is needed (``start``, ``stop``): until then a ``Server``
may run on startup.EarlyLoop, which answers the first requests while asyncio still imports.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from beanstalk_py.core.clock import Clock
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.restore import restore_many
from beanstalk_py.protocol.session import Pending, Session
from beanstalk_py.shell import listeners, security
from beanstalk_py.shell.commit import GroupCommit
from beanstalk_py.shell.config import Config
from beanstalk_py.shell.connection import Connection
from beanstalk_py.shell.metrics import BATCH_BUCKETS, FSYNC_BUCKETS, LatencyHistogram
from beanstalk_py.system import SystemClock, SystemHost

if TYPE_CHECKING:
    from beanstalk_py.binlog import Binlog, ReplayResult
    from beanstalk_py.console.api import Console
    from beanstalk_py.shell.cluster_status import ClusterStatus
    from beanstalk_py.shell.metrics import Exporter

log = logging.getLogger("beanstalk_py.server")


class Server:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        binlog: Binlog | None = None,
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
            instance_id=os.urandom(8).hex(),  # stats "id", as beanstalkd's random hex
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
        # writes and fsyncs the binlog, holds -f 0 replies until their batch is durable
        self.group_commit = GroupCommit(
            self.clock, lambda: self.loop, self._fail, self.sessions.get
        )
        self.group_commit.attach(binlog, config.fsync_ms)
        self.failed = False
        self.ready = True  # False while the binlog replays: connections wait
        self._not_ready: list[tuple[Connection, bytes]] = []
        self.stopped: Any = None  # an asyncio.Event, created by start()
        # /metrics (metrics.py): reads parsed, a sampled timing of them, binlog fsync timing
        self.reads = 0
        self.metrics_exporter: Exporter | None = None  # metrics.exporter_for() makes it
        self.batch_latency = LatencyHistogram(BATCH_BUCKETS)
        self.command_latency: dict[str, LatencyHistogram] = {}  # sampled, by first command
        self.fsync_latency = LatencyHistogram(FSYNC_BUCKETS)
        # hardening (security.py): admission at accept, TLS on the main listener, token auth
        self.admission = security.Admission(config.max_connections, config.allow)
        self.ssl_context = security.tls_from_config(
            config.tls_cert, config.tls_key, config.tls_client_ca
        )
        self.auth_token: bytes | None = None
        if config.auth_token_file is not None:
            self.auth_token = security.load_token(config.auth_token_file)
        self.console: Console | None = None  # the web console: see console_ready()
        # cluster mode: checked before any reply leaves; False (leadership lost) stops the
        # server without answering (app/node.py sets it on the leader)
        self.fence: Callable[[], bool] | None = None
        self.cluster: ClusterStatus | None = None  # cluster mode: role, epoch, lag
        self._console_timer: Any = None
        # cluster follower: new beanstalk connections are relayed to the leader (set_relay)
        self.relay_address: tuple[str, int] | None = None
        self.relayed_current = 0  # connections relaying now
        self.relayed_total = 0  # connections relayed since start

    @property
    def loop(self) -> Any:  # asyncio.AbstractEventLoop, or startup.EarlyLoop
        if self._loop is None:
            import asyncio

            self._loop = asyncio.get_running_loop()
        return self._loop

    def run_early(self, loop: Any) -> None:
        """Serve on ``loop``, a startup.EarlyLoop, until ``move_to_loop``."""
        self._loop = loop
        self.early = True

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
                        self.protocol_factory, sock=sock, backlog=1024, **tls
                    )
                else:
                    srv = await loop.create_server(
                        self.protocol_factory, sock=sock, backlog=1024, **tls
                    )
                self.servers.append(srv)
        elif cfg.unix_path is not None:
            sock = listeners.bind_unix(cfg.unix_path)
            self.servers.append(
                await loop.create_unix_server(self.protocol_factory, sock=sock, backlog=1024, **tls)
            )
        else:
            sock = listeners.bind_tcp(cfg.host, cfg.port)
            self.servers.append(
                await loop.create_server(self.protocol_factory, sock=sock, backlog=1024, **tls)
            )
        if cfg.plain_listen is not None:
            self.servers.append(await self._listen_plain(cfg.plain_listen))
        for srv in self.servers:
            for sock in srv.sockets:
                log.info("listening on %s", sock.getsockname())
        if cfg.http or cfg.metrics_addr:
            # Set up off the start-up path (the console's imports cost milliseconds); an
            # HTTP request before then sets it up itself.
            self._console_timer = self.loop.call_later(0.5, self.console_ready)

    def console_ready(self) -> Console:
        """The web console (``console_backend.make_console``; starts its rate sampler)."""
        self._console_timer = None
        if self.console is None:
            from beanstalk_py.shell.console_backend import make_console

            self.console = make_console(self)
        return self.console

    def move_to_loop(self, loop: Any) -> None:
        """Continue on ``loop`` what startup.EarlyLoop began: re-arm the timers there."""
        self._loop = loop
        self.early = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = math.inf
        self.group_commit.cancel_timer()
        self._arm_timer()
        if self.binlog is not None:
            self.group_commit.schedule_sync()

    def attach_binlog(self, binlog: Binlog) -> None:
        """Start journaling to ``binlog`` (after replay, before serving commands)."""
        self.binlog = binlog
        self.engine.journal = binlog
        binlog.on_fsync = self.fsync_latency.observe  # called on the fsync worker thread
        self.group_commit.attach(binlog, self.config.fsync_ms)

    def restore(self, result: ReplayResult) -> None:
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

    def set_relay(self, address: tuple[str, int] | None) -> None:
        """Relay new beanstalk connections to the leader at ``address``; None: serve them here.

        A cluster follower calls this on every leader change. Connections accepted while an
        address was set and not answered here as HTTP are closed on any change, as a restart
        of the server they talk to would close them; local sessions stay as they are.
        """
        if address == self.relay_address:
            return
        self.relay_address = address
        dropped = [c for c in self.conns if c.relay_to is not None]
        for conn in dropped:
            conn.drop_relay()
        where = f"{address[0]}:{address[1]}" if address is not None else "none (served here)"
        log.info("relay: new connections to %s; closed %d relayed", where, len(dropped))
        if address is not None and not self.ready:
            # Cluster mode before this node serves: connections accepted while no leader was
            # known have run nothing here (their commands wait for a role); relay them too.
            waiting = {conn: data for conn, data in self._not_ready}
            self._not_ready = []
            for conn in [c for c in self.conns if c.session is not None]:
                conn.relay_instead(address)
            for conn, data in waiting.items():
                if conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.resume_reading()
                    conn.data_received(data)

    def protocol_factory(self) -> Any:  # a Connection (asyncio wants a BaseProtocol type)
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
            return await self.loop.create_unix_server(
                self.protocol_factory, sock=sock, backlog=1024
            )
        host, port = listeners.split_host_port(addr)
        sock = listeners.bind_tcp(host, port)
        return await self.loop.create_server(self.protocol_factory, sock=sock, backlog=1024)

    @property
    def rejected_connections(self) -> int:
        """Connections closed at accept (--max-connections, fd budget, --allow)."""
        return self.admission.rejected

    def admit(self, tr: Any) -> bool:
        """Accept-time gate (on a TLS listener: once the handshake is done); False: closed."""
        if self.admission.check(tr.get_extra_info("peername"), len(self.conns)):
            return True
        tr.close()
        return False

    async def stop(self) -> None:
        """Stop accepting, write what is pending, close every connection."""
        for srv in self.servers:
            srv.close()
        self.flush()
        await self.group_commit.release_held()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        for srv in self.servers:
            await srv.wait_closed()
        if self._timer is not None:
            self._timer.cancel()
        self.group_commit.cancel_timer()
        if self._console_timer is not None:
            self._console_timer.cancel()
        if self.console is not None:
            self.console.rates.stop()

    # --- the flush after every read ---------------------------------------------------

    def after_input(self) -> None:
        if self.group_commit.pending:
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
        commit = self.group_commit
        if commit.pending and not commit.commit():
            return
        dirty = pending.dirty
        if dirty:
            fence = self.fence
            if fence is not None and not fence():
                self._fail(ConnectionAbortedError("this node is no longer the cluster leader"))
                return
            pending.dirty = []
            unsynced = commit.unsynced()
            held = commit.held
            for sess in dirty:
                data = sess.take_output()
                conn = sessions.get(sess)
                if not data or conn is None or conn.transport is None:
                    continue
                if unsynced or sess in held:
                    commit.hold(sess, data)
                else:
                    conn.write(data)
                conn.maybe_close()
        commit.after_flush()
        self._arm_timer()

    def wait_ready(self, conn: Connection, data: bytes) -> None:
        """Keep ``data`` of ``conn`` (its reading is paused) until ``set_ready``."""
        self._not_ready.append((conn, data))

    def _fail(self, exc: BaseException) -> None:
        log.critical("journal failed, stopping without acknowledging: %s", exc)
        self.failed = True
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        for srv in self.servers:
            srv.close()
        if self.stopped is not None:
            self.stopped.set()

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
