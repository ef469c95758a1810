"""Hardening: output back-pressure, connection limits, the allow-list, --max-jobs, fuzzing.

Every test runs an in-process ``Server`` on loopback (except the 10 000-connection test, which
runs the server as a subprocess so that client and server sockets do not share one fd limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.inprocess import running
from support.replies import split_replies
from support.servers import ours_process

from beanstalk_py.core.journal import JournalStats

TIMEOUT = 10.0


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> bytes:
    writer.write(line)
    return await asyncio.wait_for(reader.readline(), TIMEOUT)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection (EOF or reset) within the timeout."""
    try:
        data = await asyncio.wait_for(reader.read(100), TIMEOUT)
    except (ConnectionError, OSError):
        return True
    return data == b""


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # pragma: no cover - not Linux


def raw_socket(port: int, rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", port))
    return s


# --- output back-pressure -----------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_never_reader_pipelining_a_million_stats_stays_bounded() -> None:
    """A client that writes 1e6 `stats` (7 MB) and never reads: the server stops reading it.

    Without the in-parse bound one 256 KiB read would queue ~37k replies (~40 MB) at once.
    """
    async with running() as srv:
        sock = raw_socket(srv.port, rcvbuf=4096)
        sock.setblocking(False)
        payload = b"stats\r\n" * 1_000_000
        base = rss_kib()
        sent = 0
        peak = base
        deadline = time.monotonic() + 5.0
        while sent < len(payload) and time.monotonic() < deadline:
            try:
                sent += sock.send(payload[sent : sent + 1 << 20])
            except BlockingIOError:
                await asyncio.sleep(0.01)
            peak = max(peak, rss_kib())
        # Let the server do all it will do with what it got.
        for _ in range(50):
            await asyncio.sleep(0.01)
            peak = max(peak, rss_kib())
        conn = next(iter(srv.conns))
        sess = conn.session
        assert sess is not None
        grown_mib = (peak - base) / 1024
        unsent = conn.transport.get_write_buffer_size() if conn.transport else 0
        print(
            f"\nnever-reader: sent {sent / 1e6:.1f} MB of `stats`, server RSS grew {grown_mib:.1f} MiB, "
            f"transport buffer {unsent / 2**20:.1f} MiB, unparsed input {sess.buffered / 1024:.0f} KiB"
        )
        assert sent < len(payload), "the server read everything: no back-pressure"
        assert unsent <= 2 * srv.config.output_limit
        assert grown_mib < 64, f"RSS grew by {grown_mib:.1f} MiB"
        # Other clients are served meanwhile.
        r, w = await connect(srv.port)
        assert await ask(r, w, b"use other\r\n") == b"USING other\r\n"
        w.close()
        # The never-reader starts reading: its replies arrive, complete (the first 200 checked).
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
        f = sock.makefile("rb")
        for _ in range(200):
            head = await asyncio.to_thread(f.readline)
            assert head.startswith(b"OK ")
            body = await asyncio.to_thread(f.read, int(head.split()[1]) + 2)
            assert body.startswith(b"---\n") and body.endswith(b"\n\r\n")
        f.close()
        sock.close()


async def test_never_reader_of_big_peeks_stays_bounded() -> None:
    async with running(max_job_size=65536) as srv:
        r, w = await connect(srv.port)
        body = os.urandom(60000).hex()[:60000].encode()
        assert await ask(r, w, b"put 0 0 60 60000\r\n" + body + b"\r\n") == b"INSERTED 1\r\n"
        sock = raw_socket(srv.port, rcvbuf=4096)
        sock.setblocking(False)
        payload = b"peek 1\r\n" * 20000  # 1.2 GB of replies if answered at once
        base = rss_kib()
        sent = 0
        peak = base
        for _ in range(100):
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(payload[sent:])
            await asyncio.sleep(0.01)
            peak = max(peak, rss_kib())
            if sent == len(payload):
                break
        grown_mib = (peak - base) / 1024
        print(
            f"\nbig-peek never-reader: sent {sent} bytes of `peek 1`, RSS grew {grown_mib:.1f} MiB"
        )
        assert grown_mib < 64
        assert await ask(r, w, b"stats-job 1\r\n") != b""  # others unaffected
        sock.close()
        w.close()


async def test_slow_reader_gets_every_reply_in_order() -> None:
    async with running(output_limit=64 * 1024) as srv:
        r, w = await connect(srv.port)
        n = 3000
        w.write(b"".join(b"put 0 0 60 1000\r\n" + b"x" * 1000 + b"\r\n" for _ in range(10)))
        w.write(b"".join(b"peek %d\r\n" % (1 + i % 10) for i in range(n)))
        w.write(b"quit\r\n")
        for i in range(10):
            assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"INSERTED %d\r\n" % (i + 1)
        for i in range(n):
            if i % 500 == 0:
                await asyncio.sleep(0.02)  # read slowly
            head = await asyncio.wait_for(r.readline(), TIMEOUT)
            assert head == b"FOUND %d 1000\r\n" % (1 + i % 10)
            assert await asyncio.wait_for(r.readexactly(1002), TIMEOUT) == b"x" * 1000 + b"\r\n"
        assert await closed_by_server(r)


async def test_reader_that_stalls_then_reads_gets_every_big_reply() -> None:
    """Replies outgrow the kernel buffers and the transport's limit while the client does not
    read: the server stops writing (and parsing). When the client reads again the transport
    drains and the connection must go on parsing by itself, to the last reply."""
    # more peeks than one parse window (256 reply chunks before the first measurement)
    n, size = 300, 60000
    async with running(max_job_size=65536, output_limit=64 * 1024) as srv:
        r, w = await connect(srv.port)
        body = b"y" * size
        assert await ask(r, w, b"put 0 0 60 %d\r\n%s\r\n" % (size, body)) == b"INSERTED 1\r\n"
        producer = set(srv.conns)
        sock = raw_socket(srv.port, rcvbuf=4096)
        sock.sendall(b"peek 1\r\n" * n + b"quit\r\n")
        blocked = False
        for _ in range(500):  # not reading: the server's writes back up
            blocked = any(c.write_paused for c in srv.conns - producer)
            if blocked:
                break
            await asyncio.sleep(0.01)
        assert blocked, "the transport never went over its limit"

        def read_all() -> bytes:
            chunks = []
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)

        data = await asyncio.to_thread(read_all)  # EOF after `quit`, or a timeout error
        sock.close()
        w.close()
        one = b"FOUND 1 %d\r\n%s\r\n" % (size, body)
        assert data.count(b"FOUND 1 ") == n
        assert data == one * n


async def test_quit_behind_a_blocked_reserve_closes_when_another_client_answers_it() -> None:
    """The reserve's reply (and the ``quit`` behind it) are produced by another client's put:
    the waiting connection must get its job and then be closed."""
    async with running() as srv:
        r, w = await connect(srv.port)
        w.write(b"reserve\r\nquit\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        pr, pw = await connect(srv.port)
        assert await ask(pr, pw, b"put 0 0 60 1\r\nx\r\n") == b"INSERTED 1\r\n"
        assert await asyncio.wait_for(r.read(), TIMEOUT) == b"RESERVED 1 1\r\nx\r\n"  # EOF
        w.close()
        pw.close()


async def test_half_close_after_a_big_pipeline_still_answers_everything() -> None:
    async with running(output_limit=32 * 1024) as srv:
        r, w = await connect(srv.port)
        w.write(b"list-tube-used\r\n" * 20000)
        w.write_eof()
        data = await asyncio.wait_for(r.read(), TIMEOUT)
        assert data == b"USING default\r\n" * 20000


async def test_reserve_blocked_connection_is_read_only_a_little() -> None:
    async with running() as srv:
        sock = raw_socket(srv.port, rcvbuf=4096)
        sock.sendall(b"reserve\r\n")
        await asyncio.sleep(0.05)
        sock.setblocking(False)
        sent = 0
        chunk = b"stats\r\n" * 10000
        for _ in range(200):
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                await asyncio.sleep(0.005)
        conn = next(iter(srv.conns))
        assert conn.session is not None and conn.session.waiting
        assert conn.session.buffered < 1 << 20
        assert sent < 200 * len(chunk)
        sock.close()


# --- limits --------------------------------------------------------------------------------


async def test_connection_flood_past_max_connections_sees_a_close() -> None:
    async with running(max_connections=20) as srv:
        kept = [await connect(srv.port) for _ in range(20)]
        for r, w in kept[:3]:
            assert await ask(r, w, b"list-tube-used\r\n") == b"USING default\r\n"
        extra = [await connect(srv.port) for _ in range(30)]
        results = await asyncio.gather(*(closed_by_server(r) for r, _ in extra))
        assert all(results)
        assert srv.rejected_connections == 30
        # Admitted clients keep working; a slot freed is usable again.
        r, w = kept[0]
        head = await ask(r, w, b"stats-tube default\r\n")
        assert head.startswith(b"OK "), head
        body = await asyncio.wait_for(r.readexactly(int(head.split()[1]) + 2), TIMEOUT)
        # The 20 admitted connections, and none of the 30 closed at accept, watch default.
        assert b"\ncurrent-watching: 20\n" in body, body
        kept[1][1].close()
        await asyncio.sleep(0.05)
        r2, w2 = await connect(srv.port)
        assert await ask(r2, w2, b"list-tube-used\r\n") == b"USING default\r\n"
        for _, w in [*kept, *extra, (r2, w2)]:
            w.close()


def test_default_connection_limit_follows_rlimit_nofile() -> None:
    from beanstalk_py.shell import security

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    budget = security.connection_budget(0)
    assert 0 < budget < soft
    assert security.connection_budget(10) == 10
    assert security.connection_budget(10**9) == budget


async def test_max_jobs_and_max_job_bytes_answer_out_of_memory() -> None:
    async with running(max_jobs=3) as srv:
        r, w = await connect(srv.port)
        for i in range(3):
            assert await ask(r, w, b"put 0 0 60 1\r\nx\r\n") == b"INSERTED %d\r\n" % (i + 1)
        assert await ask(r, w, b"put 0 0 60 1\r\nx\r\n") == b"OUT_OF_MEMORY\r\n"
        # the body was consumed: the stream is still in step
        assert await ask(r, w, b"delete 1\r\n") == b"DELETED\r\n"
        assert await ask(r, w, b"put 0 0 60 1\r\ny\r\n") == b"INSERTED 5\r\n"
        assert await ask(r, w, b"put 0 0 60 1\r\ny\r\n") == b"OUT_OF_MEMORY\r\n"
        w.close()
    async with running(max_job_bytes=100) as srv:
        r, w = await connect(srv.port)
        assert await ask(r, w, b"put 0 0 60 90\r\n" + b"a" * 90 + b"\r\n") == b"INSERTED 1\r\n"
        assert await ask(r, w, b"put 0 0 60 20\r\n" + b"b" * 20 + b"\r\n") == b"OUT_OF_MEMORY\r\n"
        assert await ask(r, w, b"reserve-with-timeout 0\r\n") == b"RESERVED 1 90\r\n"
        await asyncio.wait_for(r.readexactly(92), TIMEOUT)
        assert await ask(r, w, b"delete 1\r\n") == b"DELETED\r\n"
        assert await ask(r, w, b"put 0 0 60 20\r\n" + b"b" * 20 + b"\r\n") == b"INSERTED 3\r\n"
        w.close()


# --- allow-list ----------------------------------------------------------------------------


async def test_allow_list_rejects_other_networks() -> None:
    async with running(allow=["10.0.0.0/8", "fd00::/8"]) as srv:
        r, w = await connect(srv.port)
        assert await closed_by_server(r)
        assert srv.rejected_connections == 1
        assert srv.admission.rejected_not_allowed == 1
        w.close()


async def test_allow_list_serves_matching_networks_and_http() -> None:
    async with running(allow=["10.0.0.0/8", "127.0.0.0/8"]) as srv:
        r, w = await connect(srv.port)
        assert await ask(r, w, b"list-tube-used\r\n") == b"USING default\r\n"
        assert srv.rejected_connections == 0
        w.close()


def test_allow_list_matching() -> None:
    from beanstalk_py.shell.security import AllowList, SecurityConfigError

    allow = AllowList(["127.0.0.0/8", "2001:db8::/32"])
    assert allow.allows(("127.0.0.1", 5))
    assert allow.allows(("::ffff:127.0.0.5", 5, 0, 0))
    assert allow.allows(("2001:db8::1", 5, 0, 0))
    assert not allow.allows(("10.1.2.3", 5))
    assert not allow.allows(("::1", 5, 0, 0))
    assert allow.allows("")  # AF_UNIX
    assert allow.allows(None)
    with pytest.raises(SecurityConfigError):
        AllowList(["10.0.0.0/33"])


# --- robustness ------------------------------------------------------------------------------


class _BuggyJournal:
    """A journal seam whose update() fails in an unexpected way (a bug, not an I/O error)."""

    pending = False

    def put(self, job: object) -> bool:
        return True

    def update(self, job: object) -> bool:
        raise RuntimeError("simulated bug")

    def delete(self, job: object) -> None:
        return None

    def stats(self) -> JournalStats:
        return JournalStats()


async def test_unexpected_handler_error_answers_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as srv:
        srv.engine.journal = _BuggyJournal()
        r, w = await connect(srv.port)
        assert await ask(r, w, b"put 0 100 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
        assert await ask(r, w, b"kick-job 1\r\n") == b"INTERNAL_ERROR\r\n"
        assert await ask(r, w, b"list-tube-used\r\n") == b"USING default\r\n"
        w.close()
    errors = [rec for rec in caplog.records if "INTERNAL_ERROR" in rec.getMessage()]
    assert len(errors) == 1
    assert "simulated bug" in errors[0].getMessage()
    assert not errors[0].exc_info  # the traceback only at DEBUG


def check_replies(data: bytes) -> int:
    """Split ``data`` into protocol replies; fail on anything that is not one."""
    return len(split_replies(data))


def _mutate(rng: random.Random, line: bytes) -> bytes:
    b = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        op = rng.randint(0, 3)
        i = rng.randint(0, len(b))
        if op == 0:
            b[i:i] = bytes([rng.randint(0, 255)])
        elif op == 1 and b:
            del b[min(i, len(b) - 1)]
        elif op == 2 and b:
            b[min(i, len(b) - 1)] = rng.choice(b" 0123456789\r\n-+x\x00")
        else:
            b[i:i] = rng.choice([b"\r\n", b" ", b"9" * 25, b"put ", b"\r"])
    return bytes(b)


SEEDS = [
    b"put 0 0 60 3\r\nabc\r\n",
    b"reserve-with-timeout 0\r\n",
    b"delete 1\r\n",
    b"release 1 0 0\r\n",
    b"bury 1 0\r\n",
    b"kick 5\r\n",
    b"kick-job 2\r\n",
    b"touch 1\r\n",
    b"peek 1\r\n",
    b"peek-ready\r\n",
    b"peek-delayed\r\n",
    b"peek-buried\r\n",
    b"use t1\r\n",
    b"watch t1\r\n",
    b"ignore default\r\n",
    b"stats\r\n",
    b"stats-job 1\r\n",
    b"stats-tube default\r\n",
    b"list-tubes\r\n",
    b"list-tube-used\r\n",
    b"list-tubes-watched\r\n",
    b"pause-tube t1 0\r\n",
    b"reserve-job 1\r\n",
    b"put 0 0 60 70000\r\n",
    b"x" * 300 + b"\r\n",
]


async def test_socket_fuzz_keeps_the_server_serving(caplog: pytest.LogCaptureFixture) -> None:
    """A few hundred random/mutated streams over several connections, split at random points.

    Each fuzz connection is answered (or, after `quit`-like input, closed); a control
    connection checks the server after every stream; no INTERNAL_ERROR, no traceback.
    """
    rng = random.Random(1234)
    async with running(max_job_size=1000) as srv:
        cr, cw = await connect(srv.port)
        for stream_no in range(300):
            parts = [
                _mutate(rng, rng.choice(SEEDS)) if rng.random() < 0.7 else rng.choice(SEEDS)
                for _ in range(rng.randint(1, 12))
            ]
            if rng.random() < 0.1:
                parts.append(os.urandom(rng.randint(1, 400)))
            data = b"".join(parts)
            r, w = await connect(srv.port)
            cuts = sorted(rng.sample(range(len(data) + 1), min(3, len(data) + 1)))
            prev = 0
            for cut in [*cuts, len(data)]:
                w.write(data[prev:cut])
                prev = cut
                await asyncio.sleep(0)
            # Half-close: a waiting reserve ends (TIMED_OUT), what was pipelined is answered,
            # then the server closes - the stated reason is our EOF (or a `quit` we sent).
            w.write_eof()
            reply = await asyncio.wait_for(r.read(), TIMEOUT)
            w.close()
            assert b"INTERNAL_ERROR" not in reply, (stream_no, data)
            check_replies(reply)
            assert await ask(cr, cw, b"list-tube-used\r\n") == b"USING default\r\n"
        cw.close()
    bad = [rec for rec in caplog.records if rec.exc_info or "INTERNAL_ERROR" in rec.getMessage()]
    assert not bad


# --- many idle connections (server in a subprocess) ----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stats_value(sock: socket.socket, key: bytes) -> int:
    sock.sendall(b"stats\r\n")
    buf = b""
    while b"\r\n" not in buf or len(buf) < int(buf.split(b" ")[1].split(b"\r\n")[0]) + 9:
        chunk = sock.recv(65536)
        assert chunk
        buf += chunk
    for line in buf.split(b"\n"):
        if line.startswith(key + b":"):
            return int(line.split(b":")[1])
    raise AssertionError(key)


@contextlib.contextmanager
def subprocess_server(*args: str) -> Any:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "beanstalk_py", "-l", "127.0.0.1", "-p", str(port), *args],
        **ours_process(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_ten_thousand_idle_connections() -> None:
    n = 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 200
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    socks: list[socket.socket] = []
    try:
        with subprocess_server() as (port, _proc):
            t0 = time.monotonic()
            for _ in range(n):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as probe:
                probe.settimeout(TIMEOUT)
                deadline = time.monotonic() + 20
                while (cur := _stats_value(probe, b"current-connections")) < n + 1:
                    assert time.monotonic() < deadline, cur
                    time.sleep(0.05)
                # a few of the idle ones still answer
                for s in socks[:: n // 10]:
                    s.sendall(b"list-tube-used\r\n")
                    assert s.recv(100) == b"USING default\r\n"
            print(f"\n{n} idle connections accepted and served in {time.monotonic() - t0:.2f} s")
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_fd_exhaustion_closes_new_clients_instead_of_hanging() -> None:
    """A server whose fd limit is tiny: clients past the derived budget see a close."""
    port = _free_port()
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100)); "
        "from beanstalk_py.app.cli import main; sys.argv[0] = 'beanstalk-py'; main()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "-l", "127.0.0.1", "-p", str(port)],
        **ours_process(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    socks = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        served = closed = 0
        for _ in range(150):
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            s.settimeout(TIMEOUT)  # a hang fails the test
            socks.append(s)
            s.sendall(b"list-tube-used\r\n")
            try:
                reply = s.recv(100)
            except ConnectionResetError:
                reply = b""
            if reply == b"USING default\r\n":
                served += 1
            else:
                assert reply == b""
                closed += 1
        assert served >= 50 and closed >= 50, (served, closed)
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5)
    assert b"Traceback" not in err
    assert b"rejected connection" in err
