"""Framing and dispatch (docs/COMPATIBILITY.md, "Framing", "Command dispatch", "Quirks pinned by tests");
beanstalkd testserv.c cttests 1, 2, 19, 54."""

from __future__ import annotations

import pytest
from support.harness import ServerHandle

LONG_NAME = "a" * 200


async def test_unknown_command(server: ServerHandle) -> None:  # cttest 1
    c = await server.connect()
    await c.send(b"nont10knowncommand\r\n")
    await c.expect(b"UNKNOWN_COMMAND\r\n")


async def test_too_long_commandline(server: ServerHandle) -> None:  # cttest 2
    c = await server.connect()
    await c.send(b"x" * 500)
    await c.send(b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"put 0 0 1 1\r\nA\r\n")
    await c.expect(b"INSERTED 1\r\n")


async def test_two_commands_in_one_packet(server: ServerHandle) -> None:  # cttest 19
    c = await server.connect()
    await c.send(b"use a\r\nuse b\r\n")
    await c.expect(b"USING a\r\n")
    await c.expect(b"USING b\r\n")


async def test_longest_command_224_bytes(server: ServerHandle) -> None:  # cttest 54
    c = await server.connect()
    await c.send(b"use " + LONG_NAME.encode() + b"\r\n")
    await c.expect(b"USING " + LONG_NAME.encode() + b"\r\n")
    line = b"pause-tube " + LONG_NAME.encode() + b" 4294967295\r\n"
    assert len(line) == 224
    await c.send(line)
    await c.expect(b"PAUSED\r\n")


async def test_pipelined_many_commands_keep_order(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\na\r\nuse t\r\nput 0 0 1 2\r\nbb\r\npeek 1\r\nlist-tube-used\r\n")
    await c.expect(b"INSERTED 1\r\nUSING t\r\nINSERTED 2\r\nFOUND 1 1\r\na\r\nUSING t\r\n")


async def test_command_split_byte_by_byte(server: ServerHandle) -> None:
    c = await server.connect()
    for b in b"put 0 0 1 3\r\nabc\r\n":
        await c.send(bytes([b]))
    await c.expect(b"INSERTED 1\r\n")
    for b in b"peek 1\r\n":
        await c.send(bytes([b]))
    await c.expect(b"FOUND 1 3\r\nabc\r\n")


async def test_empty_line_is_unknown_command(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"\r\n")
    await c.expect(b"UNKNOWN_COMMAND\r\n")


@pytest.mark.parametrize(
    "line",
    [b"use a\x00b\r\n", b"\x00\r\n", b"list-tubes\x00\r\n", b"peek 1\x00\r\n"],
    ids=["in-name", "alone", "after-command", "after-number"],
)
async def test_nul_byte_is_bad_format(server: ServerHandle, line: bytes) -> None:
    c = await server.connect()
    await c.send(line)
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"list-tube-used\r\n")
    await c.expect(b"USING default\r\n")


@pytest.mark.reference_only("beanstalk-py answers BAD_FORMAT instead (docs/COMPATIBILITY.md)")
async def test_first_cr_not_followed_by_lf_stalls_the_line(server: ServerHandle) -> None:
    """COMPATIBILITY.md "Framing": only the first \\r counts; `use a\\rb\\r\\n` gets no reply and blocks later lines."""
    c = await server.connect()
    await c.send(b"use a\rb\r\n")
    await c.expect_nothing(0.2)
    await c.send(b"list-tube-used\r\n")
    await c.expect_nothing(0.2)


@pytest.mark.ours_only("the reference stalls the connection on a stray \\r")
async def test_stray_cr_in_a_line_is_bad_format_and_does_not_stall(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"use a\rb\r\nlist-tube-used\r\n")
    await c.expect(b"BAD_FORMAT\r\nUSING default\r\n")


async def test_bare_lf_never_ends_a_line(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"list-tube-used\n")
    await c.expect_nothing(0.2)


@pytest.mark.reference_only("beanstalk-py does not stall on a stray \\r")
async def test_stalled_line_resolves_as_overlong_after_224_bytes(server: ServerHandle) -> None:
    """The stuck bytes count toward the 224-byte window; then one BAD_FORMAT for the lot."""
    c = await server.connect()
    await c.send(b"use a\rb\r\n")  # 9 bytes, stuck
    await c.send(b"x" * 215)  # 224 in the buffer: discarded, skip-to-EOL mode
    await c.send(b"yyy\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"list-tube-used\r\n")
    await c.expect(b"USING default\r\n")


async def test_223_byte_line_plus_crlf_is_accepted_as_a_command(server: ServerHandle) -> None:
    c = await server.connect()
    line = b"use " + b"b" * 218 + b"\r\n"  # 224 bytes, name too long -> parsed, BAD_FORMAT
    assert len(line) == 224
    await c.send(line)
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"list-tube-used\r\n")
    await c.expect(b"USING default\r\n")


@pytest.mark.parametrize("length", [226, 300, 447, 448, 450, 1000])
async def test_overlong_line_gives_one_bad_format(server: ServerHandle, length: int) -> None:
    c = await server.connect()
    await c.send(b"z" * (length - 2) + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"list-tube-used\r\n")
    await c.expect(b"USING default\r\n")


@pytest.mark.ours_only("reference 225-byte edge bug swallows the next command (COMPATIBILITY.md)")
@pytest.mark.parametrize("length", [225, 449, 673])
async def test_edge_length_line_does_not_swallow_next_command(
    server: ServerHandle, length: int
) -> None:
    """The 225-byte edge bug (COMPATIBILITY.md, "Deliberate differences"), fixed by beanstalk-py: the next command must be executed.

    In the reference the bug hits whenever the line's \r is the last byte of a 224-byte
    window, i.e. lines of 225 + 224k bytes.
    """
    c = await server.connect()
    line = b"pause-tube " + b"a" * (length - 24) + b" 4294967295\r\n"
    assert len(line) == length
    await c.send(line)
    await c.expect(b"BAD_FORMAT\r\n")
    await c.send(b"list-tube-used\r\n")
    await c.expect(b"USING default\r\n")


async def test_reference_edge_bug_is_what_the_spec_says(server: ServerHandle) -> None:
    """Documents the reference bug (COMPATIBILITY.md, "Framing") so the skip above stays justified."""
    if not server.reference:
        pytest.skip("reference-only documentation of the 225-byte bug")
    c = await server.connect()
    await c.send(b"pause-tube " + b"a" * 201 + b" 4294967295\r\n")
    await c.send(b"list-tube-used\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
    await c.expect_nothing(0.2)


async def test_quit_closes_connection(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"quit\r\n")
    await c.expect_closed()


async def test_quit_prefix_closes_connection(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"quitxyz\r\n")
    await c.expect_closed()


async def test_commands_after_quit_are_not_answered(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"use a\r\nquit\r\nuse b\r\n")
    await c.expect(b"USING a\r\n")
    await c.expect_closed()


# COMPATIBILITY.md, "Command dispatch": the command table, in prefix order; first match wins.
DISPATCH = [
    # missing argument for a prefix with a trailing space -> UNKNOWN_COMMAND
    (b"put", b"UNKNOWN_COMMAND"),
    (b"delete", b"UNKNOWN_COMMAND"),
    (b"kick", b"UNKNOWN_COMMAND"),
    (b"kick-job", b"UNKNOWN_COMMAND"),
    (b"touch", b"UNKNOWN_COMMAND"),
    (b"watch", b"UNKNOWN_COMMAND"),
    (b"use", b"UNKNOWN_COMMAND"),
    (b"ignore", b"UNKNOWN_COMMAND"),
    (b"peek", b"UNKNOWN_COMMAND"),
    (b"release", b"UNKNOWN_COMMAND"),
    (b"bury", b"UNKNOWN_COMMAND"),
    (b"reserve-job", b"BAD_FORMAT"),  # matches the `reserve` prefix, length check fails
    (b"delete\t1", b"UNKNOWN_COMMAND"),
    (b"PUT 0 0 0 0", b"UNKNOWN_COMMAND"),
    (b"Stats", b"UNKNOWN_COMMAND"),
    (b"pause", b"UNKNOWN_COMMAND"),
    (b"list", b"UNKNOWN_COMMAND"),
    (b" stats", b"UNKNOWN_COMMAND"),
    # no trailing space in the prefix -> exact length required -> BAD_FORMAT
    (b"reservex", b"BAD_FORMAT"),
    (b"reserve ", b"BAD_FORMAT"),
    (b"stats ", b"BAD_FORMAT"),
    (b"statsx", b"BAD_FORMAT"),
    (b"stats-job", b"BAD_FORMAT"),
    (b"stats-tube", b"BAD_FORMAT"),
    (b"list-tubesx", b"BAD_FORMAT"),
    (b"list-tubes ", b"BAD_FORMAT"),
    (b"list-tube-usedx", b"BAD_FORMAT"),
    (b"list-tubes-watchedx", b"BAD_FORMAT"),
    (b"peek-readyX", b"BAD_FORMAT"),
    (b"peek-delayed ", b"BAD_FORMAT"),
    (b"peek-buried 1", b"BAD_FORMAT"),
    (b"reserve-with-timeout", b"BAD_FORMAT"),
    (b"pause-tube", b"BAD_FORMAT"),
    (b"pause-tube ", b"BAD_FORMAT"),
    (b"pause-tubex", b"BAD_FORMAT"),
    # prefix overlaps resolved by order
    (b"peek-ready", b"NOT_FOUND"),
    (b"peek-delayed", b"NOT_FOUND"),
    (b"peek-buried", b"NOT_FOUND"),
    (b"list-tube-used", b"USING default"),
    (b"kick 0", b"KICKED 0"),
    (b"kick-job 1", b"NOT_FOUND"),
    (b"stats-job 1", b"NOT_FOUND"),
    (b"stats-tube nope", b"NOT_FOUND"),
    (b"reserve-job 1", b"NOT_FOUND"),
    (b"reserve-with-timeout 0", b"TIMED_OUT"),
    (b"pause-tube nope 0", b"NOT_FOUND"),
    (b"pause-tubedefault 0", b"PAUSED"),
]


@pytest.mark.parametrize(("line", "reply"), DISPATCH, ids=[d[0].decode() for d in DISPATCH])
async def test_dispatch_prefix_table(server: ServerHandle, line: bytes, reply: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(reply + b"\r\n")
    # the connection is still usable and in sync
    await c.send(b"list-tube-used\r\n")
    await c.expect(b"USING default\r\n")
