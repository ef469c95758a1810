"""Engine and session semantics with a manual clock: no sockets, no sleeping."""

from __future__ import annotations

import pytest
from support.enginekit import Kit

from beanstalk_py.core.job import RESERVED, Job
from beanstalk_py.core.journal import JournalStats
from beanstalk_py.protocol.session import Session


@pytest.fixture
def kit() -> Kit:
    return Kit()


def put(
    kit: Kit, s: Session, body: bytes = b"x", pri: int = 0, delay: int = 0, ttr: int = 60
) -> int:
    reply = kit.send(s, b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body))
    assert reply.startswith(b"INSERTED "), reply
    return int(reply.split()[1])


def test_ttr_expiry_returns_job_to_ready_and_counts_timeout(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    put(kit, p, ttr=5)
    assert kit.send(w, b"reserve\r\n") == b"RESERVED 1 1\r\nx\r\n"
    kit.advance(4.9)
    assert kit.send(p, b"peek-ready\r\n") == b"NOT_FOUND\r\n"
    kit.advance(0.2)
    assert kit.send(p, b"peek-ready\r\n") == b"FOUND 1 1\r\nx\r\n"
    assert kit.engine.job_timeouts == 1
    assert b"timeouts: 1\n" in kit.send(p, b"stats-job 1\r\n")
    # the worker no longer holds it
    assert kit.send(w, b"delete 1\r\n") == b"DELETED\r\n"  # ready jobs are deletable by anyone


def test_deadline_soon_while_waiting(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    put(kit, p, ttr=3)
    assert kit.send(w, b"reserve\r\n").startswith(b"RESERVED 1")
    assert kit.send(w, b"reserve\r\n") == b""  # waits: 2 s left, outside the 1 s margin
    assert w.waiting
    kit.advance(1.99)
    assert kit.out(w) == b""
    kit.advance(0.02)
    assert kit.out(w) == b"DEADLINE_SOON\r\n"
    assert not w.waiting
    # inside the margin a new reserve answers at once
    assert kit.send(w, b"reserve-with-timeout 5\r\n") == b"DEADLINE_SOON\r\n"


def test_deadline_soon_is_skipped_when_a_watched_tube_has_ready_jobs(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    put(kit, p, ttr=1)
    put(kit, p, body=b"y")
    assert kit.send(w, b"reserve\r\n").startswith(b"RESERVED 1")
    assert kit.send(w, b"reserve\r\n") == b"RESERVED 2 1\r\ny\r\n"


def test_reserve_with_timeout_zero_and_timeout(kit: Kit) -> None:
    w = kit.session()
    assert kit.send(w, b"reserve-with-timeout 0\r\n") == b"TIMED_OUT\r\n"
    assert kit.send(w, b"reserve-with-timeout 2\r\n") == b""
    kit.advance(1.999)
    assert kit.out(w) == b""
    kit.advance(0.002)
    assert kit.out(w) == b"TIMED_OUT\r\n"


def test_delayed_job_becomes_ready_at_its_deadline(kit: Kit) -> None:
    s = kit.session()
    put(kit, s, delay=10)
    assert kit.send(s, b"peek-ready\r\n") == b"NOT_FOUND\r\n"
    assert b"time-left: 10\n" in kit.send(s, b"stats-job 1\r\n")
    kit.advance(9.5)
    assert b"state: delayed\n" in kit.send(s, b"stats-job 1\r\n")
    kit.advance(0.5)
    assert kit.send(s, b"peek-ready\r\n") == b"FOUND 1 1\r\nx\r\n"
    assert b"delay: 10\n" in kit.send(s, b"stats-job 1\r\n")


def test_waiting_reserver_gets_delayed_job_when_due(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    put(kit, p, delay=3)
    assert kit.send(w, b"reserve\r\n") == b""
    kit.advance(3)
    assert kit.out(w) == b"RESERVED 1 1\r\nx\r\n"


def test_pause_holds_jobs_until_it_expires(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    put(kit, p)
    assert kit.send(p, b"pause-tube default 5\r\n") == b"PAUSED\r\n"
    assert kit.send(w, b"reserve\r\n") == b""
    tube_stats = kit.send(p, b"stats-tube default\r\n")
    assert b"pause: 5\npause-time-left: 5\n" in tube_stats
    kit.advance(4.9)
    assert kit.out(w) == b""
    kit.advance(0.1)
    assert kit.out(w) == b"RESERVED 1 1\r\nx\r\n"
    assert b"pause: 0\npause-time-left: 0\n" in kit.send(p, b"stats-tube default\r\n")


def test_pause_zero_unpauses_on_the_next_tick(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    put(kit, p)
    kit.send(p, b"pause-tube default 86400\r\n")
    assert kit.send(w, b"reserve\r\n") == b""
    assert kit.send(p, b"pause-tube default 0\r\n") == b"PAUSED\r\n"
    kit.advance(0.001)
    assert kit.out(w) == b"RESERVED 1 1\r\nx\r\n"


def test_global_priority_across_watched_tubes(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    kit.send(p, b"use abc\r\n")
    put(kit, p, pri=999999)
    kit.send(p, b"use def\r\n")
    put(kit, p, pri=99)
    kit.send(w, b"watch abc\r\nwatch def\r\n")
    assert kit.send(w, b"reserve\r\n") == b"RESERVED 2 1\r\nx\r\n"


def test_waiters_are_served_in_reference_order(kit: Kit) -> None:
    p = kit.session()
    waiters = [kit.session() for _ in range(4)]
    for w in waiters:
        assert kit.send(w, b"reserve\r\n") == b""
    served = []
    for _ in range(4):
        job_id = put(kit, p)
        for i, w in enumerate(waiters):
            if kit.out(w).startswith(b"RESERVED %d " % job_id):
                served.append(i + 1)
    assert served == [1, 2, 4, 3]


def test_close_returns_reserved_jobs_without_counting_a_timeout(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    put(kit, p)
    kit.send(w, b"reserve\r\n")
    w.close()
    assert kit.send(p, b"peek-ready\r\n") == b"FOUND 1 1\r\nx\r\n"
    assert kit.engine.job_timeouts == 0
    assert kit.engine.cur_conns == 1


def test_tube_is_destroyed_when_unreferenced_and_list_order_swaps(kit: Kit) -> None:
    s = kit.session()
    for name in (b"t1", b"t2", b"t3", b"t4"):
        kit.send(s, b"watch %s\r\n" % name)
    assert (
        kit.send(s, b"list-tubes\r\n") == b"OK 34\r\n---\n- default\n- t1\n- t2\n- t3\n- t4\n\r\n"
    )
    assert kit.send(s, b"ignore t2\r\n") == b"WATCHING 4\r\n"
    assert kit.send(s, b"list-tubes\r\n") == b"OK 29\r\n---\n- default\n- t1\n- t4\n- t3\n\r\n"
    assert kit.send(s, b"stats-tube t2\r\n") == b"NOT_FOUND\r\n"
    assert kit.send(s, b"ignore default\r\n") == b"WATCHING 3\r\n"
    assert kit.send(s, b"list-tubes-watched\r\n") == b"OK 19\r\n---\n- t3\n- t1\n- t4\n\r\n"


def test_kick_prefers_buried_then_delayed(kit: Kit) -> None:
    s = kit.session()
    put(kit, s)
    put(kit, s, delay=100)
    put(kit, s, delay=50)
    kit.send(s, b"reserve\r\n")
    assert kit.send(s, b"bury 1 7\r\n") == b"BURIED\r\n"
    assert kit.send(s, b"kick 10\r\n") == b"KICKED 1\r\n"
    assert kit.send(s, b"kick 1\r\n") == b"KICKED 1\r\n"
    assert kit.send(s, b"peek-delayed\r\n").startswith(b"FOUND 2 ")  # 3 (earlier) was kicked
    stats = kit.send(s, b"stats-job 1\r\n")
    assert b"pri: 7\n" in stats and b"buries: 1\n" in stats and b"kicks: 1\n" in stats


def test_release_with_delay_then_ready(kit: Kit) -> None:
    s = kit.session()
    put(kit, s)
    kit.send(s, b"reserve\r\n")
    assert kit.send(s, b"release 1 5 2\r\n") == b"RELEASED\r\n"
    assert kit.send(s, b"peek-delayed\r\n") == b"FOUND 1 1\r\nx\r\n"
    kit.advance(2)
    stats = kit.send(s, b"stats-job 1\r\n")
    assert b"state: ready\n" in stats and b"pri: 5\n" in stats and b"releases: 1\n" in stats


def test_touch_restarts_the_ttr(kit: Kit) -> None:
    s = kit.session()
    put(kit, s, ttr=10)
    kit.send(s, b"reserve\r\n")
    kit.advance(8)
    assert kit.send(s, b"touch 1\r\n") == b"TOUCHED\r\n"
    kit.advance(8)
    assert b"state: reserved\n" in kit.send(s, b"stats-job 1\r\n")
    kit.advance(2.5)
    assert b"state: ready\n" in kit.send(s, b"stats-job 1\r\n")


def test_reserve_job_takes_delayed_and_buried_jobs_in_any_tube(kit: Kit) -> None:
    s, other = kit.session(), kit.session()
    kit.send(other, b"use elsewhere\r\n")
    put(kit, other, delay=100)
    assert kit.send(s, b"reserve-job 1\r\n") == b"RESERVED 1 1\r\nx\r\n"
    assert kit.send(s, b"reserve-job 1\r\n") == b"NOT_FOUND\r\n"
    assert kit.send(s, b"release 1 0 0\r\n") == b"RELEASED\r\n"
    assert b"state: ready\n" in kit.send(s, b"stats-job 1\r\n")


class RecordingJournal:
    """Records the state of every UPDATE; refuses them while ``full``."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, int]] = []
        self.full = False

    def put(self, job: Job) -> bool:
        return True

    def update(self, job: Job) -> bool:
        if self.full:
            return False
        self.updates.append((job.id, job.state))
        return True

    def delete(self, job: Job) -> None:
        return None

    def stats(self) -> JournalStats:
        return JournalStats()


def test_reserve_job_of_a_buried_or_delayed_job_is_journaled_as_reserved(kit: Kit) -> None:
    journal = RecordingJournal()
    kit.engine.journal = journal
    s = kit.session()
    put(kit, s)
    put(kit, s, delay=100)
    assert kit.send(s, b"reserve-job 1\r\nbury 1 0\r\n") == b"RESERVED 1 1\r\nx\r\nBURIED\r\n"
    journal.updates.clear()
    put(kit, s)  # a ready job: reserving it changes nothing a restart shows
    assert kit.send(s, b"reserve-job 3\r\n") == b"RESERVED 3 1\r\nx\r\n"
    assert journal.updates == []
    journal.full = True  # not persisted: refused, and the job stays where it was
    assert kit.send(s, b"reserve-job 1\r\nreserve-job 2\r\n") == b"INTERNAL_ERROR\r\n" * 2
    assert b"state: buried\n" in kit.send(s, b"stats-job 1\r\n")
    assert b"state: delayed\n" in kit.send(s, b"stats-job 2\r\n")
    assert kit.send(s, b"peek-buried\r\n") == b"FOUND 1 1\r\nx\r\n"
    journal.full = False
    assert kit.send(s, b"reserve-job 1\r\n") == b"RESERVED 1 1\r\nx\r\n"
    assert kit.send(s, b"reserve-job 2\r\n") == b"RESERVED 2 1\r\nx\r\n"
    assert journal.updates == [(1, RESERVED), (2, RESERVED)]


def test_drain_mode_refuses_puts_after_the_body(kit: Kit) -> None:
    s = kit.session()
    kit.engine.drain()
    assert kit.send(s, b"put 0 0 1 1\r\nx\r\nput 0 0 1 1\r\ny\r\n") == b"DRAINING\r\nDRAINING\r\n"
    assert kit.engine.next_id == 3  # ids are consumed, as the reference does
    assert b"draining: true\n" in kit.send(s, b"stats\r\n")


def test_max_jobs_limit_answers_out_of_memory(kit: Kit) -> None:
    k = Kit(max_jobs=2)
    s = k.session()
    put(k, s)
    put(k, s)
    assert k.send(s, b"put 0 0 1 1\r\nx\r\n") == b"OUT_OF_MEMORY\r\n"
    k.send(s, b"delete 1\r\n")
    assert k.send(s, b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 4\r\n"


def test_many_deletes_keep_heaps_small(kit: Kit) -> None:
    s = kit.session()
    tube = kit.engine.default
    for _ in range(5000):
        job_id = put(kit, s)
        kit.send(s, b"delete %d\r\n" % job_id)
    assert tube.ready_entries < 200
    for _ in range(2000):
        job_id = put(kit, s, delay=5)
        kit.send(s, b"delete %d\r\n" % job_id)
    assert len(tube.delayed) < 200
    assert len(kit.engine.timers.heap) < 3000


def test_live_timers_still_fire_after_stale_ones_are_purged(kit: Kit) -> None:
    """Thousands of cancelled deadlines trigger a bulk purge of the timer heap; the live
    delay, TTR and reserve-with-timeout deadlines must survive it."""
    p, w, waiter = kit.session(), kit.session(), kit.session()
    delayed = put(kit, p, b"delayed", delay=10)
    held = put(kit, p, b"held", ttr=30)
    assert kit.send(w, b"reserve\r\n") == b"RESERVED %d 4\r\nheld\r\n" % held
    cmds = b"watch other\r\nignore default\r\nreserve-with-timeout 20\r\n"
    assert kit.send(waiter, cmds) == b"WATCHING 2\r\nWATCHING 1\r\n"
    for _ in range(3000):  # each leaves a stale delay entry behind
        kit.send(p, b"delete %d\r\n" % put(kit, p, delay=5))
    assert len(kit.engine.timers.heap) < 3000  # a purge did run
    kit.advance(10)
    assert kit.send(p, b"peek-ready\r\n") == b"FOUND %d 7\r\ndelayed\r\n" % delayed
    kit.advance(10)
    assert kit.out(waiter) == b"TIMED_OUT\r\n"
    kit.advance(10)
    assert kit.send(p, b"stats-job %d\r\n" % held).count(b"state: ready\n") == 1


def _tube_stat(kit: Kit, s: Session, tube: bytes, field: bytes) -> bytes:
    reply = kit.send(s, b"stats-tube " + tube + b"\r\n")
    line = next(x for x in reply.split(b"\n") if x.startswith(field + b": "))
    return line.split(b": ")[1]


def test_current_using_and_watching_drop_when_a_client_closes(kit: Kit) -> None:
    a, b, c = kit.session(), kit.session(), kit.session()
    for s in (a, b):
        assert kit.send(s, b"use t\r\nwatch t\r\n") == b"USING t\r\nWATCHING 2\r\n"
    assert _tube_stat(kit, c, b"t", b"current-using") == b"2"
    a.close()
    assert _tube_stat(kit, c, b"t", b"current-using") == b"1"
    assert _tube_stat(kit, c, b"t", b"current-watching") == b"1"
    b.close()
    assert kit.send(c, b"stats-tube t\r\n") == b"NOT_FOUND\r\n"  # unreferenced: gone


def test_a_served_reserve_stops_waiting_on_every_watched_tube(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    assert kit.send(w, b"watch t\r\nreserve\r\n") == b"WATCHING 2\r\n"
    assert _tube_stat(kit, p, b"t", b"current-waiting") == b"1"
    put(kit, p, b"a")  # into default: answers the reserve
    assert kit.out(w) == b"RESERVED 1 1\r\na\r\n"
    assert _tube_stat(kit, p, b"default", b"current-waiting") == b"0"
    assert _tube_stat(kit, p, b"t", b"current-waiting") == b"0"
    # a job put into the other tube stays ready: nobody waits for it
    assert kit.send(p, b"use t\r\n") == b"USING t\r\n"
    put(kit, p, b"b")
    assert _tube_stat(kit, p, b"t", b"current-jobs-ready") == b"1"


def test_ready_jobs_survive_a_purge_of_stale_ready_entries(kit: Kit) -> None:
    """Thousands of deleted ready jobs leave stale ids behind until the ready queue is
    rebuilt; the live jobs must all be in the rebuilt queue, in priority-then-id order."""
    p, w = kit.session(), kit.session()
    kept = [put(kit, p, b"k%d" % i, pri=i % 3) for i in range(10)]
    for _ in range(3000):
        kit.send(p, b"delete %d\r\n" % put(kit, p, pri=1))
    assert kit.engine.default.ready_entries < 3000  # a purge did run
    got = []
    for _ in kept:
        reply = kit.send(w, b"reserve-with-timeout 0\r\n")
        assert reply.startswith(b"RESERVED "), reply
        got.append(int(reply.split()[1]))
    assert got == sorted(kept, key=lambda j: ((j - 1) % 3, j))


@pytest.mark.parametrize("first", [b"a", b"b"])
def test_tubes_unpaused_together_serve_the_most_urgent_job_first(kit: Kit, first: bytes) -> None:
    """Two tubes whose pauses end on the same tick: the waiter gets the best (pri, id) of
    both, whichever tube was paused first."""
    p, w = kit.session(), kit.session()
    assert kit.send(p, b"use a\r\n") == b"USING a\r\n"
    urgent = put(kit, p, b"urgent", pri=1)
    assert kit.send(p, b"use b\r\n") == b"USING b\r\n"
    later = put(kit, p, b"later", pri=5)
    second = b"b" if first == b"a" else b"a"
    for tube in (first, second):
        assert kit.send(p, b"pause-tube %s 5\r\n" % tube) == b"PAUSED\r\n"
    cmds = b"watch a\r\nwatch b\r\nignore default\r\nreserve\r\n"
    assert kit.send(w, cmds) == b"WATCHING 2\r\nWATCHING 3\r\nWATCHING 2\r\n"
    kit.advance(5)
    assert kit.out(w) == b"RESERVED %d 6\r\nurgent\r\n" % urgent
    assert kit.send(w, b"reserve\r\n") == b"RESERVED %d 5\r\nlater\r\n" % later


def test_deadline_soon_follows_the_earliest_job_still_held(kit: Kit) -> None:
    p, w = kit.session(), kit.session()
    put(kit, p, ttr=5)
    put(kit, p, body=b"y", ttr=50)
    kit.send(w, b"reserve\r\nreserve\r\n")
    assert kit.send(w, b"delete 1\r\n") == b"DELETED\r\n"  # the earliest deadline leaves
    kit.advance(4.5)
    assert kit.send(w, b"reserve-with-timeout 0\r\n") == b"TIMED_OUT\r\n"  # job 2 is far away
    kit.advance(45)  # job 2 is now in its last second
    assert kit.send(w, b"reserve-with-timeout 0\r\n") == b"DEADLINE_SOON\r\n"
    assert kit.send(w, b"touch 2\r\n") == b"TOUCHED\r\n"
    assert kit.send(w, b"reserve-with-timeout 0\r\n") == b"TIMED_OUT\r\n"


def test_reserve_stays_cheap_for_a_client_holding_many_jobs(kit: Kit) -> None:
    s = kit.session()
    n = 20000
    kit.send(s, b"".join(b"put 0 0 100 1\r\nx\r\n" for _ in range(n)))
    out = kit.send(s, b"reserve\r\n" * n)  # quadratic work here would take minutes
    assert out.count(b"RESERVED ") == n
    assert kit.engine.reserved_ct == n


def test_each_command_counter_index_names_its_command() -> None:
    """stats prints cmd-<OP_NAMES[i]> for Engine.ops[i]: the OP_* indices must follow it."""
    from beanstalk_py.core import ops

    indices = {
        name[3:].lower().replace("_", "-"): getattr(ops, name)
        for name in dir(ops)
        if name.startswith("OP_") and name != "OP_NAMES"
    }
    assert indices == {name: i for i, name in enumerate(ops.OP_NAMES)}
