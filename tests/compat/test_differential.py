"""Differential tests: the same transcript against /usr/bin/beanstalkd and beanstalk-py.

Each transcript runs against a fresh reference subprocess and a fresh ``python -m beanstalk_py``
subprocess (concurrently); the normalised reply streams must be identical. Set
``BEANSTALK_COMPAT_OURS=reference`` to compare the reference with itself (harness check).

Deliberately absent: the 225 + 224k byte line (reference bug fixed by beanstalk-py, docs/COMPATIBILITY.md)
and all time-based behaviour (covered by the transcript tests with a manual clock).
"""

from __future__ import annotations

import asyncio

import pytest
from support.servers import reference_version

from .differential import (
    Close,
    Drain,
    HalfClose,
    Idle,
    Read,
    Send,
    SendLarge,
    Step,
    Transcript,
    WaitStat,
    format_record,
    ours_kind,
    run_transcript,
)

pytestmark = [pytest.mark.compat, pytest.mark.usefixtures("need_reference")]


def lines(*cmds: bytes, conn: int = 0) -> list[Step]:
    """One Send per command line, each expecting one reply."""
    return [Send(conn, c + b"\r\n") for c in cmds]


def put(body: bytes, pri: int = 0, delay: int = 0, ttr: int = 10, conn: int = 0) -> Send:
    return Send(conn, b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body))


NAME_200 = b"n" * 200

TRANSCRIPTS: list[Transcript] = [
    Transcript(
        "dispatch-prefixes",
        lines(
            b"put",
            b"delete",
            b"kick",
            b"kick-job",
            b"touch",
            b"watch",
            b"use",
            b"ignore",
            b"peek",
            b"release",
            b"bury",
            b"reserve-job",
            b"delete\t1",
            b"PUT 0 0 0 0",
            b"Stats",
            b" stats",
            b"reservex",
            b"reserve ",
            b"stats ",
            b"statsx",
            b"stats-job",
            b"stats-tube",
            b"stats-tube ",
            b"list-tubesx",
            b"list-tube-usedx",
            b"list-tubes-watchedx",
            b"peek-readyX",
            b"peek-delayed ",
            b"peek-buried 1",
            b"reserve-with-timeout",
            b"pause-tube",
            b"pause-tubex",
            b"peek-ready",
            b"peek-delayed",
            b"peek-buried",
            b"list-tube-used",
            b"kick 0",
            b"kick-job 1",
            b"stats-job 1",
            b"stats-tube nope",
            b"reserve-job 1",
            b"reserve-with-timeout 0",
            b"pause-tube nope 0",
            b"pause-tubedefault 0",
            b"nont10knowncommand",
            b"",
        ),
    ),
    Transcript(
        "bad-numbers",
        lines(
            b"delete 1 ",
            b"delete +1",
            b"delete -1",
            b"delete 0x1",
            b"delete  1",
            b"delete 18446744073709551615",
            b"delete 18446744073709551616",
            b"delete " + b"9" * 50,
            b"delete foo111",
            b"delete 111foo",
            b"peek 007",
            b"peek 18446744073709551616",
            b"peek -1",
            b"touch a111",
            b"touch 111a",
            b"touch !@#!@#",
            b"touch 100000000000000",
            b"bury 111abc 2",
            b"bury 111",
            b"bury 111 222abc",
            b"bury 1 4294967296",
            b"kick-job a111",
            b"kick-job 111a",
            b"release 18446744073709551616 1 1",
            b"release foo111",
            b"release 18446744073709551615 abc 1",
            b"release 18446744073709551615 1 abc",
            b"release 1 1 1",
            b"release 1 1",
            b"stats-job 111ABC",
            b"stats-job 111 222",
            b"stats-job 111",
            b"stats-job 1 ",
            b"reserve-job x",
            b"reserve-job 1 ",
            b"reserve-with-timeout 0abc",
            b"reserve-with-timeout  0",
        ),
    ),
    Transcript(
        "reserve-with-timeout-1.13-parsing",
        lines(
            b"reserve-with-timeout 2147483648",
            b"reserve-with-timeout 4294967296",
            b"reserve-with-timeout -1",
            b"reserve-with-timeout x",
            b"reserve-with-timeout",
        ),
        min_reference=(1, 13),
    ),
    Transcript(
        "put-parsing",
        [
            Send(0, b"put +1 0 0 1\r\nx\r\n", 2),
            Send(0, b"put 0 0 0 1 x\r\n"),
            Send(0, b"put 0 0 0 1\r\nxyz\r\n", 2),
            put(b"a"),
            Send(0, b"put -1kkdj9djjkd9 0 100 1\r\n"),
            Send(0, b"put 512 -1 100 0\r\n"),
            Send(0, b"put 4294967296 0 100 1\r\n"),
            Send(0, b"put 4294967295 0 100 1\r\nx\r\n"),
            Send(0, b"put 0 4294967296 0 1\r\n"),
            Send(0, b"put 0 0 4294967296 1\r\n"),
            Send(0, b"put 0 0 0 4294967296\r\n"),
            Send(0, b"put 0 0 0 10b\r\n"),
            Send(0, b"put 0 0 0 --!@#$%^&&**()0b\r\n"),
            Send(0, b"put 0x1 0 0 1\r\n"),
            Send(0, b"put  007   0 0  2\r\nab\r\n"),
            Send(0, b"put 0 0 0 0\r\n\r\n"),
            Send(0, b"put 0 0 0 2\r\nabuse x\r\n", 2),
            Send(0, b"put 0 1 1 0\r\n\r\n"),
            Send(0, b"put 0 0 1 0\r\n\r\n"),
            Send(0, b"put 0 0 0 1\r\n\x00\r\n"),
            Send(0, b"peek 1\r\npeek 3\r\npeek 10\r\npeek 11\r\n", 4),
            Send(0, b"stats-job 4\r\nstats-job 7\r\n", 2),
        ],
    ),
    Transcript(
        "job-too-big-default-limit-with-garbage",
        [
            Send(0, b"put 0 0 0 100000 garbage\r\n", 0),
            SendLarge(0, 100002),
            Read(0),
            Send(0, b"put 0 0 0 65535\r\n", 0),
            SendLarge(0, 65535),
            Send(0, b"\r\n"),
            Send(0, b"stats\r\n"),
        ],
    ),
    Transcript(
        "job-too-big-z10",
        [
            Send(0, b"put 0 0 0 11\r\n", 0),
            Send(0, b"delete 9999\r\n", 0),
            Send(0, b"put 0 0 0 1\r\nx\r\n", 2),
            Send(0, b"put 0 0 0 10\r\n0123456789\r\n"),
            Send(0, b"put 0 0 0 11 trailing\r\n" + b"z" * 13),
            Send(0, b"put 0 0 0 10 trailing\r\n"),
            Send(0, b"stats\r\n"),
        ],
        args=("-z", "10"),
    ),
    Transcript(
        "line-framing",
        [
            Send(0, b"use a\r\nuse b\r\n", 2),
            Send(0, b"z" * 498 + b"\r\n"),
            Send(0, b"z" * 224 + b"\r\n"),
            Send(0, b"z" * 446 + b"\r\n"),
            Send(0, b"use " + b"b" * 218 + b"\r\n"),
            Send(0, b"pause-tube " + NAME_200 + b" 4294967295\r\n"),
            Send(0, b"use " + NAME_200 + b"\r\n"),
            Send(0, b"pause-tube " + NAME_200 + b" 4294967295\r\n"),
            Send(0, b"use a\x00b\r\n"),
            Send(0, b"\x00\r\n"),
            Send(0, b"list-tubes\x00\r\n"),
            Send(0, b"\r\n"),
            Send(0, b"list-tube-used\r\n"),
        ],
    ),
    # A stray \r inside a line is a deliberate difference (docs/COMPATIBILITY.md): the
    # reference stalls the connection, beanstalk-py answers BAD_FORMAT. Only the LF-only part of
    # that quirk is shared.
    Transcript(
        "lf-only-line",
        [
            Send(1, b"list-tube-used\n", 0),
            Idle(1),
            Send(1, b"x" * 300, 0),
            Idle(1),
            Send(1, b"\r\nlist-tube-used\r\n", 2),
        ],
    ),
    Transcript(
        "quit-variants",
        [
            Send(0, b"use a\r\nquitxyz\r\nuse b\r\n", 2),
            Send(1, b"quit\r\n", 1),
            Send(2, b"list-tubes\r\n"),
        ],
    ),
    Transcript(
        "kick-strtoul",
        [
            *[put(b"d%d" % i, delay=100) for i in range(8)],
            *lines(
                b"kick 1",
                b"kick +1",
                b"kick  1",
                b"kick \t1",
                b"kick 2abc",
                b"kick 0",
                b"kick 4294967297",
                b"kick 4294967296",
                b"kick abc",
                b"kick -",
                b"kick +",
                b"kick 18446744073709551616",
                b"kick -1",
                b"kick 1",
            ),
            Send(0, b"stats\r\n"),
        ],
    ),
    Transcript(
        "kick-buried-before-delayed",
        [
            put(b"a"),
            Send(0, b"reserve\r\nbury 1 0\r\n", 2),
            put(b"b", delay=100),
            put(b"c", delay=50),
            *lines(b"kick 10", b"kick 1", b"peek-delayed", b"kick 10", b"kick 10"),
            *lines(b"stats-job 1", b"stats-job 2", b"stats-job 3"),
        ],
    ),
    Transcript(
        "tube-names",
        lines(
            b"use  foo",
            b"use foo ",
            b"use -foo",
            b"use a*b",
            b"use a b",
            b"use \xc3\xa9",
            b"use (a);$.+/_",
            b"use fo-o",
            b"use 1.5",
            b"use " + NAME_200,
            b"use " + NAME_200 + b"x",
            b"watch -x",
            b"watch  x",
            b"watch x_y",
            b"ignore x_y ",
            b"ignore nonexist",
            b"ignore x_y",
            b"ignore default",
            b"stats-tube -x",
            b"stats-tube 1.5",
            b"list-tubes",
            b"list-tubes-watched",
        ),
    ),
    Transcript(
        "pause-tube-parsing",
        [
            *lines(
                b"pause-tubedefault 0",
                b"pause-tube   default   5",
                b"pause-tube default10",
                b"pause-tube default 10 ",
                b"pause-tube default 10x",
                b"pause-tube default -1",
                b"pause-tube default 4294967296",
                b"pause-tube -x 1",
                b"pause-tube a*b 1",
                b"pause-tube missing 1",
                b"pause-tube default",
                b"pause-tube default 300",
            ),
            Send(0, b"stats\r\n"),
        ],
    ),
    Transcript(
        "watch-ignore-order",
        [
            *lines(b"watch t1", b"watch t2", b"watch t3", b"watch t4", b"watch t2"),
            *lines(b"list-tubes-watched", b"ignore default", b"list-tubes-watched"),
            *lines(b"ignore t2", b"list-tubes-watched", b"list-tubes", b"watch default"),
            *lines(b"list-tubes-watched", b"ignore t1", b"ignore t3", b"ignore t4"),
            *lines(b"ignore default", b"list-tubes-watched", b"list-tubes"),
        ],
    ),
    Transcript(
        "list-tubes-swap-remove",
        [
            Send(1, b"use t1\r\n"),
            Send(2, b"use t2\r\n"),
            Send(3, b"use t3\r\n"),
            Send(4, b"use t4\r\n"),
            Send(0, b"list-tubes\r\n"),
            Send(2, b"use default\r\n"),
            Send(0, b"list-tubes\r\n"),
            Send(0, b"use t2\r\nlist-tubes\r\n", 2),
            Send(1, b"quit\r\n", 0),
            Send(5, b"watch a\r\nwatch b\r\nwatch c\r\nwatch d\r\n", 4),
            Send(6, b"watch e\r\nwatch f\r\n", 2),
            Send(0, b"list-tubes\r\n"),
            Close(5),
            Send(0, b"list-tubes\r\n"),
            Send(0, b"stats\r\n"),
        ],
    ),
    Transcript(
        "waiter-order",
        [
            Send(1, b"reserve\r\n", 0),
            WaitStat("current-waiting", "1"),
            Send(2, b"reserve\r\n", 0),
            WaitStat("current-waiting", "2"),
            Send(3, b"reserve\r\n", 0),
            WaitStat("current-waiting", "3"),
            Send(4, b"reserve\r\n", 0),
            WaitStat("current-waiting", "4"),
            put(b"1"),
            put(b"2"),
            put(b"3"),
            put(b"4"),
            Read(1),
            Read(2),
            Read(3),
            Read(4),
        ],
    ),
    Transcript(
        "peek-family",
        [
            *lines(b"peek-ready", b"peek-delayed", b"peek-buried"),
            put(b"A"),
            put(b"B", delay=99),
            put(b"C", delay=1),
            put(b"D", pri=5),
            put(b"E", pri=5, delay=99),
            *lines(b"peek-ready", b"peek-delayed", b"peek 1", b"peek 0", b"peek 6"),
            Send(0, b"reserve\r\nbury 1 7\r\nreserve\r\nbury 4 3\r\n", 4),
            *lines(b"peek-buried", b"peek-ready", b"use other", b"peek-buried", b"peek 4"),
            *lines(b"stats-tube default", b"stats-tube other", b"stats"),
        ],
    ),
    Transcript(
        "reserve-job-release-bury",
        [
            put(b"a"),
            put(b"b", delay=100),
            put(b"c"),
            Send(0, b"reserve\r\nbury 1 0\r\n", 2),
            *lines(b"reserve-job 1", b"reserve-job 1", b"reserve-job 2", b"reserve-job 9"),
            Send(1, b"reserve-job 3\r\n"),
            Send(1, b"release 1 0 0\r\ndelete 3\r\ntouch 1\r\nbury 2 1\r\n", 4),
            *lines(b"release 1 5 0", b"release 2 6 100", b"bury 3 1"),
            Send(1, b"release 3 9 0\r\n"),
            *lines(b"kick-job 2", b"kick-job 1", b"kick-job 3"),
            *lines(b"stats-job 1", b"stats-job 2", b"stats-job 3", b"stats"),
        ],
    ),
    Transcript(
        "delete-any-state",
        [
            put(b"a"),
            put(b"b", delay=100),
            put(b"c"),
            Send(1, b"reserve\r\n"),
            Send(0, b"delete 1\r\n"),
            Send(0, b"reserve\r\nbury 3 0\r\n", 2),
            *lines(b"delete 2", b"delete 3", b"delete 3"),
            Send(1, b"delete 1\r\n"),
            Send(0, b"stats\r\n"),
        ],
    ),
    Transcript(
        "deadline-soon-ttr-1",
        [
            put(b"x", ttr=1),
            Send(0, b"reserve\r\nreserve-with-timeout 0\r\nreserve\r\n", 3),
            put(b"y", ttr=1),
            Send(0, b"reserve\r\n"),
            Send(0, b"stats\r\n"),
        ],
    ),
    Transcript(
        "half-close-waiting",
        [
            Send(0, b"reserve\r\n", 0),
            WaitStat("current-waiting", "1"),
            HalfClose(0),
            Read(0),
        ],
    ),
    Transcript(
        "blocked-reserve-defers-pipeline",
        [
            Send(0, b"reserve\r\nlist-tube-used\r\n", 0),
            WaitStat("current-waiting", "1"),
            Idle(0),
            put(b"q", conn=1),
            Read(0, 2),
        ],
    ),
    Transcript(
        "drain",
        [
            put(b"a"),
            Drain(),
            Send(0, b"put 0 0 1 3\r\nabc\r\n"),
            Send(0, b"put 0 0 1 1\r\n", 0),
            Idle(0),
            Send(0, b"b\r\n"),
            Send(0, b"reserve\r\ndelete 1\r\nstats\r\n", 3),
        ],
    ),
    Transcript(
        "global-priority-multi-tube",
        [
            *lines(b"use abc"),
            Send(0, b"put 999999 0 0 0\r\n\r\n"),
            *lines(b"use def"),
            Send(0, b"put 99 0 0 0\r\n\r\n"),
            Send(0, b"put 99 0 0 0\r\n\r\n"),
            *lines(b"watch abc", b"watch def", b"reserve", b"reserve", b"reserve"),
            *lines(b"list-tubes", b"stats-tube abc", b"stats-tube def", b"stats"),
        ],
    ),
    Transcript(
        "stats-after-close",
        [
            put(b"a", conn=1),
            Send(1, b"reserve\r\n"),
            Close(1),
            WaitStat("current-connections", "1"),
            Send(0, b"stats-job 1\r\nlist-tubes\r\n", 2),
        ],
    ),
    Transcript(
        "binary-bodies",
        [
            Send(0, b"put 0 0 0 260\r\n" + bytes(range(256)) + b"\r\n\r\n\r\n"),
            Send(0, b"peek 1\r\nreserve\r\n", 2),
        ],
    ),
]


@pytest.mark.parametrize("t", TRANSCRIPTS, ids=[t.name for t in TRANSCRIPTS])
async def test_same_replies_as_reference(t: Transcript, need_ours: None) -> None:
    if t.min_reference and reference_version() < t.min_reference:
        pytest.skip(f"reference {reference_version()} is older than {t.min_reference}")
    ref, ours = await asyncio.gather(run_transcript("reference", t), run_transcript(ours_kind(), t))
    assert ref, "the reference produced no replies: the transcript is broken"
    assert all(r[2] not in (b"<timeout>",) for r in ref), format_record(ref)
    if ours != ref:
        pytest.fail(
            f"beanstalk-py differs from the reference for {t.name!r}\n"
            f"--- reference\n{format_record(ref)}\n--- beanstalk-py\n{format_record(ours)}",
            pytrace=False,
        )
