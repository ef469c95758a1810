"""startup.EarlyLoop: the same Server answers before the event loop exists, then moves to it.

Real sockets and the real system clock (the early loop exists to run before asyncio, so there
is no loop to drive a ManualClock with): a delay that comes due while the early loop runs fires
there on time, a reserve timeout that started there fires on the asyncio loop on time, an HTTP
request that arrived early is answered once the loop runs, and the connections keep their
sessions (tube in use, reserved job) across the hand-over.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time

from beanstalk_py.shell import listeners, startup
from beanstalk_py.shell.config import Config
from beanstalk_py.shell.server import Server


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def run_early_for(loop: startup.EarlyLoop, seconds: float) -> None:
    end = time.monotonic() + seconds
    loop.call_later(seconds, lambda: None)  # wakes the selector when the time is up
    loop.run(lambda: time.monotonic() >= end)


def run_early_until_readable(loop: startup.EarlyLoop, sock: socket.socket, size: int) -> None:
    """Run the early loop until ``size`` bytes wait in ``sock`` (at most 5 s)."""
    end = time.monotonic() + 5

    def tick() -> None:  # wake the selector now and then to look
        if time.monotonic() < end:
            loop.call_later(0.005, tick)

    def arrived() -> bool:
        if time.monotonic() >= end:
            return True
        if not select.select([sock], [], [], 0)[0]:
            return False
        return len(sock.recv(size, socket.MSG_PEEK)) >= size

    tick()
    loop.run(arrived)


def test_early_loop_serves_then_hands_over_to_asyncio() -> None:
    server = Server(Config(host="127.0.0.1", port=0))
    listener = listeners.bind_tcp("127.0.0.1", 0)
    port = listener.getsockname()[1]
    early = startup.EarlyLoop()
    server.run_early(early)
    early.serve(listener, server.protocol_factory)

    worker = socket.create_connection(("127.0.0.1", port), timeout=5)
    waiter = socket.create_connection(("127.0.0.1", port), timeout=5)
    http = socket.create_connection(("127.0.0.1", port), timeout=5)

    # A delay that comes due during the early phase fires there, on time.
    t0 = time.monotonic()
    worker.sendall(b"use jobs\r\nwatch jobs\r\nput 0 1 60 2\r\nhi\r\nreserve\r\n")
    reply = b"USING jobs\r\nWATCHING 2\r\nINSERTED 1\r\nRESERVED 1 2\r\nhi\r\n"
    run_early_until_readable(early, worker, len(reply))
    assert 1.0 <= time.monotonic() - t0 < 1.1
    assert recv_exactly(worker, len(reply)) == reply

    # A reserve timeout that starts now ends on the asyncio loop; HTTP waits for the loop.
    t1 = time.monotonic()
    waiter.sendall(b"reserve-with-timeout 1\r\n")
    http.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
    run_early_for(early, 0.1)
    sock, conns = early.close()
    assert sock is listener and len(conns) == 3
    handed = startup.Early(server, None, listener, conns, [])

    async def on_the_loop() -> tuple[bytes, float, bytes, bytes]:
        loop = asyncio.get_running_loop()
        await handed.hand_over()
        assert server.loop is loop and not server.early
        timed_out = await loop.run_in_executor(None, recv_exactly, waiter, len(b"TIMED_OUT\r\n"))
        elapsed = time.monotonic() - t1
        health = await loop.run_in_executor(None, http.recv, 4096)
        # The worker's session moved too: its tube and its reserved job.
        worker.sendall(b"list-tube-used\r\ndelete 1\r\n")
        more = b"USING jobs\r\nDELETED\r\n"
        after = await loop.run_in_executor(None, recv_exactly, worker, len(more))
        await server.stop()
        return timed_out, elapsed, health, after

    timed_out, elapsed, health, after = asyncio.run(on_the_loop())
    assert timed_out == b"TIMED_OUT\r\n"
    assert 1.0 <= elapsed < 1.2
    assert health.startswith(b"HTTP/1.0 200") or health.startswith(b"HTTP/1.1 200"), health
    assert after == b"USING jobs\r\nDELETED\r\n"
    for s in (worker, waiter, http):
        s.close()


PEEKS = 200  # 12 MB of replies: more than the socket buffers and the 4 MiB output limit


def test_unsent_replies_and_a_close_move_with_the_connection() -> None:
    server = Server(Config(host="127.0.0.1", port=0))
    listener = listeners.bind_tcp("127.0.0.1", 0)
    port = listener.getsockname()[1]
    early = startup.EarlyLoop()
    server.run_early(early)
    early.serve(listener, server.protocol_factory)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    client.connect(("127.0.0.1", port))
    client.settimeout(10)
    body = b"x" * 60000
    # More replies than the socket buffers hold while the client does not read, then quit:
    # what is unsent at the hand-over, and the commands not parsed yet (the session stops
    # parsing at the output limit), must all be answered, then the connection closes.
    client.sendall(b"put 0 0 60 60000\r\n" + body + b"\r\n" + b"peek 1\r\n" * PEEKS + b"quit\r\n")
    run_early_for(early, 0.3)
    _, conns = early.close()
    assert conns and conns[0].out, "expected unsent replies at the hand-over"
    handed = startup.Early(server, None, listener, conns, [])
    expected = b"INSERTED 1\r\n" + (b"FOUND 1 60000\r\n" + body + b"\r\n") * PEEKS

    async def on_the_loop() -> bytes:
        loop = asyncio.get_running_loop()
        await handed.hand_over()

        def read_all() -> bytes:
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            return data

        data = await loop.run_in_executor(None, read_all)
        await server.stop()
        return data

    assert asyncio.run(on_the_loop()) == expected
    client.close()


def test_a_deadline_decades_away_does_not_stop_the_early_loop() -> None:
    # pause-tube 4294967295 arms the server's timer ~136 years ahead: too long for epoll.
    server = Server(Config(host="127.0.0.1", port=0))
    listener = listeners.bind_tcp("127.0.0.1", 0)
    early = startup.EarlyLoop()
    server.run_early(early)
    early.serve(listener, server.protocol_factory)
    client = socket.create_connection(listener.getsockname(), timeout=5)
    client.sendall(b"pause-tube default 4294967295\r\nlist-tube-used\r\n")
    reply = b"PAUSED\r\nUSING default\r\n"
    # No other timer: the loop must wait on that one (until stop() wakes it).
    stopper = threading.Timer(0.3, early.stop)
    stopper.start()
    early.run(lambda: False)
    stopper.join()
    assert recv_exactly(client, len(reply)) == reply
    early.close()
    client.close()
