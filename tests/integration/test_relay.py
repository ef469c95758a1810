"""A cluster follower's relay (``Server.set_relay``): clients of a follower are served by the
leader, byte for byte, and lose their connection when the leader changes.

Two in-process servers on this loop, over real loopback sockets: a "leader" and a "follower"
whose ``set_relay`` points at the leader's port. No etcd: what decides the leader is not part
of the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import greenstalk
import pytest
from support.client import RawClient
from support.harness import DEFAULT_MAX_JOB_SIZE, ServerHandle
from support.inprocess import running
from support.yamlfmt import quoted_keys

from beanstalk_py.core import stats
from beanstalk_py.shell import relay as relay_mod
from beanstalk_py.shell.relay import RELAY_BUFFER
from beanstalk_py.shell.server import Server

TIMEOUT = 5.0


def addr(srv: Server) -> tuple[str, int]:
    return ("127.0.0.1", srv.port)


@contextlib.asynccontextmanager
async def cluster(**leader_opts: Any) -> AsyncIterator[tuple[Server, Server]]:
    """(leader, follower): the follower relays to the leader."""
    async with running(**leader_opts) as leader, running() as follower:
        follower.set_relay(addr(leader))
        yield leader, follower


async def read_eof(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> bytes:
    """Everything up to EOF; fails the test if the connection stays open."""
    return await asyncio.wait_for(reader.read(), timeout)


def free_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def counts(srv: Server) -> dict[str, int]:
    return dict(stats.server_counts(srv.engine))


async def http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        return await read_eof(reader)
    finally:
        writer.close()


# --- the protocol transcripts, through a follower ---------------------------------------------

TRANSCRIPT_MODULES = (
    "test_transcripts_protocol",
    "test_transcripts_put",
    "test_transcripts_reserve",
    "test_transcripts_tubes",
    "test_transcripts_peek_kick",
    "test_transcripts_stats",
)


def _transcripts() -> list[Any]:
    """Every transcript that takes only ``server`` (parametrized ones and those on a UNIX socket
    are left out), with its ``server_args`` applied to the leader."""
    found = []
    for modname in TRANSCRIPT_MODULES:
        mod = importlib.import_module(modname)
        for name, fn in vars(mod).items():
            if not name.startswith("test_") or not inspect.iscoroutinefunction(fn):
                continue
            if list(inspect.signature(fn).parameters) != ["server"]:
                continue
            marks = {m.name: m for m in getattr(fn, "pytestmark", [])}
            if "parametrize" in marks or "reference_only" in marks:
                continue
            args = dict(marks["server_args"].kwargs) if "server_args" in marks else {}
            if args.get("unix"):
                continue
            short = modname.removeprefix("test_transcripts_")
            found.append(pytest.param(fn, args, id=f"{short}::{name}"))
    return found


async def _settle() -> None:
    """Let bytes already sent cross both hops (client -> follower -> leader) and be handled."""
    for _ in range(3):
        for _ in range(10):
            await asyncio.sleep(0)
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(("transcript", "args"), _transcripts())
async def test_transcript_through_follower(
    transcript: Callable[[ServerHandle], Awaitable[None]], args: dict[str, Any]
) -> None:
    """The transcripts assert the leader's exact replies; here every byte goes via the relay."""
    opts = {"max_job_size": args["max_job_size"]} if "max_job_size" in args else {}
    async with cluster(**opts) as (leader, follower):

        async def advance(seconds: float) -> None:
            await _settle()
            leader.advance(seconds)
            await _settle()

        async def drain() -> None:
            await _settle()
            leader.engine.drain()

        handle = ServerHandle(
            host="127.0.0.1",
            port=follower.port,
            unix_path=None,
            pid=os.getpid(),
            max_job_size=args.get("max_job_size", DEFAULT_MAX_JOB_SIZE),
            reference=False,
            quoted=quoted_keys(None),
            _advance=advance,
            _drain=drain,
        )
        if args.get("drain"):
            await handle.set_drain()
        before = counts(follower)
        try:
            await transcript(handle)
        finally:
            await handle.close_clients()
        assert follower.relayed_total >= 1
        assert counts(follower) == before  # the follower's engine saw none of it


# --- real clients -----------------------------------------------------------------------------


async def test_greenstalk_through_follower() -> None:
    async with cluster() as (leader, follower):
        body = os.urandom(60 * 1024)

        def work() -> tuple[int, bytes, int]:
            with greenstalk.Client(addr(follower), encoding=None, use="relay") as c:
                c.watch("relay")
                jid = c.put(body, ttr=30)
                job = c.reserve(timeout=5)
                got = job.body
                assert isinstance(got, bytes)
                c.delete(job)
                return jid, got, job.id

        jid, got, reserved = await asyncio.to_thread(work)
        assert got == body and reserved == jid
        led = counts(leader)
        assert led["cmd-put"] == 1 and led["cmd-delete"] == 1 and led["total-jobs"] == 1
        assert counts(follower)["cmd-put"] == 0


async def test_pipelined_requests_keep_order() -> None:
    async with cluster() as (_leader, follower):
        c = await RawClient.connect("127.0.0.1", follower.port)
        n = 200
        await c.send(b"".join(b"put 0 0 10 4\r\n%04d\r\n" % i for i in range(n)) + b"peek 200\r\n")
        await c.expect(b"".join(b"INSERTED %d\r\n" % (i + 1) for i in range(n)))
        await c.expect(b"FOUND 200 4\r\n0199\r\n")
        await c.close()


async def test_half_close_still_gets_the_replies() -> None:
    """A client that sends its commands and shuts down its side (nc -N) gets every reply."""
    async with cluster() as (_leader, follower):
        reader, writer = await asyncio.open_connection("127.0.0.1", follower.port)
        writer.write(b"put 0 0 10 1\r\nx\r\nput 0 0 10 1\r\ny\r\n")
        writer.write_eof()
        assert await read_eof(reader) == b"INSERTED 1\r\nINSERTED 2\r\n"
        writer.close()


# --- leader changes ---------------------------------------------------------------------------


async def test_leader_change_closes_relayed_connections_only() -> None:
    async with running() as leader, running() as leader2, running() as follower:
        # accepted before relaying: a local session of the follower
        local = await RawClient.connect("127.0.0.1", follower.port)
        await local.send(b"use here\r\n")
        await local.expect(b"USING here\r\n")

        follower.set_relay(addr(leader))
        idle_r, _idle_w = await asyncio.open_connection("127.0.0.1", follower.port)  # sends nothing
        r, w = await asyncio.open_connection("127.0.0.1", follower.port)
        w.write(b"put 0 0 10 2\r\nhi\r\n")
        assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"INSERTED 1\r\n"
        assert follower.relayed_current == 1

        follower.set_relay(addr(leader2))
        assert await read_eof(r) == b""
        assert await read_eof(idle_r) == b""
        # the local session is untouched and still served by the follower's own engine
        await local.send(b"list-tube-used\r\n")
        await local.expect(b"USING here\r\n")

        # a new connection goes to the new leader
        r2, w2 = await asyncio.open_connection("127.0.0.1", follower.port)
        w2.write(b"put 0 0 10 2\r\nho\r\n")
        assert await asyncio.wait_for(r2.readline(), TIMEOUT) == b"INSERTED 1\r\n"
        assert counts(leader2)["cmd-put"] == 1 and counts(leader)["cmd-put"] == 1

        # no leader (or promoted): relayed connections close, new ones are served here
        follower.set_relay(None)
        assert await read_eof(r2) == b""
        r3, w3 = await asyncio.open_connection("127.0.0.1", follower.port)
        w3.write(b"put 0 0 10 2\r\nme\r\n")
        assert await asyncio.wait_for(r3.readline(), TIMEOUT) == b"INSERTED 1\r\n"
        assert counts(follower)["cmd-put"] == 1
        await local.send(b"list-tube-used\r\n")
        await local.expect(b"USING here\r\n")
        await asyncio.sleep(0.05)
        assert follower.relayed_current == 0 and follower.relayed_total == 2
        for wr in (w, w2, w3, _idle_w):
            wr.close()
        await local.close()


async def test_same_leader_again_keeps_connections() -> None:
    async with cluster() as (leader, follower):
        c = await RawClient.connect("127.0.0.1", follower.port)
        await c.send(b"use t\r\n")
        await c.expect(b"USING t\r\n")
        follower.set_relay(addr(leader))  # a watch repeating the same leader is no change
        await c.send(b"list-tube-used\r\n")
        await c.expect(b"USING t\r\n")
        await c.close()


async def test_follower_stop_closes_both_sides() -> None:
    async with running() as leader:
        async with running() as follower:
            follower.set_relay(addr(leader))
            reader, writer = await asyncio.open_connection("127.0.0.1", follower.port)
            writer.write(b"use t\r\n")
            assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"USING t\r\n"
            assert counts(leader)["current-connections"] == 1
        assert await read_eof(reader) == b""
        writer.close()
        for _ in range(200):  # the leader sees the relay's connection end
            if counts(leader)["current-connections"] == 0:
                break
            await asyncio.sleep(0.005)
        assert counts(leader)["current-connections"] == 0


# --- the leader unreachable -------------------------------------------------------------------


async def test_leader_down_closes_the_client_promptly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running() as leader, running() as follower:
        follower.set_relay(("127.0.0.1", free_port()))
        reader, writer = await asyncio.open_connection("127.0.0.1", follower.port)
        t0 = time.monotonic()
        writer.write(b"put 0 0 10 1\r\nx\r\n")
        assert await read_eof(reader, 2.0) == b""
        assert time.monotonic() - t0 < 1.0
        writer.close()
        failed = [r for r in caplog.records if "cannot connect to leader" in r.getMessage()]
        assert len(failed) == 1 and failed[0].levelno == logging.INFO
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]

        # the follower still serves: HTTP here, and relaying once a leader is known
        assert (await http_get(follower.port, "/healthz")).endswith(b"\r\n\r\nok\n")
        follower.set_relay(addr(leader))
        c = await RawClient.connect("127.0.0.1", follower.port)
        await c.send(b"put 0 0 10 1\r\nx\r\n")
        await c.expect(b"INSERTED 1\r\n")
        await c.close()
        await asyncio.sleep(0.05)
        assert follower.relayed_current == 0


async def test_leader_not_answering_the_connect_times_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A leader host that drops the SYN (here: a listener whose backlog is full)."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(relay_mod, "CONNECT_TIMEOUT", 0.3)
    with socket.socket() as stuck, socket.socket() as filler:
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(0)
        filler.connect(stuck.getsockname())  # fills the backlog: later SYNs are dropped
        async with running() as follower:
            follower.set_relay(stuck.getsockname())
            reader, writer = await asyncio.open_connection("127.0.0.1", follower.port)
            t0 = time.monotonic()
            writer.write(b"stats\r\n")
            assert await read_eof(reader, 3.0) == b""
            assert time.monotonic() - t0 < 2.0
            writer.close()
    failed = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(failed) == 1 and failed[0].endswith("TimeoutError"), failed


async def test_leader_refusing_the_connection_closes_the_client() -> None:
    """The leader's --max-connections closes the relay's connection at accept: so is the client's."""
    async with cluster(max_connections=1) as (leader, follower):
        taken = await RawClient.connect("127.0.0.1", leader.port)
        await taken.send(b"use x\r\n")
        await taken.expect(b"USING x\r\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", follower.port)
        writer.write(b"stats\r\n")
        assert await read_eof(reader, 2.0) == b""
        writer.close()
        await taken.close()


async def test_admission_limits_apply_to_relayed_connections() -> None:
    async with running() as leader, running(max_connections=2) as follower:
        follower.set_relay(addr(leader))
        clients = [await RawClient.connect("127.0.0.1", follower.port) for _ in range(2)]
        for c in clients:
            await c.send(b"use x\r\n")
            await c.expect(b"USING x\r\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", follower.port)
        writer.write(b"use x\r\n")
        assert await read_eof(reader) == b""
        assert follower.rejected_connections == 1
        writer.close()
        for c in clients:
            await c.close()


# --- what stays local -------------------------------------------------------------------------


async def test_http_is_answered_by_the_follower() -> None:
    async with cluster() as (leader, follower):
        c = await RawClient.connect("127.0.0.1", follower.port)
        await c.send(b"put 0 0 10 1\r\nx\r\n")
        await c.expect(b"INSERTED 1\r\n")
        health = await http_get(follower.port, "/healthz")
        assert health.startswith(b"HTTP/1.1 200 ") and health.endswith(b"ok\n")
        metrics = (await http_get(follower.port, "/metrics")).decode()
        assert metrics.startswith("HTTP/1.1 200 ")
        # the follower's own figures: the put went to the leader
        assert re.search(r"^beanstalkd_cmd_put_total 0\.0$", metrics, re.M), metrics[-2000:]
        assert counts(leader)["cmd-put"] == 1
        assert follower.relayed_total == 1  # the HTTP requests were not relayed

        # still answered here with the leader unreachable (a relayed request would just close)
        follower.set_relay(("127.0.0.1", free_port()))
        assert (await http_get(follower.port, "/healthz")).startswith(b"HTTP/1.1 200 ")
        await c.close()


async def test_follower_engine_stats_do_not_move() -> None:
    async with cluster() as (leader, follower):
        keys = ("current-connections", "total-connections", "cmd-put", "total-jobs")
        before = {k: counts(follower)[k] for k in keys}
        clients = [await RawClient.connect("127.0.0.1", follower.port) for _ in range(3)]
        for i, c in enumerate(clients):
            await c.send(b"put 0 0 10 1\r\nx\r\nreserve-with-timeout 0\r\n")
            await c.expect(b"INSERTED %d\r\nRESERVED %d 1\r\nx\r\n" % (i + 1, i + 1))
            await c.send(b"delete %d\r\n" % (i + 1))
            await c.expect(b"DELETED\r\n")
        assert {k: counts(follower)[k] for k in keys} == before
        led = counts(leader)
        assert led["current-connections"] == 3 and led["cmd-put"] == 3
        assert follower.relayed_current == 3 and follower.relayed_total == 3
        for c in clients:
            await c.close()


# --- back-pressure ----------------------------------------------------------------------------


async def test_back_pressure_bounds_the_relay_buffers() -> None:
    """A client pipelines ~16 MB of replies' worth of peeks and 20 MB of puts without reading.

    The leader stops reading once its replies back up (output limit 64 KiB); the relay must then
    stop reading the leader (client side full) and the client (leader side full), so neither of
    its buffers grows past its limit by more than a read, and the client's own send stalls.
    Then the client reads slowly and every reply arrives intact and in order."""
    big = 1 << 20
    puts, put_size, peeks = 320, 64 * 1024, 16
    async with cluster(max_job_size=big, output_limit=65536) as (leader, follower):
        reader, writer = await asyncio.open_connection("127.0.0.1", follower.port)
        writer.write(b"put 0 0 60 %d\r\n" % big + b"j" * big + b"\r\n")
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"INSERTED 1\r\n"
        conns = [c for c in follower.conns if c.relay is not None]
        assert len(conns) == 1
        relay = conns[0].relay
        assert relay is not None

        peak = [0, 0]
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                up, down = relay.buffered()
                peak[0], peak[1] = max(peak[0], up), max(peak[1], down)
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        burst = b"peek 1\r\n" * peeks
        burst += (b"put 0 0 60 %d\r\n" % put_size + b"p" * put_size + b"\r\n") * puts
        writer.write(burst)  # no drain: what cannot be sent stays in the client's own buffer
        await asyncio.sleep(1.0)
        # bounded: the limit plus at most one read (asyncio reads up to 256 KiB at a time)
        bound = RELAY_BUFFER + 256 * 1024
        assert peak[0] <= bound, f"client -> leader buffer reached {peak[0]}"
        assert peak[1] <= bound, f"leader -> client buffer reached {peak[1]}"
        # the pipeline is full end to end: the client could not hand everything over
        assert writer.transport.get_write_buffer_size() > 0

        # now a slow reader: every reply, in order
        found = b"FOUND 1 %d\r\n" % big + b"j" * big + b"\r\n"
        expected_len = peeks * len(found) + sum(
            len(b"INSERTED %d\r\n" % (i + 2)) for i in range(puts)
        )
        got = bytearray()
        while len(got) < expected_len:
            chunk = await asyncio.wait_for(reader.read(256 * 1024), TIMEOUT)
            assert chunk, "connection closed early"
            got += chunk
            await asyncio.sleep(0.001)
        stop.set()
        await sampler
        assert bytes(got[: peeks * len(found)]) == found * peeks
        assert bytes(got[peeks * len(found) :]) == b"".join(
            b"INSERTED %d\r\n" % (i + 2) for i in range(puts)
        )
        assert counts(leader)["current-jobs-ready"] == puts + 1
        assert peak[0] <= bound, f"client -> leader buffer reached {peak[0]}"
        assert peak[1] <= bound, f"leader -> client buffer reached {peak[1]}"
        writer.close()
