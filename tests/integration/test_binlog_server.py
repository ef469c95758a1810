"""The server's side of durability: write before reply, group commit, fail-stop on I/O errors.

A file-operations seam gates or breaks fsync/write so the ordering can be observed from a
real client over a real socket.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from beanstalk_py.binlog import Binlog, OsFileOps
from beanstalk_py.shell.config import Config
from beanstalk_py.shell.server import Server
from beanstalk_py.system import SystemClock


class GatedOps(OsFileOps):
    """Real files, but fsync waits for ``gate`` and can be made to fail; writes can fail too."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.fsyncs = 0
        self.fail_fsync = False
        self.fail_write = False
        self.one_shot = False  # the gate closes again behind each fsync it lets through
        self.at_gate = threading.Event()  # set when an fsync reaches the gate

    def fsync(self, fd: int) -> None:
        self.at_gate.set()
        if not self.gate.wait(10):
            raise OSError(errno.ETIMEDOUT, "test gate never opened")
        if self.one_shot:
            self.gate.clear()
        if self.fail_fsync:
            raise OSError(errno.EIO, "injected fsync error")
        self.fsyncs += 1
        super().fsync(fd)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        if self.fail_write:
            raise OSError(errno.EIO, "injected write error")
        return super().pwrite(fd, data, offset)


async def start(tmp_path: Path, ops: GatedOps, fsync_ms: int | None) -> Server:
    clock = SystemClock()
    cfg = Config(host="127.0.0.1", port=0, binlog_dir=tmp_path, fsync_ms=fsync_ms)
    binlog = Binlog.open(tmp_path, fsync_ms=fsync_ms, clock=clock, max_job_size=65535, files=ops)
    server = Server(cfg, clock=clock)
    result = binlog.replay()
    server.attach_binlog(binlog)
    server.restore(result)
    await server.start()
    return server


@pytest.fixture
def ops() -> GatedOps:
    return GatedOps()


@pytest.fixture
async def f0_server(tmp_path: Path, ops: GatedOps) -> AsyncIterator[Server]:
    server = await start(tmp_path, ops, 0)
    yield server
    ops.gate.set()
    await server.stop()
    assert server.binlog is not None
    server.binlog.close()


async def put(port: int, body: bytes = b"x") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body))
    await writer.drain()
    return reader, writer


async def test_f0_reply_waits_for_the_fsync(f0_server: Server, ops: GatedOps) -> None:
    ops.gate.clear()
    reader, writer = await put(f0_server.port)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readline(), 0.3)
    ops.gate.set()
    assert await asyncio.wait_for(reader.readline(), 5) == b"INSERTED 1\r\n"
    writer.close()


async def test_f0_a_reply_waits_for_its_own_batch_not_an_earlier_fsync(
    f0_server: Server, ops: GatedOps
) -> None:
    """A's fsync is running when B's put is written: A's fsync does not cover B's record,
    so B's reply must wait for the next fsync."""
    ops.gate.clear()
    ops.one_shot = True
    ops.at_gate.clear()
    ra, wa = await put(f0_server.port, b"a")
    # the fsync of A's batch has started and waits at the gate
    assert await asyncio.to_thread(ops.at_gate.wait, 5)
    rb, wb = await put(f0_server.port, b"b")
    await asyncio.sleep(0.2)  # B's record is written, its reply held
    ops.gate.set()  # exactly one fsync passes: A's
    assert await asyncio.wait_for(ra.readline(), 5) == b"INSERTED 1\r\n"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(rb.readline(), 0.3)
    ops.one_shot = False
    ops.gate.set()
    assert await asyncio.wait_for(rb.readline(), 5) == b"INSERTED 2\r\n"
    wa.close()
    wb.close()


async def test_f0_quit_after_a_put_closes_once_the_reply_is_sent(
    f0_server: Server, ops: GatedOps
) -> None:
    """``put`` then ``quit`` in one write: the reply waits for the fsync, and the connection
    must still close after it (the close is due when the held reply goes out)."""
    ops.gate.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", f0_server.port)
    writer.write(b"put 0 0 60 1\r\nx\r\nquit\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)
    ops.gate.set()
    assert await asyncio.wait_for(reader.read(), 5) == b"INSERTED 1\r\n"  # then EOF
    writer.close()


async def test_f0_one_fsync_covers_many_producers(f0_server: Server, ops: GatedOps) -> None:
    ops.gate.clear()
    clients = [await put(f0_server.port, b"job%d" % i) for i in range(30)]
    # Let the first fsync start and block; every other put queues behind it.
    await asyncio.sleep(0.2)
    before = ops.fsyncs
    ops.gate.set()
    replies = [await asyncio.wait_for(r.readline(), 5) for r, _ in clients]
    assert sorted(replies) == sorted(b"INSERTED %d\r\n" % i for i in range(1, 31))
    assert ops.fsyncs - before <= 3  # 30 acknowledgements, at most a few fsyncs
    for _, w in clients:
        w.close()


async def test_default_policy_replies_after_write_without_waiting_for_fsync(
    tmp_path: Path, ops: GatedOps
) -> None:
    server = await start(tmp_path, ops, 50)
    try:
        ops.gate.clear()
        reader, writer = await put(server.port)
        assert await asyncio.wait_for(reader.readline(), 5) == b"INSERTED 1\r\n"
        # the record is in the file already (write before reply), fsync or not
        assert b"x\r\n" in b"".join(p.read_bytes() for p in tmp_path.glob("binlog.*"))
        writer.close()
    finally:
        ops.gate.set()
        await server.stop()
        assert server.binlog is not None
        server.binlog.close()


async def test_write_error_never_acknowledges_and_stops_the_server(
    tmp_path: Path, ops: GatedOps
) -> None:
    server = await start(tmp_path, ops, 50)
    try:
        reader, writer = await put(server.port, b"kept")
        assert await asyncio.wait_for(reader.readline(), 5) == b"INSERTED 1\r\n"
        ops.fail_write = True
        writer.write(b"put 0 0 60 4\r\nlost\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed, no INSERTED
        assert server.failed
        assert server.stopped is not None and server.stopped.is_set()
    finally:
        await server.stop()
    ops.fail_write = False
    again = Binlog.open(tmp_path, fsync_ms=50, clock=SystemClock(), max_job_size=65535)
    try:
        result = again.replay()
        assert [(j.id, j.body) for j in result.jobs] == [(1, b"kept\r\n")]
    finally:
        again.close()


async def test_f0_fsync_error_never_acknowledges(f0_server: Server, ops: GatedOps) -> None:
    ops.fail_fsync = True
    reader, _ = await put(f0_server.port)
    assert await asyncio.wait_for(reader.read(100), 5) == b""
    assert f0_server.failed
