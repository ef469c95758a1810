"""Process lifecycle: bind, drop privileges, open and replay the binlog, serve, stop.

The order is beanstalkd's (main.c): the socket is bound first, so clients can connect while
the binlog replays (they wait until it is done), then ``-u`` drops privileges *before* the
binlog is opened, so its files belong to the unprivileged user.
Binlog replay: the segment files are read and the ``Job`` objects built in a worker thread
(``/readyz`` answers 503 meanwhile); the engine is filled in bulk on the loop thread
(``Server.restore`` -> ``Engine.restore_many``), then commands are served.
Before that, in the plain case, startup.py answers the first requests while asyncio and uvloop
are imported, then hands the sockets and the same Server to the loop.
SIGTERM/SIGINT stop gracefully: stop accepting, answer what is in flight, write and fsync the
binlog, exit 0 (also as PID 1). SIGUSR1 turns on drain mode.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from beanstalk_py.shell.config import Config
from beanstalk_py.shell.server import Server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from beanstalk_py.binlog import Binlog, ReplayResult
    from beanstalk_py.shell.startup import Early

log = logging.getLogger("beanstalk_py.server")

EXIT_SOCKET = 111  # beanstalkd: cannot listen
EXIT_LOCK = 10  # beanstalkd: binlog directory locked
EXIT_USER = 33  # beanstalkd: -u names no such user
EXIT_SETUID = 34
EXIT_BINLOG = 1
GC_THRESHOLD = 20_000  # allocations between young-generation collections (default 700)


class StartupError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def run(config: Config, prebound: socket.socket | None = None) -> int:
    """Serve until a signal stops us; return the process exit code.

    ``prebound``: the listening socket entry.py bound before the heavy imports, if any."""
    from beanstalk_py import __version__
    from beanstalk_py.shell.build_info import core_kind

    # Shown with -V: an operator (and the image test) can see which core is running.
    log.info("beanstalk-py %s (core: %s)", __version__, core_kind())
    try:
        early = serve_early(config, prebound)
    except StartupError as exc:
        log.error("%s", exc)
        return exc.code
    if early is not None and early.server.failed:
        return EXIT_BINLOG
    import asyncio

    from beanstalk_py.shell.loops import loop_factory

    loop = loop_factory()()
    asyncio.set_event_loop(loop)
    try:
        code = loop.run_until_complete(serve(config, early, None if early else prebound))
    except StartupError as exc:
        log.error("%s", exc)
        return exc.code
    finally:
        loop.close()
    if config.cluster is not None and code == RESTART_CODE:
        restart_process()
    return code


RESTART_CODE = -1  # app/node.py's RESTART: lost leadership or fell behind compaction


def restart_process() -> None:
    """Start this process again with the same command line (cluster mode: a node that lost
    leadership comes back as a fresh follower, as a restarted beanstalkd would)."""
    import sys

    time.sleep(0.2)  # a node that fails at once (etcd unreachable) must not spin
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execv(sys.executable, sys.orig_argv)


def new_server(config: Config) -> Server:
    from beanstalk_py.shell import security

    security.raise_fd_limit()  # before Server: its connection budget is derived from it
    try:
        return Server(config)
    except security.SecurityConfigError as exc:
        raise StartupError(str(exc), 5) from None  # 5: the CLI's usage-error code


def serve_early(config: Config, listener: socket.socket | None) -> Early | None:
    """Answer on the socket entry.py bound until the event loop is imported (startup.py).

    Returns a ``startup.Early`` to hand over to the loop, or None when not in the plain case."""
    from beanstalk_py.shell import startup

    if listener is None or not startup.eligible(config):
        return None
    server = new_server(config)

    def replay() -> Binlog:
        binlog = lock_binlog(server, config)
        with replay_errors(binlog, config):
            result = binlog.replay(dict(server.engine.tubes))
        restore(server, binlog, result)
        return binlog

    return startup.serve_early(server, listener, replay if config.binlog_dir else None)


def inherited_sockets(config: Config, prebound: socket.socket | None) -> list[socket.socket] | None:
    from beanstalk_py.app import systemd

    if prebound is not None:
        return [prebound]

    ignored = []
    if config.unix_path is not None:
        ignored.append(f"-l unix:{config.unix_path}")
    elif config.host is not None:
        ignored.append(f"-l {config.host}")
    if config.port_given:
        ignored.append(f"-p {config.port}")
    try:
        sock, warnings = systemd.inherited_listener(ignored)
    except systemd.InheritedSocketError as exc:
        raise StartupError(f"inherited socket: {exc}", EXIT_SOCKET) from exc
    for w in warnings:
        log.warning("%s", w)
    return [sock] if sock is not None else None


def import_lazy_modules() -> None:
    import importlib

    for name in (
        "beanstalk_py.binlog",
        "beanstalk_py.binlog.replay",
        "beanstalk_py.shell.httpd",
        "beanstalk_py.shell.metrics",
        "prometheus_client",
        "prometheus_client.core",
        "prometheus_client.exposition",
    ):
        importlib.import_module(name)


def drop_privileges(user: str) -> None:
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise StartupError(f"getpwnam({user!r}): no such user", EXIT_USER) from None
    try:
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError as exc:
        raise StartupError(f"cannot become {user}: {exc}", EXIT_SETUID) from exc


async def serve(
    config: Config, early: Early | None = None, prebound: socket.socket | None = None
) -> int:
    import asyncio

    loop = asyncio.get_running_loop()
    if early is not None:
        server = early.server
    else:
        server = new_server(config)
        server.ready = False
    try:
        if early is not None:
            await early.hand_over()
        else:
            await server.start(inherited_sockets(config, prebound))
    except OSError as exc:
        raise StartupError(f"cannot listen: {exc}", EXIT_SOCKET) from exc
    metrics_srv = None
    if config.metrics_addr:
        # Bound before -u and before replay: /readyz answers 503 while the binlog replays.
        from beanstalk_py.shell.httpd import start_metrics_listener

        try:
            metrics_srv = await start_metrics_listener(server, config.metrics_addr)
        except (OSError, ValueError) as exc:
            raise StartupError(f"--metrics-addr: cannot listen: {exc}", EXIT_SOCKET) from exc
    if config.user:
        # Modules imported lazily later (binlog, HTTP, metrics) are loaded now: once we are
        # USER the installation directory may no longer be readable.
        import_lazy_modules()
        drop_privileges(config.user)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _drain, server)
    for signum in early.signals if early is not None else ():
        signal.raise_signal(signum)  # received while startup.py served
    binlog = early.binlog if early is not None else None
    if config.binlog_dir is not None and early is None:
        binlog = await open_binlog(server, config)
    if config.cluster is not None:
        return await serve_cluster(server, config, binlog, stop, metrics_srv)
    server.set_ready()
    tune_gc()
    log.info("ready (pid %d)", os.getpid())
    from beanstalk_py.app import systemd

    systemd.ready()
    stopped = server.stopped
    assert stopped is not None
    waiter = asyncio.ensure_future(stopped.wait())
    await asyncio.wait([asyncio.ensure_future(stop.wait()), waiter], return_when="FIRST_COMPLETED")
    systemd.stopping()
    log.info("shutting down")
    if metrics_srv is not None:
        metrics_srv.close()
    await server.stop()
    if binlog is not None and not server.failed:
        try:
            binlog.close()
        except OSError as exc:
            log.error("binlog close failed: %s", exc)
            return EXIT_BINLOG
    return EXIT_BINLOG if server.failed else 0


def tune_gc() -> None:
    """Everything loaded so far (modules, replayed jobs) lives for the whole run: keep the
    cyclic collector from walking it again and again, and let it run less often (jobs, the
    bulk of allocations, hold no cycles). Cluster nodes too: with the default thresholds
    py-spy put a quarter of a busy leader's samples in the collector (docs/CLUSTER.md)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


async def serve_cluster(
    server: Server, config: Config, binlog: Binlog | None, stop: Any, metrics_srv: Any
) -> int:
    """Cluster mode (app/node.py): commands are relayed to the leader, or served once this
    node leads (``set_ready`` on promotion)."""
    from beanstalk_py.app.node import RESTART, Node

    node = Node(server, config, binlog)
    server.engine.stats_extra = node.status.stats_lines
    log.info("cluster node %s (%s), etcd %s", config.node_id, config.advertise, node.cluster.url())
    from beanstalk_py.app import systemd

    systemd.ready()
    tune_gc()
    try:
        code = await node.run(stop)
    except OSError as exc:
        log.error("cluster: %s", exc)
        code = EXIT_BINLOG
    systemd.stopping()
    if metrics_srv is not None:
        metrics_srv.close()
    if code == RESTART:
        server.failed = True  # nothing more is acknowledged; close without the held replies
    await server.stop()
    if binlog is not None:
        try:
            binlog.close()
        except OSError as exc:
            log.error("binlog close failed: %s", exc)
    return code


def _drain(server: Server) -> None:
    if not server.engine.draining:
        log.info("entering drain mode")
    server.engine.drain()


async def open_binlog(server: Server, config: Config) -> Binlog:
    import asyncio

    binlog = lock_binlog(server, config)
    if config.cluster is not None:
        from beanstalk_py.app.node import set_aside_previous_segments

        # The etcd log is the truth: this node's state is rebuilt from it (app/node.py).
        assert config.binlog_dir is not None
        if moved := set_aside_previous_segments(config.binlog_dir):
            log.info("cluster: %d earlier binlog segment(s) moved to previous/", moved)
    # Reading the files and building the Job objects happens on a worker thread, so /readyz
    # keeps answering (503) meanwhile; it only reads a snapshot of the engine's tubes. The
    # engine is then filled in bulk on the loop thread (server.restore -> restore_many).
    tubes = dict(server.engine.tubes)
    with replay_errors(binlog, config):
        result = await asyncio.get_running_loop().run_in_executor(None, binlog.replay, tubes)
    restore(server, binlog, result)
    return binlog


@contextlib.contextmanager
def replay_errors(binlog: Binlog, config: Config) -> Iterator[None]:
    """A replay that cannot read its files is a one-line start-up error, not a traceback."""
    try:
        yield
    except OSError as exc:
        with contextlib.suppress(OSError):
            binlog.close()  # releases the lock; its own errors add nothing to the reason
        raise StartupError(
            f"cannot replay binlog in {config.binlog_dir}: {exc}", EXIT_BINLOG
        ) from exc


def lock_binlog(server: Server, config: Config) -> Binlog:
    from beanstalk_py.binlog import Binlog, BinlogLocked

    assert config.binlog_dir is not None
    try:
        binlog = Binlog.open(
            config.binlog_dir,
            file_size=config.binlog_size,
            fsync_ms=config.fsync_ms,
            clock=server.clock,
            max_job_size=config.max_job_size,
        )
    except BinlogLocked as exc:
        raise StartupError(
            f"failed to lock binlog dir {config.binlog_dir}: {exc}", EXIT_LOCK
        ) from exc
    except OSError as exc:
        raise StartupError(
            f"cannot open binlog in {config.binlog_dir}: {exc}", EXIT_BINLOG
        ) from exc
    return binlog


def restore(server: Server, binlog: Binlog, result: ReplayResult) -> None:
    for warning in result.warnings:
        log.warning("binlog: %s", warning)
    t0 = time.perf_counter()
    server.attach_binlog(binlog)
    server.restore(result)
    log.info(
        "binlog replayed: %d jobs in %.3f s (+ %.3f s restore), next id %d",
        result.count,
        result.duration,
        time.perf_counter() - t0,
        result.next_id,
    )
