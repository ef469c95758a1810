"""Null beanstalk servers: the floor a Python server on uvloop can reach on this machine.

    python benchmarks/nullsrv.py --io protocol -l 127.0.0.1 -p 11300   # asyncio.Protocol
    python benchmarks/nullsrv.py --io buffered -p 11300                 # asyncio.BufferedProtocol
    python benchmarks/nullsrv.py --io reader -p 11300                   # loop.add_reader + recv/send

They are reference targets for ``run.py`` (``--target null-protocol`` etc.), not servers: they
answer just enough of the protocol for the drivers' put, pipeline and cycle scenarios (bqdrive.c
and bqload) and keep no jobs beyond a FIFO of bodies for consumers.

Invariants, so that the three differ only in how bytes reach Python and leave it:
- all three run the same parser (``Conn.parse``): one pass over what one read returned, every
  reply to it joined and written with one write (one ``transport.write`` / one ``send``);
- a put costs a line search, ``int()`` of the byte count, an id and one formatted reply; the
  body is kept only once a client sent ``watch`` (a consumer exists), so put50 and pipeline
  store nothing;
- ``reserve``/``reserve-with-timeout`` take the oldest stored body or wait; waiting clients
  get the next put's job, or ``TIMED_OUT`` from a 50 ms sweep; a waiting connection's further
  input is kept and parsed after its reply;
- output back-pressure: the add_reader server stops reading while a reply is not fully sent;
  the two transport servers leave it to the transport's buffer (no pause_writing handling).
The event loop is uvloop; SIGTERM and SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import socket
import time
from typing import Any

MAX_LINE = 1024  # a line longer than this without CRLF is answered BAD_FORMAT and dropped


class Hub:
    """What the connections share: the next id, stored bodies, waiting consumers."""

    def __init__(self) -> None:
        self.next_id = 1
        self.queueing = False  # True once a consumer (a `watch`) was seen
        self.ready: collections.deque[tuple[int, bytes]] = collections.deque()
        self.waiters: collections.deque[Conn] = collections.deque()

    def add(self, jid: int, body: bytes) -> None:
        waiters = self.waiters
        while waiters:
            w = waiters.popleft()
            if w.waiting and not w.gone:
                w.wake(b"RESERVED %d %d\r\n%b\r\n" % (jid, len(body), body))
                return
        self.ready.append((jid, body))

    def sweep(self) -> None:
        """Answer TIMED_OUT to waiters whose reserve-with-timeout has run out."""
        if self.waiters:
            now = time.monotonic()
            keep: collections.deque[Conn] = collections.deque()
            for w in self.waiters:
                if not w.waiting or w.gone:
                    continue
                if w.deadline <= now:
                    w.wake(b"TIMED_OUT\r\n")
                else:
                    keep.append(w)
            self.waiters = keep
        asyncio.get_running_loop().call_later(0.05, self.sweep)


class Conn:
    """The parser and the waiting state; subclasses move the bytes."""

    hub: Hub
    waiting = False
    gone = False
    deadline = 0.0
    watching = 1

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def resume(self) -> None:
        """Parse the input kept while this connection waited."""
        raise NotImplementedError

    def wake(self, reply: bytes) -> None:
        self.waiting = False
        self.send(reply)
        self.resume()

    def parse(self, data: Any, end: int, out: list[bytes]) -> int:
        """Answer the complete commands in ``data[:end]`` into ``out``; returns bytes used."""
        pos = 0
        while pos < end and not self.waiting:
            eol = data.find(b"\r\n", pos, end)
            if eol < 0:
                if end - pos > MAX_LINE:
                    out.append(b"BAD_FORMAT\r\n")
                    return end
                break
            if data.startswith(b"put ", pos):
                n = int(data[data.rfind(b" ", pos, eol) + 1 : eol])
                stop = eol + 2 + n
                if stop + 2 > end:
                    break
                hub = self.hub
                jid = hub.next_id
                hub.next_id = jid + 1
                if hub.queueing:
                    hub.add(jid, bytes(data[eol + 2 : stop]))
                out.append(b"INSERTED %d\r\n" % jid)
                pos = stop + 2
                continue
            line = bytes(data[pos:eol])
            pos = eol + 2
            word, _, arg = line.partition(b" ")
            if word == b"delete":
                out.append(b"DELETED\r\n")
            elif word == b"reserve-with-timeout" or word == b"reserve":
                self._reserve(float(arg) if arg else float("inf"), out)
            elif word == b"use":
                out.append(b"USING %b\r\n" % arg)
            elif word == b"watch":
                self.hub.queueing = True
                self.watching += 1
                out.append(b"WATCHING %d\r\n" % self.watching)
            elif word == b"ignore":
                self.watching = max(1, self.watching - 1)
                out.append(b"WATCHING %d\r\n" % self.watching)
            elif word == b"stats-tube":
                out.append(b"NOT_FOUND\r\n")
            elif word == b"quit":
                self.close()
                return end
            else:
                out.append(b"UNKNOWN_COMMAND\r\n")
        return pos

    def _reserve(self, timeout: float, out: list[bytes]) -> None:
        hub = self.hub
        if hub.ready:
            jid, body = hub.ready.popleft()
            out.append(b"RESERVED %d %d\r\n%b\r\n" % (jid, len(body), body))
        elif timeout <= 0:
            out.append(b"TIMED_OUT\r\n")
        else:
            self.waiting = True
            self.deadline = time.monotonic() + timeout
            hub.waiters.append(self)

    def close(self) -> None:
        raise NotImplementedError


class BytesConn(Conn):
    """Input arrives as bytes objects (Protocol and add_reader): one ``feed`` per read."""

    rest = b""

    def feed(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
            self.rest = b""
        if self.waiting:
            self.rest = data
            return
        out: list[bytes] = []
        used = self.parse(data, len(data), out)
        if used < len(data):
            self.rest = data[used:]
        if out:
            self.send(out[0] if len(out) == 1 else b"".join(out))

    def resume(self) -> None:
        if self.rest and not self.gone:
            self.feed(b"")


# --------------------------------------------------------------------- (a) asyncio.Protocol


class ProtocolConn(BytesConn, asyncio.Protocol):
    transport: Any

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.feed(data)

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        self.gone = True
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True


# ------------------------------------------------------------ (b) asyncio.BufferedProtocol


class BufferedConn(Conn, asyncio.BufferedProtocol):
    transport: Any

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buf = bytearray(65536)
        self.view = memoryview(self.buf)
        self.filled = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buf) - self.filled < 4096:
            # grow: a new buffer, since a bytearray with a live memoryview cannot resize
            self.view.release()
            self.buf = self.buf[: self.filled] + bytearray(len(self.buf))
            self.view = memoryview(self.buf)
        return self.view[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        if not self.waiting:
            self._run()

    def _run(self) -> None:
        out: list[bytes] = []
        filled = self.filled
        used = self.parse(self.buf, filled, out)
        if used >= filled:
            self.filled = 0
        elif used:
            self.buf[: filled - used] = self.buf[used:filled]  # same length: no resize
            self.filled = filled - used
        if out:
            self.send(out[0] if len(out) == 1 else b"".join(out))

    def resume(self) -> None:
        if self.filled and not self.gone:
            self._run()

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        self.gone = True
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True


# ------------------------------------------------- (c) loop.add_reader + non-blocking socket


class ReaderConn(BytesConn):
    """recv in the reader callback; send directly, the rest on add_writer (and stop reading
    until it is out: output back-pressure)."""

    def __init__(self, hub: Hub, loop: Any, sock: socket.socket) -> None:
        self.hub = hub
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.pending = b""
        loop.add_reader(self.fd, self.on_readable)

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        self.feed(data)

    def send(self, data: bytes) -> None:
        if self.gone:
            return
        if self.pending:
            self.pending += data
            return
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close()
            return
        if n < len(data):
            self.pending = data[n:]
            self.loop.remove_reader(self.fd)
            self.loop.add_writer(self.fd, self.on_writable)

    def on_writable(self) -> None:
        try:
            n = self.sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.pending = self.pending[n:]
        if not self.pending:
            self.loop.remove_writer(self.fd)
            self.loop.add_reader(self.fd, self.on_readable)

    def close(self) -> None:
        if self.gone:
            return
        self.gone = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()


def serve_reader(loop: Any, hub: Hub, lsock: socket.socket) -> None:
    lsock.setblocking(False)

    def on_accept() -> None:
        for _ in range(64):
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and friends: try again on the next event
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ReaderConn(hub, loop, sock)

    loop.add_reader(lsock.fileno(), on_accept)


# --------------------------------------------------------------------------------- main


async def serve(io: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    hub = Hub()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(1024)
    loop.call_later(0.05, hub.sweep)
    if io == "reader":
        serve_reader(loop, hub, lsock)
        await stop.wait()
        return
    factory = (lambda: ProtocolConn(hub)) if io == "protocol" else (lambda: BufferedConn(hub))
    srv = await loop.create_server(factory, sock=lsock, backlog=1024)
    await stop.wait()
    srv.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--io", choices=("protocol", "buffered", "reader"), default="protocol")
    ap.add_argument("-l", dest="host", default="127.0.0.1")
    ap.add_argument("-p", dest="port", type=int, default=11300)
    ap.add_argument("--asyncio", action="store_true", help="the stdlib loop instead of uvloop")
    a = ap.parse_args()
    if a.asyncio:
        asyncio.run(serve(a.io, a.host, a.port))
    else:
        import uvloop

        uvloop.run(serve(a.io, a.host, a.port))


if __name__ == "__main__":
    main()
