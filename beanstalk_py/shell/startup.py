"""Answer from the first milliseconds: a small loop serves while asyncio is imported.

``import asyncio`` (with ssl) and uvloop take ~100 ms, more than clients that connect right
after spawning the server wait (greenstalk's tests: 0.1 s). The engine and the protocol need
no asyncio, so ``EarlyLoop`` implements the few loop and transport methods that ``Server`` and
``Connection`` call (call_soon, call_later, run_in_executor; write, pause/resume_reading,
close) over ``selectors``, and the *same* Server, Connection, Session and Engine objects answer
while a thread imports the event loop. Then the listening socket and every accepted socket
move to the real loop (``Server.start`` and ``loop.connect_accepted_socket``; each transport
passes on its unsent replies and paused state in ``hand_over``) and the server's timers are
re-armed there (``Server.move_to_loop``). No command is handled here.

Invariants:
- Used only in the plain case (``eligible``): the socket bound by ``entry`` (no TLS, no
  cluster, no socket activation), no ``-u``, and a binlog directory with nothing to replay,
  which is opened and replayed before the first accept: every reply that changes state is
  journaled as on the loop.
- ``run_in_executor`` runs its function inline (the fsync of ``-f 0``); its callbacks run on a
  later turn, as on the loop, so a reply held for an fsync is written after the fsync.
- Timers run by ``time.monotonic``, the engine's clock: delays and TTRs fire on time.
- HTTP on the beanstalk port waits for the real loop (``Server.early``; httpd.py needs asyncio).
- SIGTERM, SIGINT and SIGUSR1 end the early phase and are raised again once the loop's
  handlers are installed (``Early.signals``), so they act as at any other time.
"""

from __future__ import annotations

import contextlib
import heapq
import importlib
import os
import re
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from beanstalk_py.shell.config import Config

if TYPE_CHECKING:
    from beanstalk_py.binlog import Binlog
    from beanstalk_py.shell.server import Server

# What the real loop needs; imported on a thread while EarlyLoop answers.
LOOP_MODULES = ("asyncio", "concurrent.futures.thread", "beanstalk_py.shell.loops")
SEGMENT_NAME = re.compile(r"binlog\.[0-9]+\Z")
READ_SIZE = 65536
MAX_SELECT_TIMEOUT = 24 * 3600.0
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)  # app.lifecycle.serve handles them


def eligible(config: Config) -> bool:
    """True when the early loop may serve: see the module docstring."""
    if config.user is not None or config.tls_cert is not None or config.cluster is not None:
        return False
    if config.binlog_dir is None:
        return True
    try:
        names = os.listdir(config.binlog_dir)
    except OSError:
        return False  # the usual start-up reports it
    return not any(SEGMENT_NAME.match(name) for name in names)


class Handle:
    """A scheduled callback (what call_soon and call_later return)."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Handle) -> bool:
        return self.when < other.when


class DoneFuture:
    """run_in_executor's result: the function already ran; callbacks run on a later turn."""

    def __init__(self, loop: EarlyLoop, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._loop = loop
        self._result: Any = None
        self._exc: BaseException | None = None
        try:
            self._result = fn(*args)
        except Exception as exc:
            self._exc = exc

    def add_done_callback(self, callback: Callable[[DoneFuture], Any]) -> None:
        self._loop.call_soon(callback, self)

    def exception(self) -> BaseException | None:
        return self._exc

    def result(self) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._result


class EarlyTransport:
    """A non-blocking socket with asyncio's transport methods that Connection uses."""

    def __init__(self, loop: EarlyLoop, sock: socket.socket, protocol: Any) -> None:
        self._loop = loop
        self.sock = sock
        self.protocol = protocol
        self.out = bytearray()
        self.reading = True
        self.closing = False
        self.paused_writing = False
        self.high = 64 * 1024
        self._events = 0
        try:
            self._peer: Any = sock.getpeername()
        except OSError:
            self._peer = None

    # --- what Connection calls ----------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.sock
        if name == "peername":
            return self._peer
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is not None:
            self.high = high

    def get_write_buffer_size(self) -> int:
        return len(self.out)

    def write(self, data: bytes) -> None:
        if self.closing or not data:
            return
        if not self.out:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._lost(exc)
                return
            data = data[sent:]
            if not data:
                return
        self.out += data
        self._update()
        if not self.paused_writing and len(self.out) > self.high:
            self.paused_writing = True
            self.protocol.pause_writing()

    def pause_reading(self) -> None:
        self.reading = False
        self._update()

    def resume_reading(self) -> None:
        if not self.closing:
            self.reading = True
            self._update()

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.reading = False
        if self.out:
            self._update()  # finished once the replies are out
        else:
            self._lost(None)

    def abort(self) -> None:
        self.closing = True
        self.out.clear()
        self._lost(None)

    # --- the loop's side ----------------------------------------------------------------

    def hand_over(self, new: Any) -> None:
        """Called by the protocol with the real loop's transport for the same socket."""
        new.set_write_buffer_limits(high=self.high)
        if not self.reading:
            new.pause_reading()
        if self.out:
            new.write(bytes(self.out))
            self.out.clear()
        if self.closing:
            new.close()  # after the unsent replies, as close() here would have
        elif self.paused_writing and new.get_write_buffer_size() <= self.high:
            self.protocol.resume_writing()  # the new transport will not call it

    def on_event(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._on_writable()
        if mask & selectors.EVENT_READ and self.reading and not self.closing:
            self._on_readable()

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if data:
            self.protocol.data_received(data)
            return
        self.reading = False
        self._update()
        if not self.protocol.eof_received():
            self.close()

    def _on_writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self.out[:sent]
        self._update()
        if self.paused_writing and len(self.out) <= self.high // 4:
            self.paused_writing = False
            self.protocol.resume_writing()
        if self.closing and not self.out:
            self._lost(None)

    def _update(self) -> None:
        if self.sock.fileno() < 0:
            return
        events = (selectors.EVENT_READ if self.reading else 0) | (
            selectors.EVENT_WRITE if self.out else 0
        )
        self._loop.watch(self, self._events, events)
        self._events = events

    def detach(self) -> socket.socket:
        """Stop watching the socket (it moves to the real loop)."""
        self._loop.watch(self, self._events, 0)
        self._events = 0
        return self.sock

    def _lost(self, exc: Exception | None) -> None:
        if self.sock.fileno() < 0:
            return
        self.closing = True
        self.detach()
        self.sock.close()
        self._loop.transports.discard(self)
        self._loop.call_soon(self.protocol.connection_lost, exc)


class EarlyLoop:
    """The loop methods Server uses, over a selector, on the main thread."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._ready: deque[Handle] = deque()
        self._timers: list[Handle] = []
        self.transports: set[EarlyTransport] = set()
        self._listener: socket.socket | None = None
        self._factory: Callable[[], Any] | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Handle:
        handle = Handle(0.0, callback, args)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Handle:
        handle = Handle(time.monotonic() + delay, callback, args)
        heapq.heappush(self._timers, handle)
        return handle

    def run_in_executor(self, executor: Any, fn: Callable[..., Any], *args: Any) -> DoneFuture:
        return DoneFuture(self, fn, args)

    def watch(self, transport: EarlyTransport, old: int, new: int) -> None:
        if old == new:
            return
        if not old:
            self._selector.register(transport.sock, new, transport)
        elif not new:
            self._selector.unregister(transport.sock)
        else:
            self._selector.modify(transport.sock, new, transport)

    def serve(self, sock: socket.socket, factory: Callable[[], Any]) -> None:
        self._listener = sock
        self._factory = factory
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, self)

    def stop(self) -> None:
        """Thread-safe: end run() on its next turn."""
        self._stop = True
        # Closed once the loop is: a signal after that only needs recording (serve_early).
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def run(self, until: Callable[[], bool]) -> None:
        """Serve until stop() was called or ``until()`` holds, then finish pending callbacks."""
        while not self._stop and not until():
            self._run_once()
        while self._ready:  # e.g. an fsync's completion: the loop must not inherit it
            self._run_ready()

    def _run_once(self) -> None:
        timeout: float | None = None
        if self._ready:
            timeout = 0
        elif self._timers:
            # clamped as asyncio does: a pause-tube of 2**32-1 s is too long for epoll
            timeout = min(max(0.0, self._timers[0].when - time.monotonic()), MAX_SELECT_TIMEOUT)
        for key, mask in self._selector.select(timeout):
            target = key.data
            if target is None:
                self._wake_r.recv(64)
            elif target is self:
                self._accept()
            else:
                target.on_event(mask)
        now = time.monotonic()
        while self._timers and self._timers[0].when <= now:
            self._ready.append(heapq.heappop(self._timers))
        self._run_ready()

    def _run_ready(self) -> None:
        for _ in range(len(self._ready)):
            handle = self._ready.popleft()
            if not handle.cancelled:
                handle.callback(*handle.args)

    def _accept(self) -> None:
        assert self._listener is not None and self._factory is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: the connection waits in the backlog for the real loop
            sock.setblocking(False)
            protocol = self._factory()
            transport = EarlyTransport(self, sock, protocol)
            self.transports.add(transport)
            transport._update()
            protocol.connection_made(transport)

    def close(self) -> tuple[socket.socket | None, list[EarlyTransport]]:
        """Stop watching everything; return the listener and the open connections."""
        listener = self._listener
        if listener is not None:
            self._selector.unregister(listener)
        live = []
        for transport in list(self.transports):
            transport.detach()
            live.append(transport)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        return listener, live


class LoopImport(threading.Thread):
    """Imports LOOP_MODULES (and uvloop when present), then stops the early loop."""

    def __init__(self, loop: EarlyLoop) -> None:
        super().__init__(name="import-event-loop", daemon=True)
        self._loop = loop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for name in LOOP_MODULES:
                importlib.import_module(name)
            with contextlib.suppress(ImportError):  # the stdlib loop then
                importlib.import_module("uvloop")
        except BaseException as exc:  # re-raised on the main thread
            self.error = exc
        finally:
            self._loop.stop()


class Early:
    """The result of the early phase: the server, its binlog, what moves to the real loop."""

    def __init__(
        self,
        server: Server,
        binlog: Binlog | None,
        listener: socket.socket,
        conns: list[EarlyTransport],
        signals: list[int],
    ) -> None:
        self.server = server
        self.binlog = binlog
        self.listener = listener
        self.conns = conns
        self.signals = signals  # received meanwhile, to raise again under the loop's handlers

    async def hand_over(self) -> None:
        """On the real loop: listen on the same socket, adopt every connection."""
        import asyncio

        loop = asyncio.get_running_loop()
        server = self.server
        server.move_to_loop(loop)
        await server.start([self.listener])
        for transport in self.conns:
            # connection_made (its adopting branch) calls transport.hand_over
            await loop.connect_accepted_socket(_same(transport.protocol), transport.detach())
        server.set_ready()  # HTTP requests that waited for the loop


def _same(protocol: Any) -> Callable[[], Any]:
    return lambda: protocol


def serve_early(
    server: Server, listener: socket.socket, open_binlog: Callable[[], Binlog] | None
) -> Early:
    """Serve on ``listener`` with ``server`` until the event loop is imported.

    ``open_binlog`` (with -b) opens and replays the binlog before anything is accepted.
    """
    loop = EarlyLoop()
    importer = LoopImport(loop)
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        loop.stop()

    for signum in SIGNALS:
        signal.signal(signum, on_signal)
    # The importer holds the GIL for long stretches: switch often so replies are prompt.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        server.run_early(loop)
        binlog = open_binlog() if open_binlog is not None else None
        loop.serve(listener, server.protocol_factory)
        # Only now: until the first reply can be given the main thread needs every cycle.
        importer.start()
        loop.run(lambda: bool(server.failed))
        importer.join()
    finally:
        sys.setswitchinterval(interval)
    if importer.error is not None:
        raise importer.error
    sock, conns = loop.close()
    assert sock is listener
    return Early(server, binlog, listener, conns, received)
