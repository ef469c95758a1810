"""reserve, reserve-with-timeout, reserve-job, release, TTR, DEADLINE_SOON, pause timing.

cttests 17, 26, 40-51 and the scheduling quirks of docs/COMPATIBILITY.md ("Commands", "Scheduling and
timing", "Quirks pinned by tests"). Time moves only through
``server.advance`` (instant against beanstalk-py, a real sleep against the reference).
"""

from __future__ import annotations

import pytest
from support.harness import ServerHandle
from support.transcript import MARGIN, job_stats, settled_stats, stats_of, wait_for_stat


async def test_pause(server: ServerHandle) -> None:  # cttest 17
    c = await server.connect()
    await c.send(b"put 0 0 0 1\r\nx\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"pause-tube default 1\r\n")
    await c.expect(b"PAUSED\r\n")
    await c.send(b"reserve\r\n")
    await server.advance(0.9)
    await c.expect_nothing(0.01)
    await server.advance(0.1 + MARGIN)
    await c.expect(b"RESERVED 1 1\r\nx\r\n")


async def test_paused_tube_still_allows_peek_put_delete_kick_reserve_job(
    server: ServerHandle,
) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 10 1\r\na\r\npause-tube default 100\r\n")
    await c.expect(b"INSERTED 1\r\nPAUSED\r\n")
    await c.send(b"reserve-with-timeout 0\r\n")
    await c.expect(b"TIMED_OUT\r\n")
    await c.send(b"put 0 0 10 1\r\nb\r\npeek-ready\r\nreserve-job 2\r\nbury 2 0\r\nkick 1\r\n")
    await c.expect(b"INSERTED 2\r\nFOUND 1 1\r\na\r\nRESERVED 2 1\r\nb\r\nBURIED\r\nKICKED 1\r\n")
    await c.send(b"delete 1\r\n")
    await c.expect(b"DELETED\r\n")


async def test_multi_tube_global_priority(server: ServerHandle) -> None:  # cttest 26
    c = await server.connect()
    await c.send(b"use abc\r\n")
    await c.expect(b"USING abc\r\n")
    await c.send(b"put 999999 0 0 0\r\n\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"use def\r\n")
    await c.expect(b"USING def\r\n")
    await c.send(b"put 99 0 0 0\r\n\r\n")
    await c.expect(b"INSERTED 2\r\n")
    await c.send(b"watch abc\r\n")
    await c.expect(b"WATCHING 2\r\n")
    await c.send(b"watch def\r\n")
    await c.expect(b"WATCHING 3\r\n")
    await c.send(b"reserve\r\n")
    await c.expect(b"RESERVED 2 0\r\n\r\n")


async def test_same_priority_goes_to_lowest_id_across_tubes(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"use b\r\nput 7 0 10 1\r\n1\r\nuse a\r\nput 7 0 10 1\r\n2\r\n")
    await c.expect(b"USING b\r\nINSERTED 1\r\nUSING a\r\nINSERTED 2\r\n")
    await c.send(b"watch a\r\nwatch b\r\nreserve\r\nreserve\r\n")
    await c.expect(b"WATCHING 2\r\nWATCHING 3\r\nRESERVED 1 1\r\n1\r\nRESERVED 2 1\r\n2\r\n")


async def test_reserve_only_from_watched_tubes(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"use other\r\nput 0 0 10 1\r\nx\r\nreserve-with-timeout 0\r\n")
    await c.expect(b"USING other\r\nINSERTED 1\r\nTIMED_OUT\r\n")


async def test_reserve_with_timeout_2conns(server: ServerHandle) -> None:  # cttest 40
    a = await server.connect()
    b = await server.connect()
    await a.send(b"watch foo\r\n")
    await a.expect(b"WATCHING 2\r\n")
    await a.send(b"reserve-with-timeout 1\r\n")
    await b.send(b"watch foo\r\n")
    await b.expect(b"WATCHING 2\r\n")
    await server.advance(0.9)
    await a.expect_nothing(0.01)
    await server.advance(0.1 + MARGIN)
    await a.expect(b"TIMED_OUT\r\n", timeout=1.1)


async def test_reserve_with_timeout_gets_job_put_while_waiting(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(b"reserve-with-timeout 5\r\n")
    await wait_for_stat(b, "current-waiting", "1")
    await b.send(b"put 0 0 10 2\r\nhi\r\n")
    await b.expect(b"INSERTED 1\r\n")
    await a.expect(b"RESERVED 1 2\r\nhi\r\n")


async def test_reserve_ttr_deadline_soon(server: ServerHandle) -> None:  # cttest 41
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\na\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"reserve-with-timeout 1\r\n")
    await c.expect(b"RESERVED 1 1\r\na\r\n")
    await server.advance(0.2)
    assert (await job_stats(c, 1))["state"] == "reserved"
    await c.send(b"reserve-with-timeout 1\r\n")
    await c.expect(b"DEADLINE_SOON\r\n")
    assert (await job_stats(c, 1))["state"] == "reserved"
    await c.send(b"release 1 0 0\r\n")
    await c.expect(b"RELEASED\r\n")
    assert (await job_stats(c, 1))["state"] == "ready"


async def test_reserve_job_ttr_deadline_soon(server: ServerHandle) -> None:  # cttest 42
    c = await server.connect()
    await c.send(b"put 0 5 1 1\r\na\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"reserve-job 1\r\n")
    await c.expect(b"RESERVED 1 1\r\na\r\n")
    await c.send(b"reserve-with-timeout 1\r\n")
    await c.expect(b"DEADLINE_SOON\r\n")
    assert (await job_stats(c, 1))["state"] == "reserved"
    await server.advance(1 + MARGIN)
    await settled_stats(server.reference, c, b"stats-job 1", {"state": "ready", "timeouts": "1"})


async def test_reserve_job_already_reserved(server: ServerHandle) -> None:  # cttest 43
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\na\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await c.send(b"reserve-job 1\r\n")
    await c.expect(b"RESERVED 1 1\r\na\r\n")
    await c.send(b"reserve-job 1\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    other = await server.connect()
    await other.send(b"reserve-job 1\r\n")
    await other.expect(b"NOT_FOUND\r\n")


async def test_reserve_job_ready(server: ServerHandle) -> None:  # cttest 44
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\nA\r\nput 0 0 1 1\r\nB\r\n")
    await c.expect(b"INSERTED 1\r\nINSERTED 2\r\n")
    await c.send(b"reserve-job 2\r\n")
    await c.expect(b"RESERVED 2 1\r\nB\r\n")
    await c.send(b"reserve-job 3\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"release 1 1 0\r\n")
    await c.expect(b"NOT_FOUND\r\n")
    await c.send(b"release 2 1 0\r\n")
    await c.expect(b"RELEASED\r\n")


async def test_reserve_job_delayed(server: ServerHandle) -> None:  # cttest 45
    c = await server.connect()
    for i in (1, 2, 3):
        await c.send(b"put 0 100 1 1\r\n%d\r\n" % i)
        await c.expect(b"INSERTED %d\r\n" % i)
    await c.send(b"reserve-job 2\r\n")
    await c.expect(b"RESERVED 2 1\r\n2\r\n")
    await c.send(b"release 2 1 0\r\n")
    await c.expect(b"RELEASED\r\n")
    st = await job_stats(c, 2)
    assert (st["state"], st["pri"], st["releases"], st["delay"]) == ("ready", "1", "1", "0")


async def test_reserve_job_buried(server: ServerHandle) -> None:  # cttest 46
    c = await server.connect()
    await c.send(b"put 0 0 10 1\r\nA\r\nput 0 0 10 1\r\nB\r\n")
    await c.expect(b"INSERTED 1\r\nINSERTED 2\r\n")
    await c.send(b"reserve\r\nbury 1 0\r\nreserve\r\nbury 2 0\r\n")
    await c.expect(b"RESERVED 1 1\r\nA\r\nBURIED\r\nRESERVED 2 1\r\nB\r\nBURIED\r\n")
    await c.send(b"reserve-job 2\r\nreserve-job 1\r\n")
    await c.expect(b"RESERVED 2 1\r\nB\r\nRESERVED 1 1\r\nA\r\n")
    await c.send(b"release 1 0 0\r\nrelease 2 0 0\r\n")
    await c.expect(b"RELEASED\r\nRELEASED\r\n")
    assert (await job_stats(c, 1))["state"] == "ready"
    assert (await job_stats(c, 2))["state"] == "ready"


async def test_reserve_job_any_tube_ignores_pause_and_watch(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"use hidden\r\nput 0 0 10 1\r\nh\r\npause-tube hidden 100\r\n")
    await c.expect(b"USING hidden\r\nINSERTED 1\r\nPAUSED\r\n")
    await c.send(b"reserve-job 1\r\n")
    await c.expect(b"RESERVED 1 1\r\nh\r\n")


@pytest.mark.parametrize(
    "line",
    [
        b"release 18446744073709551616 1 1",  # cttest 47
        b"release 184467440737095516161844674407370955161618446744073709551616 1 1",
        b"release foo111",
        b"release 111foo",
        b"release 18446744073709551615 abc 1",
        b"release 18446744073709551615 1 abc",
        b"release 1 1",
        b"release 1 1 1 ",
        b"release 1 -1 0",
        b"release 1 4294967296 0",
    ],
)
async def test_release_bad_format(server: ServerHandle, line: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


async def test_release_not_found(server: ServerHandle) -> None:  # cttest 48
    c = await server.connect()
    await c.send(b"release 1 1 1\r\n")
    await c.expect(b"NOT_FOUND\r\n")


async def test_release_requires_own_reservation(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(b"put 0 0 10 1\r\nx\r\nreserve\r\n")
    await a.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    await b.send(b"release 1 0 0\r\nbury 1 0\r\ntouch 1\r\n")
    await b.expect(b"NOT_FOUND\r\nNOT_FOUND\r\nNOT_FOUND\r\n")


async def test_release_with_delay_then_ready(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 5 0 10 1\r\nx\r\nreserve\r\nrelease 1 9 1\r\n")
    await c.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\nRELEASED\r\n")
    st = await job_stats(c, 1)
    assert (st["state"], st["pri"], st["delay"], st["releases"]) == ("delayed", "9", "1", "1")
    await c.send(b"reserve-with-timeout 0\r\n")
    await c.expect(b"TIMED_OUT\r\n")
    await server.advance(1 + MARGIN)
    await c.send(b"reserve-with-timeout 1\r\n")  # slack for the reference's real clock
    await c.expect(b"RESERVED 1 1\r\nx\r\n")


async def test_release_goes_to_waiting_connection(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(b"put 0 0 10 1\r\nx\r\nreserve\r\n")
    await a.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    await b.send(b"reserve\r\n")
    await wait_for_stat(a, "current-waiting", "1")
    await a.send(b"release 1 3 0\r\n")
    await a.expect(b"RELEASED\r\n")
    await b.expect(b"RESERVED 1 1\r\nx\r\n")


async def test_close_releases_job(server: ServerHandle) -> None:  # cttest 49
    producer = await server.connect()
    consumer = await server.connect()
    await producer.send(b"put 0 0 100 1\r\na\r\n")
    await producer.expect(b"INSERTED 1\r\n")
    await consumer.send(b"reserve\r\n")
    await consumer.expect(b"RESERVED 1 1\r\na\r\n")
    await consumer.close()
    await producer.send(b"reserve-with-timeout 1\r\n")
    await producer.expect(b"RESERVED 1 1\r\na\r\n")
    st = await job_stats(producer, 1)
    assert (st["reserves"], st["timeouts"], st["releases"]) == ("2", "0", "0")


async def test_quit_releases_job(server: ServerHandle) -> None:  # cttest 50
    producer = await server.connect()
    consumer = await server.connect()
    await producer.send(b"put 0 0 100 1\r\na\r\n")
    await producer.expect(b"INSERTED 1\r\n")
    await consumer.send(b"reserve\r\n")
    await consumer.expect(b"RESERVED 1 1\r\na\r\n")
    await consumer.send(b"quit\r\n")
    await consumer.expect_closed()
    await producer.send(b"reserve-with-timeout 1\r\n")
    await producer.expect(b"RESERVED 1 1\r\na\r\n")


async def test_unpause_tube(server: ServerHandle) -> None:  # cttest 51
    a = await server.connect()
    await a.send(b"put 0 0 0 0\r\n\r\n")
    await a.expect(b"INSERTED 1\r\n")
    await a.send(b"pause-tube default 86400\r\n")
    await a.expect(b"PAUSED\r\n")
    b = await server.connect()
    await b.send(b"reserve\r\n")
    await wait_for_stat(a, "current-waiting", "1")
    await b.expect_nothing(0.01)
    await a.send(b"pause-tube default 0\r\n")
    await a.expect(b"PAUSED\r\n")
    await server.advance(0.01)  # "next tick": any passage of time
    await b.expect(b"RESERVED 1 0\r\n\r\n", timeout=1.0)


async def test_waiter_service_order_w1_w2_w4_w3(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Scheduling and timing", "Quirks pinned by tests"
    ctl = await server.connect(name="ctl")
    waiters = [await server.connect(name=f"W{i}") for i in (1, 2, 3, 4)]
    for n, w in enumerate(waiters, start=1):
        await w.send(b"reserve\r\n")
        await wait_for_stat(ctl, "current-waiting", str(n))
    for i in (1, 2, 3, 4):
        await ctl.send(b"put 0 0 10 1\r\n%d\r\n" % i)
        await ctl.expect(b"INSERTED %d\r\n" % i)
    w1, w2, w3, w4 = waiters
    await w1.expect(b"RESERVED 1 1\r\n1\r\n")
    await w2.expect(b"RESERVED 2 1\r\n2\r\n")
    await w4.expect(b"RESERVED 3 1\r\n3\r\n")
    await w3.expect(b"RESERVED 4 1\r\n4\r\n")


async def test_ttr_1_reserve_then_deadline_soon(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Quirks pinned by tests"
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\nx\r\nreserve\r\nreserve-with-timeout 0\r\nreserve\r\n")
    await c.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\nDEADLINE_SOON\r\nDEADLINE_SOON\r\n")
    stats = await stats_of(c, b"stats")
    assert (stats["cmd-reserve"], stats["cmd-reserve-with-timeout"]) == ("2", "1")


async def test_deadline_soon_not_sent_when_ready_job_exists(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\na\r\nreserve\r\nput 0 0 1 1\r\nb\r\nreserve\r\n")
    await c.expect(b"INSERTED 1\r\nRESERVED 1 1\r\na\r\nINSERTED 2\r\nRESERVED 2 1\r\nb\r\n")


async def test_ttr_2_waits_one_second_then_deadline_soon(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 2 1\r\nx\r\nreserve\r\n")
    await c.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    await c.send(b"reserve\r\n")
    await server.advance(0.9)
    await c.expect_nothing(0.01)
    await server.advance(0.1 + MARGIN)
    await c.expect(b"DEADLINE_SOON\r\n")
    await c.send(b"reserve-with-timeout 10\r\n")
    await c.expect(b"DEADLINE_SOON\r\n")
    assert (await job_stats(c, 1))["state"] == "reserved"


async def test_ttr_expiry_returns_job_to_ready_and_counts(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(b"put 3 0 1 1\r\nx\r\nreserve\r\n")
    await a.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    await b.send(b"reserve\r\n")
    await wait_for_stat(a, "current-waiting", "1")
    await server.advance(1 + MARGIN)
    # Some I/O wakes the reference's scheduler (see the next test); then b has the job.
    await settled_stats(server.reference, a, b"stats-job 1", {"timeouts": "1"})
    await b.expect(b"RESERVED 1 1\r\nx\r\n")
    st = await job_stats(a, 1)
    assert (st["state"], st["reserves"], st["timeouts"], st["pri"]) == ("reserved", "2", "1", "3")
    assert (await stats_of(a, b"stats"))["job-timeouts"] == "1"
    await a.send(b"delete 1\r\n")
    await a.expect(b"NOT_FOUND\r\n")


@pytest.mark.ours_only(
    "the reference hands a TTR-expired job to a waiter only at its next wake-up (some I/O)"
)
async def test_ttr_expired_job_goes_to_waiter_without_other_io(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(b"put 3 0 1 1\r\nx\r\nreserve\r\n")
    await a.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    await b.send(b"reserve\r\n")
    await wait_for_stat(a, "current-waiting", "1")
    await server.advance(1 + MARGIN)
    await b.expect(b"RESERVED 1 1\r\nx\r\n", timeout=1.0)


async def test_touch_extends_ttr(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\nx\r\nreserve\r\n")
    await c.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    await server.advance(0.6)
    await c.send(b"touch 1\r\n")
    await c.expect(b"TOUCHED\r\n")
    await server.advance(0.6)  # past the original deadline, within the touched one
    st = await job_stats(c, 1)
    assert (st["state"], st["timeouts"]) == ("reserved", "0")


async def test_reserve_with_timeout_parsing(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Quirks pinned by tests"
    c = await server.connect()
    await c.send(b"reserve-with-timeout 0abc\r\n")
    await c.expect(b"TIMED_OUT\r\n")
    await c.send(b"reserve-with-timeout  0\r\n")
    await c.expect(b"TIMED_OUT\r\n")
    await c.send(b"reserve-with-timeout 2147483647\r\n")
    await c.expect_nothing(0.05)
    other = await server.connect()
    await other.send(b"put 0 0 10 1\r\nz\r\n")
    await other.expect(b"INSERTED 1\r\n")
    await c.expect(b"RESERVED 1 1\r\nz\r\n")


@pytest.mark.needs_1_13("1.12 parses the timeout with strtol and never rejects it")
@pytest.mark.parametrize(
    "arg", [b"2147483648", b"4294967296", b"-1", b"+1", b"x", b"", b"99999999999999999999"]
)
async def test_reserve_with_timeout_bad_format(server: ServerHandle, arg: bytes) -> None:
    c = await server.connect()
    await c.send(b"reserve-with-timeout " + arg + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


async def test_blocked_reserve_defers_pipelined_commands(server: ServerHandle) -> None:
    c = await server.connect()
    other = await server.connect()
    await c.send(b"reserve\r\nlist-tube-used\r\n")
    await wait_for_stat(other, "current-waiting", "1")
    await c.expect_nothing(0.05)
    await other.send(b"put 0 0 10 1\r\nq\r\n")
    await other.expect(b"INSERTED 1\r\n")
    await c.expect(b"RESERVED 1 1\r\nq\r\nUSING default\r\n")


async def test_half_close_while_waiting_times_out(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"reserve\r\n")
    await c.expect_nothing(0.05)
    await c.half_close()
    await c.expect(b"TIMED_OUT\r\n")


async def test_delayed_job_becomes_ready_for_waiter(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 1 10 1\r\nd\r\nreserve\r\n")
    await c.expect(b"INSERTED 1\r\n")
    await server.advance(0.9)
    await c.expect_nothing(0.01)
    await server.advance(0.1 + MARGIN)
    await c.expect(b"RESERVED 1 1\r\nd\r\n")


async def test_paused_ready_job_counts_for_deadline_soon_check(server: ServerHandle) -> None:
    """COMPATIBILITY.md, "Scheduling and timing": a ready job in a *paused* watched tube suppresses the immediate DEADLINE_SOON."""
    c = await server.connect()
    await c.send(b"put 0 0 1 1\r\na\r\nreserve\r\n")
    await c.expect(b"INSERTED 1\r\nRESERVED 1 1\r\na\r\n")
    await c.send(b"put 0 0 10 1\r\nb\r\npause-tube default 100\r\n")
    await c.expect(b"INSERTED 2\r\nPAUSED\r\n")
    await c.send(b"reserve-with-timeout 0\r\n")
    await c.expect(b"DEADLINE_SOON\r\n")
