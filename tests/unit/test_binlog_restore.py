"""Replay straight into the engine (Binlog.replay -> core.restore.restore_many) and the binlog's
bookkeeping on the Job objects themselves (job.file, job.log_meta, per-segment dicts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.binlog_helpers import make_job, open_binlog

from beanstalk_py.binlog import Binlog
from beanstalk_py.binlog.segments import SEG_MASK, SEQ_SHIFT, live_size
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import BURIED, DELAYED, READY, RESERVED, Job
from beanstalk_py.core.restore import restore_many


def check_books(bl: Binlog, live: list[Job]) -> None:
    """Every live job is in the segments its record fields name, and nothing else is."""
    segs = bl._segs
    for j in live:
        assert j.file in segs and segs[j.file].jobs[j.id] is j
        upd = j.log_meta >> 1 & SEG_MASK
        if upd:
            assert segs[upd].jobs[j.id] is j
    ids = {j.id for j in live}
    for seg in segs.values():
        for job_id, j in seg.jobs.items():
            assert job_id in ids
            assert seg.index in (j.file, j.log_meta >> 1 & SEG_MASK)
    assert bl.live_bytes == sum(live_size(j) for j in live)
    assert bl._live_count == len(live)


def reopen(d: Path, clock: ManualClock, **kw: Any) -> tuple[Binlog, Engine]:
    bl = Binlog.open(d, fsync_ms=None, clock=clock, max_job_size=65535, **kw)
    engine = Engine(clock)
    res = bl.replay(dict(engine.tubes))
    restore_many(engine, res.by_id, res.tubes, res.buried, res.next_id)
    engine.journal = bl
    return bl, engine


def test_restore_semantics_through_the_engine(tmp_path: Path) -> None:
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path, clock, fsync_ms=None)
    j = {
        1: make_job(1, b"one", pri=5, clock=clock),
        2: make_job(2, b"two", tube="emails", pri=2000, clock=clock),
        3: make_job(3, b"three", clock=clock),
        4: make_job(4, b"four", clock=clock),
        5: make_job(5, b"five", tube="emails", clock=clock),
        6: make_job(6, b"six", clock=clock),
        7: make_job(7, b"seven", tube="emails", clock=clock),
        8: make_job(8, b"eight", pri=1, clock=clock),
        9: make_job(9, b"nine", tube="gone", clock=clock),
    }
    j[3].state, j[3].delay, j[3].deadline = DELAYED, 100, clock.now() + 100
    j[4].state, j[4].delay, j[4].deadline = DELAYED, 10, clock.now() + 10
    j[8].reserves = 2
    for job in j.values():
        assert bl.put(job)
    for i in (7, 5, 6):  # bury order across two tubes
        j[i].state, j[i].buries = BURIED, 1
        assert bl.update(j[i])
    j[8].state, j[8].reserves = RESERVED, 3  # not written: comes back ready, reserves 2
    bl.delete(j[9])
    assert j[9].file == 0 and j[9].log_meta == 0
    check_books(bl, [j[i] for i in range(1, 9)])
    bl.close()

    clock.advance(20)  # job 4's delay passes while down; job 3 has 80 s left
    bl, engine = reopen(tmp_path, clock)
    jobs = engine.jobs
    assert sorted(jobs) == list(range(1, 9)) and engine.next_id == 10
    default, emails = engine.default, engine.tubes["emails"]
    assert "gone" not in engine.tubes  # a tube whose jobs are all deleted is not created
    assert [t.name for t in engine.tube_list.items] == ["default", "emails"]
    assert all(jobs[i].tube is default for i in (1, 3, 4, 6, 8))
    assert {jobs[i].state for i in (1, 2, 4, 8)} == {READY}
    assert jobs[3].state == DELAYED and jobs[3].deadline == pytest.approx(clock.now() + 80)
    assert (jobs[8].reserves, jobs[8].pri) == (2, 1)
    assert list(emails.buried) == [7, 5] and list(default.buried) == [6]
    assert all(jobs[i].buries == 1 for i in (5, 6, 7))
    assert (engine.ready_ct, engine.urgent_ct, engine.delayed_ct, engine.buried_ct) == (4, 3, 1, 3)
    assert (default.ready_ct, default.urgent_ct, default.delayed_ct, default.jobs_ct) == (
        3,
        3,
        1,
        5,
    )
    assert (emails.ready_ct, emails.urgent_ct, emails.jobs_ct) == (1, 0, 3)
    assert engine.body_bytes == sum(len(job.body) for job in jobs.values())
    assert engine.total_jobs == 0  # counters of this run
    # ready order: lowest (pri, id) first
    order = []
    while (head := default.peek_ready(jobs)) is not None:
        order.append(head.id)
        engine._unready(head)
        head.state = RESERVED
    assert order == [8, 1, 4]
    for i in order:
        jobs[i].state = READY
    # the delayed job's timer is armed on the engine's clock
    assert engine.next_deadline() == pytest.approx(clock.now() + 80)
    clock.advance(80)
    engine.tick()
    assert jobs[3].state == READY and engine.delayed_ct == 0
    # restored jobs carry the binlog's bookkeeping: updates and deletes keep working
    check_books(bl, list(jobs.values()))
    jobs[6].state, jobs[6].kicks = READY, 1
    assert bl.update(jobs[6])
    bl.delete(jobs[1])
    check_books(bl, [jobs[i] for i in range(2, 9)])
    bl.close()
    bl, engine = reopen(tmp_path, clock)
    assert sorted(engine.jobs) == list(range(2, 9))
    assert list(engine.tubes["emails"].buried) == [7, 5] and not engine.default.buried
    assert engine.jobs[6].kicks == 1
    bl.close()


def test_replay_tubes_merge_into_the_engine_s(tmp_path: Path) -> None:
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path, clock)
    for i in range(1, 4):
        assert bl.put(make_job(i, pri=10 - i, clock=clock))
    bl.close()
    bl = Binlog.open(tmp_path, fsync_ms=None, clock=clock, max_job_size=65535)
    res = bl.replay()  # no tubes given: the replay makes its own "default"
    engine = Engine(clock)
    restore_many(engine, res.by_id, res.tubes, res.buried, res.next_id)
    assert all(job.tube is engine.default for job in engine.jobs.values())
    assert len(engine.tube_list) == 1 and engine.default.ready_ct == 3
    head = engine.default.peek_ready(engine.jobs)
    assert head is not None and head.id == 3
    bl.close()


def test_compaction_reencodes_current_fields(tmp_path: Path) -> None:
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path, clock, file_size=4096, fsync_ms=None)
    keep = [make_job(i, b"k" * 40, clock=clock) for i in range(1, 5)]
    for job in keep:
        assert bl.put(job)
    keep[0].state, keep[0].buries = BURIED, 1
    keep[2].state, keep[2].buries = BURIED, 1
    assert bl.update(keep[2])
    assert bl.update(keep[0])
    keep[1].state, keep[1].delay, keep[1].deadline = DELAYED, 500, clock.now() + 500
    assert bl.update(keep[1])
    keep[3].pri, keep[3].releases = 77, 1  # changed but not written (as if reserved)
    first = keep[3].file
    live = list(keep)
    for k in range(100, 400):
        job = make_job(k, b"y" * 200, clock=clock)
        assert bl.put(job)
        bl.delete(job)
        bl.write_pending()
        check_books(bl, live)
    assert bl.records_migrated > 0 and keep[3].file > first
    assert all(job.log_meta & 1 for job in keep)  # older FULL copies may exist
    assert keep[0].log_meta >> SEQ_SHIFT > keep[2].log_meta >> SEQ_SHIFT > 0
    bl.delete(keep[3])  # pins its delete behind every older copy still on disk
    bl.close()
    bl, engine = reopen(tmp_path, clock, file_size=4096)
    jobs = engine.jobs
    assert sorted(jobs) == [1, 2, 3]
    assert list(engine.default.buried) == [3, 1]
    assert jobs[2].state == DELAYED and jobs[2].deadline == pytest.approx(clock.now() + 500)
    check_books(bl, list(jobs.values()))
    bl.close()


def test_replay_result_views(tmp_path: Path) -> None:
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path, clock)
    a, b = make_job(1, clock=clock), make_job(2, clock=clock)
    b.state, b.deadline = DELAYED, clock.now() + 5
    assert bl.put(a) and bl.put(b)
    bl.close()
    clock.advance(10)
    bl, res = open_binlog(tmp_path, clock)
    assert res.count == 2 and [r.state for r in res.jobs] == [READY, READY]
    assert res.by_id[2].state == DELAYED  # the engine decides it is due (restore_many)
    bl.close()
