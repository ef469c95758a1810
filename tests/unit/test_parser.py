"""The byte parser: framing, limits and argument rules, fed in every possible split."""

from __future__ import annotations

import pytest
from support.enginekit import Kit

TRANSCRIPT = (
    b"put 0 0 10 5\r\nhello\r\n"
    b"use a\r\nuse b\r\n"
    b"put 1 0 10 0\r\n\r\n" + b"x" * 300 + b"\r\n"
    b"peek 1\r\n"
    b"put 0 0 0 1\r\nxyz\r\n"
    b"list-tube-used\r\n"
)
EXPECTED = (
    b"INSERTED 1\r\nUSING a\r\nUSING b\r\nINSERTED 2\r\nBAD_FORMAT\r\n"
    b"FOUND 1 5\r\nhello\r\nEXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\nUSING b\r\n"
)


def test_whole_transcript_in_one_read() -> None:
    kit = Kit()
    assert kit.send(kit.session(), TRANSCRIPT) == EXPECTED


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 223, 224, 225])
def test_transcript_fed_in_pieces(step: int) -> None:
    kit = Kit()
    s = kit.session()
    got = b"".join(kit.send(s, TRANSCRIPT[i : i + step]) for i in range(0, len(TRANSCRIPT), step))
    assert got == EXPECTED


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"nont10knowncommand", b"UNKNOWN_COMMAND\r\n"),
        (b"", b"UNKNOWN_COMMAND\r\n"),
        (b"PUT 0 0 0 0", b"UNKNOWN_COMMAND\r\n"),
        (b"put", b"UNKNOWN_COMMAND\r\n"),
        (b"delete", b"UNKNOWN_COMMAND\r\n"),
        (b"delete\t1", b"UNKNOWN_COMMAND\r\n"),
        (b"reservex", b"BAD_FORMAT\r\n"),
        (b"reserve ", b"BAD_FORMAT\r\n"),
        (b"stats ", b"BAD_FORMAT\r\n"),
        (b"stats-job", b"BAD_FORMAT\r\n"),
        (b"stats-tube", b"BAD_FORMAT\r\n"),
        (b"reserve-with-timeout", b"BAD_FORMAT\r\n"),
        (b"list-tubesx", b"BAD_FORMAT\r\n"),
        (b"peek-readyX", b"BAD_FORMAT\r\n"),
        (b"delete 1 ", b"BAD_FORMAT\r\n"),
        (b"delete +1", b"BAD_FORMAT\r\n"),
        (b"delete -1", b"BAD_FORMAT\r\n"),
        (b"delete 0x1", b"BAD_FORMAT\r\n"),
        (b"delete  1", b"NOT_FOUND\r\n"),
        (b"delete 18446744073709551616", b"BAD_FORMAT\r\n"),
        (b"delete 0000000000000000001", b"NOT_FOUND\r\n"),  # 19 digits
        (b"delete 00000000000000000001", b"NOT_FOUND\r\n"),  # 20: the general rules
        (b"delete 1x", b"BAD_FORMAT\r\n"),
        (b"delete ", b"BAD_FORMAT\r\n"),
        (b"peek 18446744073709551615", b"NOT_FOUND\r\n"),
        (b"peek 007", b"NOT_FOUND\r\n"),
        (b"put -1 0 100 1", b"BAD_FORMAT\r\n"),
        (b"put 4294967296 0 100 1", b"BAD_FORMAT\r\n"),
        (b"put 0 0 0 10b", b"BAD_FORMAT\r\n"),
        (b"bury 111abc 2", b"BAD_FORMAT\r\n"),
        (b"bury 111", b"BAD_FORMAT\r\n"),
        (b"release 18446744073709551615 1 abc", b"BAD_FORMAT\r\n"),
        (b"touch !@#!@#", b"BAD_FORMAT\r\n"),
        (b"kick-job 111a", b"BAD_FORMAT\r\n"),
        (b"stats-job 111 222", b"BAD_FORMAT\r\n"),
        (b"use  foo", b"BAD_FORMAT\r\n"),
        (b"use foo ", b"BAD_FORMAT\r\n"),
        (b"use -foo", b"BAD_FORMAT\r\n"),
        (b"use a*b", b"BAD_FORMAT\r\n"),
        (b"use (a);$.+/_", b"USING (a);$.+/_\r\n"),
        (b"use fo-o", b"USING fo-o\r\n"),
        (b"use " + b"a" * 200, b"USING " + b"a" * 200 + b"\r\n"),
        (b"use " + b"a" * 201, b"BAD_FORMAT\r\n"),
        (b"ignore nonexist", b"WATCHING 1\r\n"),
        (b"ignore default", b"NOT_IGNORED\r\n"),
        (b"kick -1", b"KICKED 0\r\n"),
        (b"kick 2abc", b"KICKED 0\r\n"),
        (b"kick +3", b"KICKED 0\r\n"),
        (b"kick x", b"BAD_FORMAT\r\n"),
        (b"kick", b"UNKNOWN_COMMAND\r\n"),
        (b"reserve-with-timeout 2147483648", b"BAD_FORMAT\r\n"),
        (b"reserve-with-timeout 0abc", b"TIMED_OUT\r\n"),
        (b"reserve-with-timeout -1", b"BAD_FORMAT\r\n"),
        (b"reserve-with-timeout 0", b"TIMED_OUT\r\n"),
        (b"reserve-with-timeout 2147483648x", b"BAD_FORMAT\r\n"),
        (b"reserve-with-timeout 0000000000000", b"TIMED_OUT\r\n"),
        (b"reserve-with-timeout 9999999999", b"BAD_FORMAT\r\n"),
        (b"reserve-with-timeout ", b"BAD_FORMAT\r\n"),
        (b"pause-tubedefault 0", b"PAUSED\r\n"),
        (b"pause-tube foo10", b"BAD_FORMAT\r\n"),
        (b"pause-tube nosuch 1", b"NOT_FOUND\r\n"),
        (b"pause-tube -x 1", b"BAD_FORMAT\r\n"),
        (b"pause-tube " + b"d" * 200 + b" 4294967295", b"NOT_FOUND\r\n"),
        (b"use a\x00b", b"BAD_FORMAT\r\n"),
        (b"use a\rb", b"BAD_FORMAT\r\n"),
        (b"list-tube-used", b"USING default\r\n"),
    ],
)
def test_single_line(line: bytes, reply: bytes) -> None:
    kit = Kit()
    assert kit.send(kit.session(), line + b"\r\n") == reply


def test_pause_tube_with_bad_name_is_still_counted() -> None:
    kit = Kit()
    s = kit.session()
    kit.send(s, b"pause-tube -x 1\r\n")
    assert b"cmd-pause-tube: 1\n" in kit.send(s, b"stats\r\n")


def test_job_too_big_discards_the_body_then_replies() -> None:
    kit = Kit(max_job_size=10)
    s = kit.session()
    assert kit.send(s, b"put 0 0 0 11\r\n") == b""
    assert kit.send(s, b"delete 9999\r\n") == b"JOB_TOO_BIG\r\n"  # 13 bytes swallowed
    assert kit.send(s, b"put 0 0 0 1\r\nx\r\n") == b"INSERTED 1\r\n"
    assert kit.send(s, b"put 0 0 0 100000 garbage\r\n" + b"z" * 100002) == b"JOB_TOO_BIG\r\n"


def test_max_size_body_is_accepted() -> None:
    kit = Kit(max_job_size=10)
    s = kit.session()
    assert kit.send(s, b"put 0 0 0 10\r\n0123456789\r\n") == b"INSERTED 1\r\n"


def test_put_with_bad_format_does_not_consume_the_body() -> None:
    kit = Kit()
    assert kit.send(kit.session(), b"put +1 0 0 1\r\nx\r\n") == b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n"


def test_line_of_exactly_224_bytes_is_accepted() -> None:
    kit = Kit()
    s = kit.session()
    name = b"t" * 200
    kit.send(s, b"use " + name + b"\r\n")
    line = b"pause-tube " + name + b" 4294967295\r\n"
    assert len(line) == 224
    assert kit.send(s, line) == b"PAUSED\r\n"


def test_225_byte_line_does_not_swallow_the_next_command() -> None:
    # Fixed reference bug: beanstalkd loses the \n across its 224-byte window.
    kit = Kit()
    s = kit.session()
    line = b"pause-tube " + b"t" * 201 + b" 4294967295\r\n"
    assert len(line) == 225
    assert kit.send(s, line + b"list-tube-used\r\n") == b"BAD_FORMAT\r\nUSING default\r\n"


def test_newline_only_input_is_rejected_after_224_bytes() -> None:
    kit = Kit()
    s = kit.session()
    assert kit.send(s, b"stats\n" * 30) == b""
    assert kit.send(s, b"stats\n" * 10 + b"\r\n") == b"BAD_FORMAT\r\n"


def test_quit_stops_parsing() -> None:
    kit = Kit()
    s = kit.session()
    assert kit.send(s, b"use a\r\nquitxyz\r\nuse b\r\n") == b"USING a\r\n"
    assert s.closing


def test_pipelined_commands_wait_behind_a_blocking_reserve() -> None:
    kit2 = Kit()
    p2, w2 = kit2.session(), kit2.session()
    w2.feed(b"reserve\r\nlist-tube-used\r\n")
    p2.feed(b"put 0 0 1 1\r\nx\r\n")
    kit2._settle()
    assert w2.take_output() == b"RESERVED 1 1\r\nx\r\nUSING default\r\n"


@pytest.mark.parametrize(
    ("line", "reply", "fields"),
    [
        # the usual form (one pass, no int(bytes)) and every way out of it
        (b"put 4294967295 7 3 1", b"INSERTED 1\r\n", (4294967295, 7, 3)),
        (b"put 0000000001 0000000002 0000000003 0000000001", b"INSERTED 1\r\n", (1, 2, 3)),
        (b"put 00000000001 0 5 1", b"INSERTED 1\r\n", (1, 0, 5)),  # 11 digits, still u32
        (b"put 9999999999 0 1 1", b"BAD_FORMAT\r\n", None),  # 10 digits, over u32
        (b"put 1 0 4294967296 1", b"BAD_FORMAT\r\n", None),
        (b"put 1 0 0 1", b"INSERTED 1\r\n", (1, 0, 1)),  # ttr 0 means 1
        (b"put  5  0 2  1", b"INSERTED 1\r\n", (5, 0, 2)),  # extra spaces: the general rules
        (b"put 5 0 2 1 ", b"BAD_FORMAT\r\n", None),
        (b"put 5 0 2 +1", b"BAD_FORMAT\r\n", None),
        (b"put 5 0 2", b"BAD_FORMAT\r\n", None),
        (b"put 5 0 2 1\x00", b"BAD_FORMAT\r\n", None),
        (b"put 5 0 2 70000", b"JOB_TOO_BIG\r\n", None),  # the body is read and dropped
    ],
)
def test_put_line_forms(line: bytes, reply: bytes, fields: tuple[int, int, int] | None) -> None:
    kit = Kit()
    s = kit.session()
    size = int(line.rsplit(b" ", 1)[1]) if line.rsplit(b" ", 1)[1].isdigit() else 1
    body = b"x" * size + b"\r\n"
    got = kit.send(s, line + b"\r\n" + (body if reply != b"BAD_FORMAT\r\n" else b""))
    assert got == reply
    if fields is not None:
        stats = kit.send(s, b"stats-job 1\r\n").decode()
        pri, delay, ttr = fields
        assert f"\npri: {pri}\n" in stats
        assert f"\ndelay: {delay}\n" in stats
        assert f"\nttr: {ttr}\n" in stats
    assert kit.send(s, b"list-tube-used\r\n") == b"USING default\r\n"  # framing intact


def test_delete_and_reserve_in_their_usual_form() -> None:
    kit = Kit()
    producer, worker = kit.session(), kit.session()
    assert kit.send(producer, b"put 0 0 5 1\r\na\r\nput 0 0 5 1\r\nb\r\n") == (
        b"INSERTED 1\r\nINSERTED 2\r\n"
    )
    assert kit.send(worker, b"reserve\r\n") == b"RESERVED 1 1\r\na\r\n"
    assert kit.send(producer, b"delete 1\r\n") == b"NOT_FOUND\r\n"  # reserved by another
    assert kit.send(worker, b"delete 1\r\ndelete 1\r\n") == b"DELETED\r\nNOT_FOUND\r\n"
    assert kit.send(producer, b"delete 02\r\n") == b"DELETED\r\n"
    stats = kit.send(producer, b"stats\r\n").decode()
    assert "\ncmd-delete: 4\n" in stats
    assert "\ncmd-reserve: 1\n" in stats
