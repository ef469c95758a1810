"""Property tests for the sans-IO core: random and mutated command streams fed to Sessions.

Invariants checked after every step:
* no exception escapes ``Session.feed`` and no reply is INTERNAL_ERROR;
* the output is a sequence of well-formed protocol replies (bodies framed by their length);
* the engine's counters agree with its jobs dict and with the per-tube counters.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.replies import split_replies

from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import BURIED, DELAYED, READY, RESERVED
from beanstalk_py.protocol.session import Pending, Session

ids = st.sampled_from([b"0", b"1", b"2", b"3", b"007", b"18446744073709551616", b"-1", b"+2"])
nums = st.sampled_from([b"0", b"1", b"5", b"4294967295", b"4294967296", b"x", b""])
names = st.sampled_from([b"default", b"a", b"b-c", b"-x", b"a*b", b"", b"x" * 201, b"(a);$.+/_"])
size = st.integers(min_value=0, max_value=40)


@st.composite
def command(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(min_value=0, max_value=22))
    i, n, t = draw(ids), draw(nums), draw(names)
    if kind == 0:
        k = draw(size)
        body = draw(st.binary(min_size=k, max_size=k))
        tail = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"xx", b"\n"]))
        return b"put %s %s %s %d\r\n" % (draw(nums), n, draw(nums), k) + body + tail
    table = [
        b"reserve",
        b"reserve-with-timeout " + n,
        b"reserve-job " + i,
        b"delete " + i,
        b"release " + i + b" " + n + b" " + draw(nums),
        b"bury " + i + b" " + n,
        b"touch " + i,
        b"kick " + n,
        b"kick-job " + i,
        b"peek " + i,
        b"peek-ready",
        b"peek-delayed",
        b"peek-buried",
        b"use " + t,
        b"watch " + t,
        b"ignore " + t,
        b"stats",
        b"stats-job " + i,
        b"stats-tube " + t,
        b"list-tubes",
        b"pause-tube " + t + b" " + n,
        b"list-tubes-watched",
    ]
    return table[kind - 1] + b"\r\n"


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for op, pos, byte in edits:
        if not b:
            b.append(byte)
            continue
        pos %= len(b)
        if op == 0:
            b[pos] = byte
        elif op == 1:
            del b[pos]
        else:
            b.insert(pos, byte)
    return bytes(b)


streams = st.builds(
    mutate,
    st.lists(command(), min_size=1, max_size=25).map(b"".join),
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 10_000),
            st.sampled_from([0, 10, 13, 32, 48, 49, 120, 255]),
        ),
        max_size=4,
    ),
) | st.binary(max_size=600)


def check_replies(data: bytes) -> list[bytes]:
    """Assert ``data`` is a sequence of well-formed replies; return their lines (no bodies)."""
    return split_replies(data)


def check_engine(e: Engine, sessions: list[Session]) -> None:
    by_state = {READY: 0, DELAYED: 0, BURIED: 0, RESERVED: 0}
    for job in e.jobs.values():
        by_state[job.state] += 1
    assert by_state[READY] == e.ready_ct
    assert by_state[DELAYED] == e.delayed_ct
    assert by_state[BURIED] == e.buried_ct
    assert by_state[RESERVED] == e.reserved_ct
    assert sum(t.ready_ct for t in e.tubes.values()) == e.ready_ct
    assert sum(t.delayed_ct for t in e.tubes.values()) == e.delayed_ct
    assert sum(len(t.buried) for t in e.tubes.values()) == e.buried_ct
    assert sum(t.reserved_ct for t in e.tubes.values()) == e.reserved_ct
    assert sum(t.jobs_ct for t in e.tubes.values()) == len(e.jobs)
    assert sum(len(j.body) for j in e.jobs.values()) == e.body_bytes
    assert sum(len(s.client.reserved) for s in sessions if not s.disconnected) == e.reserved_ct
    assert e.waiting_ct == sum(1 for s in sessions if s.waiting)
    assert e.cur_conns == sum(1 for s in sessions if not s.disconnected)


def run(streams_: list[bytes], cuts: list[int], advance: list[float], **opts: Any) -> None:
    clock = ManualClock()
    e = Engine(clock, max_job_size=opts.pop("max_job_size", 30), **opts)
    pending = Pending()
    sessions = [Session(e, pending) for _ in range(len(streams_))]
    outs = [bytearray() for _ in sessions]

    def settle() -> None:
        while pending.resumed:
            resumed, pending.resumed = pending.resumed, []
            for s in resumed:
                if not s.disconnected:
                    s.feed(b"")
        pending.dirty.clear()
        for k, s in enumerate(sessions):
            outs[k] += s.take_output()

    for k, (sess, data) in enumerate(zip(sessions, streams_, strict=True)):
        prev = 0
        for cut in sorted(c % (len(data) + 1) for c in cuts):
            sess.feed(data[prev:cut])
            prev = cut
            settle()
            check_engine(e, sessions)
        sess.feed(data[prev:])
        settle()
        check_engine(e, sessions)
        if advance:
            clock.advance(advance[k % len(advance)])
            e.tick()
            settle()
            check_engine(e, sessions)
    for k, s in enumerate(sessions):
        if k % 2:
            s.close()
            settle()
            check_engine(e, sessions)
    for out in outs:
        assert b"INTERNAL_ERROR" not in check_replies(bytes(out))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(streams, min_size=1, max_size=3),
    st.lists(st.integers(0, 10_000), max_size=4),
    st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 120.0]), max_size=3),
)
def test_random_streams_keep_the_engine_consistent(
    data: list[bytes], cuts: list[int], advance: list[float]
) -> None:
    run(data, cuts, advance)


@settings(max_examples=100, deadline=None)
@given(st.lists(streams, min_size=1, max_size=2), st.lists(st.integers(0, 10_000), max_size=3))
def test_limits_and_small_output_bound(data: list[bytes], cuts: list[int]) -> None:
    run(data, cuts, [1.0], max_jobs=2, max_job_bytes=40)


@settings(max_examples=100, deadline=None)
@given(streams, st.lists(st.integers(0, 10_000), max_size=3))
def test_tiny_output_limit_loses_nothing(data: bytes, cuts: list[int]) -> None:
    """With an output bound of 1 byte every feed stops after one reply; resuming with
    ``feed(b"")`` until the output is no longer full must give exactly the unbounded output."""
    data = data.replace(b"stats\r\n", b"peek-ready\r\n")  # server stats differ per engine

    def replies(limit: int) -> bytes:
        e = Engine(ManualClock(), max_job_size=30)
        s = Session(e)
        s.set_output_limit(limit)
        out = bytearray()
        prev = 0
        for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            s.feed(data[prev:cut])
            prev = cut
            out += s.take_output()
            for _ in range(10_000):
                if not s.output_full:
                    break
                s.feed(b"")
                out += s.take_output()
            assert not s.output_full
        s.pending.dirty.clear()
        return bytes(out)

    assert replies(1) == replies(0)


@settings(max_examples=100, deadline=None)
@given(streams)
def test_unauthenticated_sessions_never_touch_the_engine(data: bytes) -> None:
    e = Engine(ManualClock(), max_job_size=30)
    s = Session(e, auth_token=b"tok")
    s.feed(data.replace(b"auth tok\r\n", b""))
    out = s.take_output()
    check_replies(out)
    # (an over-long line is answered BAD_FORMAT by the framing, before any command runs)
    assert set(out.split(b"\r\n")) <= {b"UNAUTHORIZED", b"BAD_FORMAT", b""}
    assert not e.jobs and sum(e.ops) == 0
    # End a partial last line first: it may itself be `quit` or a wrong `auth`, which close.
    s.feed(b"\r\n")
    assert set(s.take_output().split(b"\r\n")) <= {b"UNAUTHORIZED", b"BAD_FORMAT", b""}
    closed = s.closing  # a wrong `auth` (or a `quit`) in the stream closed the connection
    s.feed(b"auth tok\r\n")
    tail = s.take_output()
    assert tail == b"" if closed else tail.endswith((b"AUTHENTICATED\r\n", b"UNAUTHORIZED\r\n"))
