"""peek*, kick, kick-job, bury, touch: cttests 4-16 and the kick strtoul rules
(docs/COMPATIBILITY.md, "Argument parsing", "Quirks pinned by tests")."""

from __future__ import annotations

import os
import socket

import pytest
from support.harness import ServerFactory, ServerHandle
from support.servers import remove_unix_dir, short_unix_path


async def test_peek_ok(server: ServerHandle) -> None:  # cttest 4
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\n")
    await c.send(b"a\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"peek 1\r\n")
    await c.expect(b"FOUND 1 1\r\n")
    await c.expect(b"a\r\n")


async def test_peek_not_found(server: ServerHandle) -> None:  # cttest 5
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\na\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"peek 2\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"peek 18446744073709551615\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"peek 0\r\n")
    await c.expect(b"NOT_FOUND\r\n")


@pytest.mark.server_args(unix=True)
async def test_peek_ok_unix(server: ServerHandle) -> None:  # cttest 6
    assert server.unix_path is not None
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\na\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"peek 1\r\n")
    await c.expect(b"FOUND 1 1\r\na\r\n")


async def test_unix_auto_removal(server_factory: ServerFactory) -> None:  # cttest 7
    path = short_unix_path()
    try:
        # leave a stale socket file behind, as a killed server would
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        assert os.path.exists(path)
        for _ in range(2):
            async with server_factory(unix_path=path) as srv:
                c = await srv.connect()
                await c.send(b"put 0 0 1 1\r\na\r\npeek 1\r\n")
                await c.expect(b"INSERTED 1\r\nFOUND 1 1\r\na\r\n")
    finally:
        remove_unix_dir(path)


@pytest.mark.parametrize(
    "line",
    [
        b"peek 18446744073709551616",  # cttest 8
        b"peek 18446744073709551616123456789012345678901234567890",
        b"peek foo111",
        b"peek 111foo",
        b"peek -1",
        b"peek +1",
        b"peek 1 ",
        b"peek ",
    ],
)
async def test_peek_bad_format(server: ServerHandle, line: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


async def test_peek_delayed(server: ServerHandle) -> None:  # cttest 9
    c = await server.connect()
    await c.send(b"peek-delayed\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"put 0 0 1 1\r\nA\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"put 0 99 1 1\r\nB\r\n")
    await c.expect(b"INSERTED 2\r\n")
    await c.send(b"put 0 1 1 1\r\nC\r\n")
    await c.expect(b"INSERTED 3\r\n")
    await c.send(b"peek-delayed\r\n")
    await c.expect(b"FOUND 3 1\r\nC\r\n")
    await c.send(b"delete 3\r\n")
    await c.expect(b"DELETED\r\n")
    await c.send(b"peek-delayed\r\n")
    await c.expect(b"FOUND 2 1\r\nB\r\n")
    await c.send(b"delete 2\r\n")
    await c.expect(b"DELETED\r\n")
    await c.send(b"peek-delayed\r\n")
    await c.expect(b"NOT_FOUND\r\n")


async def test_peek_delayed_tie_goes_to_lowest_id(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 9 50 1 1\r\nA\r\nput 0 50 1 1\r\nB\r\npeek-delayed\r\n")
    await c.expect(b"INSERTED 1\r\nINSERTED 2\r\nFOUND 1 1\r\nA\r\n")


async def test_peek_buried_kick(server: ServerHandle) -> None:  # cttest 10
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\nA\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"bury 1 0\r\n")  # not reserved
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"peek-buried\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"reserve-with-timeout 0\r\n")
    await c.expect(b"RESERVED 1 1\r\nA\r\n")
    await c.send(b"bury 1 0\r\n")
    await c.expect(b"BURIED\r\n")
    await c.send(b"peek-buried\r\n")
    await c.expect(b"FOUND 1 1\r\nA\r\n")
    await c.send(b"kick 1\r\n")
    await c.expect(b"KICKED 1\r\n")
    await c.send(b"peek-buried\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"peek-ready\r\n")
    await c.expect(b"FOUND 1 1\r\nA\r\n")
    await c.send(b"kick 1\r\n")
    await c.expect(b"KICKED 0\r\n")


async def test_peek_ready_order_and_used_tube_only(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 5 0 1 1\r\na\r\nput 3 0 1 1\r\nb\r\nput 3 0 1 1\r\nc\r\n")
    await c.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n")
    await c.send(b"peek-ready\r\n")
    await c.expect(b"FOUND 2 1\r\nb\r\n")
    # peek-* look at the used tube, not the watched ones
    await c.send(b"use other\r\npeek-ready\r\nwatch other\r\nuse default\r\npeek-ready\r\n")
    await c.expect(b"USING other\r\nNOT_FOUND\r\nWATCHING 2\r\nUSING default\r\nFOUND 2 1\r\nb\r\n")


async def test_peek_sees_job_reserved_by_other(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(b"use t\r\nput 0 0 10 2\r\nhi\r\n")
    await a.expect(b"USING t\r\nINSERTED 1\r\n")
    await b.send(b"watch t\r\nreserve\r\n")
    await b.expect(b"WATCHING 2\r\nRESERVED 1 2\r\nhi\r\n")
    await a.send(b"peek 1\r\npeek-ready\r\n")
    await a.expect(b"FOUND 1 2\r\nhi\r\nNOT_FOUND\r\n")


async def test_peek_buried_fifo(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 9 0 10 1\r\na\r\nput 1 0 10 1\r\nb\r\n")
    await c.expect(b"INSERTED 1\r\nINSERTED 2\r\n")
    await c.send(b"reserve\r\nreserve\r\n")
    await c.expect(b"RESERVED 2 1\r\nb\r\nRESERVED 1 1\r\na\r\n")
    await c.send(b"bury 1 0\r\nbury 2 0\r\npeek-buried\r\nkick 1\r\npeek-buried\r\n")
    await c.expect(b"BURIED\r\nBURIED\r\nFOUND 1 1\r\na\r\nKICKED 1\r\nFOUND 2 1\r\nb\r\n")


@pytest.mark.parametrize("line", [b"touch a111", b"touch 111a", b"touch !@#!@#"])  # cttest 11
async def test_touch_bad_format(server: ServerHandle, line: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


@pytest.mark.parametrize("line", [b"touch 1", b"touch 100000000000000"])  # cttest 12
async def test_touch_not_found(server: ServerHandle, line: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(b"NOT_FOUND\r\n")


async def test_touch_only_own_reserved(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(b"put 0 0 10 1\r\na\r\ntouch 1\r\nreserve\r\ntouch 1\r\n")
    await a.expect(b"INSERTED 1\r\nNOT_FOUND\r\nRESERVED 1 1\r\na\r\nTOUCHED\r\n")
    await b.send(b"touch 1\r\n")
    await b.expect(b"NOT_FOUND\r\n")


@pytest.mark.parametrize(
    "line", [b"bury 111abc 2", b"bury 111", b"bury 111 222abc", b"bury 1 -1", b"bury 1 2 "]
)  # cttest 13
async def test_bury_bad_format(server: ServerHandle, line: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


@pytest.mark.parametrize("line", [b"kick-job a111", b"kick-job 111a", b"kick-job !@#!@#"])
async def test_kickjob_bad_format(server: ServerHandle, line: bytes) -> None:  # cttest 14
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


async def test_kickjob_buried(server: ServerHandle) -> None:  # cttest 15
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\nA\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"reserve\r\n")
    await c.expect(b"RESERVED 1 1\r\nA\r\n")
    await c.send(b"bury 1 0\r\n")
    await c.expect(b"BURIED\r\n")
    await c.send(b"kick-job 100\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"kick-job 1\r\n")
    await c.expect(b"KICKED\r\n")
    await c.send(b"kick-job 1\r\n")
    await c.expect(b"NOT_FOUND\r\n")


async def test_kickjob_delayed(server: ServerHandle) -> None:  # cttest 16
    c = await server.connect()
    await c.send(b"put 0 0 1 0\r\n\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"put 0 10 1 0\r\n\r\n")
    await c.expect(b"INSERTED 2\r\n")
    await c.send(b"kick-job 1\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"kick-job 2\r\n")
    await c.expect(b"KICKED\r\n")
    await c.send(b"kick-job 2\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"peek-ready\r\n")
    await c.expect(b"FOUND 1 0\r\n\r\n")


async def test_kickjob_any_tube_and_not_reserved(server: ServerHandle) -> None:
    a = await server.connect()
    await a.send(b"use elsewhere\r\nput 0 5 1 1\r\nx\r\nput 0 0 10 1\r\ny\r\n")
    await a.expect(b"USING elsewhere\r\nINSERTED 1\r\nINSERTED 2\r\n")
    b = await server.connect()
    await b.send(b"kick-job 1\r\nreserve-job 2\r\nkick-job 2\r\n")
    await b.expect(b"KICKED\r\nRESERVED 2 1\r\ny\r\nNOT_FOUND\r\n")


async def test_kick_buried_before_delayed(server: ServerHandle) -> None:
    """1 buried + 2 delayed: `kick 10` kicks only the buried one; the next kicks the delayed."""
    c = await server.connect()
    await c.send(b"put 0 0 10 1\r\na\r\nreserve\r\nbury 1 0\r\n")
    await c.expect(b"INSERTED 1\r\nRESERVED 1 1\r\na\r\nBURIED\r\n")
    await c.send(b"put 0 100 10 1\r\nb\r\nput 0 50 10 1\r\nc\r\n")
    await c.expect(b"INSERTED 2\r\nINSERTED 3\r\n")
    await c.send(b"kick 10\r\n")
    await c.expect(b"KICKED 1\r\n")
    await c.send(b"kick 1\r\n")  # delayed, deadline order: job 3 first
    await c.expect(b"KICKED 1\r\n")
    await c.send(b"peek-delayed\r\n")
    await c.expect(b"FOUND 2 1\r\nb\r\n")
    await c.send(b"kick 10\r\nkick 10\r\n")
    await c.expect(b"KICKED 1\r\nKICKED 0\r\n")


async def test_kick_only_used_tube(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"use a\r\nput 0 100 10 1\r\nx\r\nuse b\r\nkick 5\r\nuse a\r\nkick 5\r\n")
    await c.expect(b"USING a\r\nINSERTED 1\r\nUSING b\r\nKICKED 0\r\nUSING a\r\nKICKED 1\r\n")


async def _put_delayed(server: ServerHandle, n: int) -> None:
    c = await server.connect()
    for i in range(1, n + 1):
        await c.send(b"put 0 100 10 1\r\nx\r\n")
        await c.expect(b"INSERTED %d\r\n" % i)


@pytest.mark.parametrize(
    ("bound", "kicked"),
    [
        (b"-1", 5),  # strtoul wraps to 2**64-1, truncated to u32 4294967295
        (b"2abc", 2),
        (b"4294967298", 2),  # truncated to 32 bits
        (b"4294967296", 0),
        (b"+1", 1),
        (b"+3", 3),
        (b"  3", 3),
        (b"\t3", 3),
        (b"0", 0),
        (b"003", 3),
        (b"3 4", 3),
        (b"18446744073709551615", 5),
    ],
)
async def test_kick_bound_uses_strtoul(server: ServerHandle, bound: bytes, kicked: int) -> None:
    await _put_delayed(server, 5)
    c = await server.connect()
    await c.send(b"kick " + bound + b"\r\n")
    await c.expect(b"KICKED %d\r\n" % kicked)


@pytest.mark.parametrize(
    "bound", [b"abc", b"", b"-", b"+", b"18446744073709551616", b"99999999999999999999999"]
)
async def test_kick_bad_format(server: ServerHandle, bound: bytes) -> None:
    c = await server.connect()
    await c.send(b"kick " + bound + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
