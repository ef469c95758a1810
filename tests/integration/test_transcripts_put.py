"""put and delete: docs/COMPATIBILITY.md "Commands" and the put quirks of "Quirks pinned by tests";
beanstalkd testserv.c cttests 3, 20-23, 25, 27-31, 33, 39."""

from __future__ import annotations

import pytest
from support.harness import ServerHandle
from support.transcript import stats_of


@pytest.mark.server_args(drain=True)
async def test_put_in_drain(server: ServerHandle) -> None:  # cttest 3
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\nx\r\n")
    await c.expect(b"DRAINING\r\n")


async def test_drain_consumes_body_and_id_other_commands_work(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\na\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await server.set_drain()
    await c.send(b"put 0 0 1 3\r\nabc\r\nput 0 0 1 1\r\n")
    await c.expect(b"DRAINING\r\n")
    await c.expect_nothing(0.05)  # DRAINING only after the whole body
    await c.send(b"b\r\n")
    await c.expect(b"DRAINING\r\n")
    await c.send(b"peek 2\r\nreserve\r\ndelete 1\r\n")
    await c.expect(b"NOT_FOUND\r\nRESERVED 1 1\r\na\r\nDELETED\r\n")


@pytest.mark.server_args(max_job_size=10)
async def test_too_big(server: ServerHandle) -> None:  # cttest 20
    c = await server.connect()
    await c.send(b"put 0 0 0 11\r\n")
    await c.send(b"delete 9999\r\n")  # 13 bytes = 11 + CRLF: consumed as the body
    await c.send(b"put 0 0 0 1\r\n")
    await c.send(b"x\r\n")
    await c.expect(b"JOB_TOO_BIG\r\n")
    await c.expect(b"INSERTED 1\r\n")


@pytest.mark.server_args(max_job_size=10)
async def test_job_too_big_waits_for_the_discarded_bytes(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 0 11\r\n0123456789")
    await c.expect_nothing(0.1)
    await c.send(b"ab\r")  # 13 bytes total: 11 + 2, not checked for CRLF
    await c.expect(b"JOB_TOO_BIG\r\n")
    await c.send(b"put 0 0 0 10\r\n0123456789\r\n")  # the limit is inclusive
    await c.expect(b"INSERTED 1\r\n")


@pytest.mark.server_args(max_job_size=10)
async def test_job_too_big_checked_before_trailing_garbage(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 0 11 garbage\r\n" + b"y" * 13)
    await c.expect(b"JOB_TOO_BIG\r\n")
    await c.send(b"put 0 0 0 1 garbage\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


async def test_job_too_big_default_limit_with_garbage(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Quirks pinned by tests"
    c = await server.connect()
    await c.send(b"put 0 0 0 100000 garbage\r\n")
    await c.send_large(100000 + 2)
    await c.expect(b"JOB_TOO_BIG\r\n")
    await c.send(b"put 0 0 0 65535\r\n")
    await c.send_large(65535)
    await c.send(b"\r\n")
    await c.expect(b"INSERTED 1\r\n")


@pytest.mark.server_args(max_job_size=4294967295)
async def test_job_size_invalid(server: ServerHandle) -> None:  # cttest 21
    c = await server.connect()
    await c.send(b"put 0 0 0 4294967296\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"put 0 0 0 10b\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"put 0 0 0 --!@#$%^&&**()0b\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"put 0 0 0 1\r\n")
    await c.send(b"x\r\n")
    await c.expect(b"INSERTED 1\r\n")


@pytest.mark.slow
@pytest.mark.server_args(max_job_size=1073741824)
async def test_job_size_max_plus_1(server: ServerHandle) -> None:  # cttest 22
    c = await server.connect()
    await c.send(b"put 0 0 0 1073741825\r\n")
    await c.send_large(1073741825 + 2)
    await c.expect(b"JOB_TOO_BIG\r\n", timeout=30)


async def test_delete_ready(server: ServerHandle) -> None:  # cttest 23
    c = await server.connect()
    await c.send(b"put 0 0 0 0\r\n\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"delete 1\r\n")
    await c.expect(b"DELETED\r\n")
    await c.send(b"delete 1\r\n")
    await c.expect(b"NOT_FOUND\r\n")


async def test_empty_body_round_trip(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 0 0\r\n\r\npeek 1\r\nreserve\r\n")
    await c.expect(b"INSERTED 1\r\nFOUND 1 0\r\n\r\nRESERVED 1 0\r\n\r\n")


async def test_body_bytes_are_opaque(server: ServerHandle) -> None:
    body = bytes(range(256)) + b"\r\nput 0 0 0 0\r\n\x00"
    c = await server.connect()
    await c.send(b"put 0 0 0 %d\r\n%s\r\n" % (len(body), body))
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"reserve\r\n")
    await c.expect(b"RESERVED 1 %d\r\n%s\r\n" % (len(body), body))


@pytest.mark.parametrize(
    "line",
    [
        b"put 512 -1 100 0",  # cttest 27 negative_delay
        b"put -1kkdj9djjkd9 0 100 1",  # cttest 28 garbage_priority
        b"put -1 0 100 1",  # cttest 29 negative_priority
        b"put 4294967296 0 100 1",  # cttest 31 too_big_priority
        b"put 0 4294967296 0 1",
        b"put 0 0 4294967296 1",
        b"put 0 0 0 4294967296",
        b"put +1 0 0 1",
        b"put 0x1 0 0 1",
        b"put 0 0 0",
        b"put 0 0 0 1 x",
        b"put 0 0 0 1 ",
        b"put 0\t0 0 1",
        b"put a 0 0 1",
    ],
)
async def test_put_bad_format_does_not_consume_body(server: ServerHandle, line: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"x\r\n")  # the would-be body is parsed as a command
    await c.expect(b"UNKNOWN_COMMAND\r\n")
    await c.send(b"put 0 0 0 1\r\ny\r\n")
    await c.expect(b"INSERTED 1\r\n")  # no id was consumed


async def test_put_plus_sign_then_body_line(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Quirks pinned by tests"
    c = await server.connect()
    await c.send(b"put +1 0 0 1\r\nx\r\n")
    await c.expect(b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n")


async def test_max_priority(server: ServerHandle) -> None:  # cttest 30
    c = await server.connect()
    await c.send(b"put 4294967295 0 100 1\r\n")
    await c.send(b"x\r\n")
    await c.expect(b"INSERTED 1\r\n")


async def test_small_delay(server: ServerHandle) -> None:  # cttest 33
    c = await server.connect()
    await c.send(b"put 0 1 1 0\r\n")
    await c.send(b"\r\n")
    await c.expect(b"INSERTED 1\r\n")


async def test_zero_delay(server: ServerHandle) -> None:  # cttest 39
    c = await server.connect()
    await c.send(b"put 0 0 1 0\r\n")
    await c.send(b"\r\n")
    await c.expect(b"INSERTED 1\r\n")


async def test_put_accepts_extra_spaces_and_leading_zeros(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put  007   0 0  2\r\nab\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"peek 0001\r\n")
    await c.expect(b"FOUND 1 2\r\nab\r\n")


async def test_expected_crlf_consumes_id(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Quirks pinned by tests"
    c = await server.connect()
    await c.send(b"put 0 0 0 1\r\nxyz\r\n")
    await c.expect(b"EXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\n")
    await c.send(b"put 0 0 0 1\r\nx\r\n")
    await c.expect(b"INSERTED 2\r\n")
    await c.send(b"peek 1\r\n")
    await c.expect(b"NOT_FOUND\r\n")


async def test_expected_crlf_leftover_parsed_as_command(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 0 2\r\nabuse x\r\n")  # body "ab", then "us" instead of CRLF
    await c.expect(b"EXPECTED_CRLF\r\n")
    await c.expect(b"UNKNOWN_COMMAND\r\n")  # "e x"


async def test_put_body_split_across_writes(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 1 0 5 10\r\n01234")
    await c.expect_nothing(0.05)
    await c.send(b"56789\r")
    await c.expect_nothing(0.05)
    await c.send(b"\n")
    await c.expect(b"INSERTED 1\r\n")


async def test_ids_increase_across_tubes_and_connections(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(b"put 0 0 0 1\r\na\r\n")
    await a.expect(b"INSERTED 1\r\n")
    await b.send(b"use other\r\nput 0 0 0 1\r\nb\r\n")
    await b.expect(b"USING other\r\nINSERTED 2\r\n")
    await a.send(b"put 0 0 0 1\r\nc\r\n")
    await a.expect(b"INSERTED 3\r\n")


async def test_delete_reserved_by_other(server: ServerHandle) -> None:  # cttest 24
    a = await server.connect()
    b = await server.connect()
    await a.send(b"put 0 0 0 1\r\na\r\n")
    await a.expect(b"INSERTED 1\r\n")
    await b.send(b"reserve\r\n")
    await b.expect(b"RESERVED 1 1\r\na\r\n")
    await a.send(b"delete 1\r\n")
    await a.expect(b"NOT_FOUND\r\n")
    await b.send(b"delete 1\r\n")
    await b.expect(b"DELETED\r\n")


async def test_delete_delayed_and_buried(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 100 10 1\r\na\r\nput 0 0 10 1\r\nb\r\nreserve\r\nbury 2 5\r\n")
    await c.expect(b"INSERTED 1\r\nINSERTED 2\r\nRESERVED 2 1\r\nb\r\nBURIED\r\n")
    await c.send(b"delete 1\r\ndelete 2\r\ndelete 1\r\n")
    await c.expect(b"DELETED\r\nDELETED\r\nNOT_FOUND\r\n")


@pytest.mark.parametrize(
    "line",
    [
        b"delete 18446744073709551616",  # cttest 25
        b"delete " + b"1" * 50,
        b"delete foo111",
        b"delete 111foo",
        b"delete 1 ",  # COMPATIBILITY.md Quirks: trailing space
        b"delete +1",
        b"delete -1",
        b"delete 0x1",
        b"delete  ",
        b"delete 1 2",
    ],
)
async def test_delete_bad_format(server: ServerHandle, line: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


@pytest.mark.parametrize(
    "line",
    [b"delete  1", b"delete 18446744073709551615", b"delete 0", b"delete 00000001"],
)
async def test_delete_not_found(server: ServerHandle, line: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(b"NOT_FOUND\r\n")


@pytest.mark.server_args(max_job_size=10)
async def test_failed_puts_are_counted_but_do_not_make_producers(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 0 11\r\n" + b"y" * 13 + b"put 0 0 0 1 x\r\nput x\r\n")
    await c.expect(b"JOB_TOO_BIG\r\nBAD_FORMAT\r\nBAD_FORMAT\r\n")
    st = await stats_of(c, b"stats")
    assert (st["cmd-put"], st["total-jobs"], st["current-producers"]) == ("2", "0", "0")
    await c.send(b"put 0 0 0 1\r\nxyz\r\n")  # EXPECTED_CRLF: past the checks, a producer
    await c.expect(b"EXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\n")
    st = await stats_of(c, b"stats")
    assert (st["cmd-put"], st["total-jobs"], st["current-producers"]) == ("3", "0", "1")
