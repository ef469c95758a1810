"""Applying the leader's batches to a follower's live engine (an incremental binlog replay).

A follower keeps a hot engine: every committed batch (``replica/batch.py``), in sequence
order, goes through ``Applier.apply``, so at promotion the engine already holds the queue.

Semantics (those of binlog replay, ``binlog/replay.py`` and ``binlog/format.py`` "What is
written", record by record in log order):

* FULL of an unknown id creates the job (its tube created if needed) in its state: ready;
  delayed until its absolute ready time, converted to this engine's monotonic clock (ready at
  once if passed); buried at the end of its tube's buried FIFO (so bury order = log order,
  which is the order of the bury sequence the recorder writes); reserved comes back READY.
* FULL of a known id (a re-append of a live job) replaces its state, pri, delay and counters;
  if its tube, body, ttr or creation time differ too, the job is replaced as a whole.
* UPDATE of a known id sets pri, delay, state, ready time and the counters (reserves,
  timeouts, releases, buries, kicks) and re-queues the job: release (with or without delay),
  bury (to the end of the FIFO), kick / kick-job (ready), reserve-job out of buried or
  delayed (recorded reserved: ready here).
* UPDATE or DELETE of an unknown id is ignored; DELETE removes the job.
* ``next_id`` is the highest of every batch header's next id and every id seen + 1; the
  engine's ``next_id`` is raised to it after every batch (ids never repeat at promotion).

Counters: afterwards every engine count (ready, urgent, delayed, buried per tube and global,
body bytes, jobs per tube, the tubes) equals what a fresh engine restored by binlog replay of
the same records shows. No cmd-* counter moves. **total-jobs** (global and per tube) counts
the jobs this follower adopted (FULL records of new ids), so a promoted leader reports about
what the old leader did, as far as the retained log can tell.

The engine's journal is called as the commands call it (``Engine.adopt_job``, ``requeue``,
``discard_job``): with the local ``Binlog`` as the follower's journal its binlog is a
complete image of the applied state (a restart cache). ``journal_refusals`` counts puts or
updates the local journal refused (no disk room); the engine takes the change regardless.

A batch is decoded and validated as a whole before its first record is applied: a corrupt
batch raises ``batch.BadBatch`` and leaves the engine untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beanstalk_py.core.job import DELAYED, READY, RESERVED, Job
from beanstalk_py.replica.batch import T_DELETE, T_FULL, Record, decode

if TYPE_CHECKING:
    from beanstalk_py.core.clock import Clock
    from beanstalk_py.core.engine import Engine


class Applier:
    """Applies batches, in log order, to ``engine`` (a follower's)."""

    __slots__ = (
        "batches_applied",
        "clock",
        "engine",
        "journal_refusals",
        "next_id",
        "records_applied",
    )

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock: Clock = clock if clock is not None else engine.clock
        self.next_id = engine.next_id
        self.batches_applied = 0
        self.records_applied = 0  # every record of the applied batches (ignored ones too)
        self.journal_refusals = 0

    def apply(self, batch: bytes) -> None:
        """Apply every record of ``batch`` in order; raises ``BadBatch`` (engine untouched)
        if the batch is not valid as a whole."""
        header_next, records = decode(batch)
        clock = self.clock
        offset = clock.now() - clock.wall()  # wall -> this engine's monotonic clock
        next_id = max(self.next_id, header_next)
        engine = self.engine
        jobs = engine.jobs
        for rec in records:
            job_id = rec.job_id
            if job_id >= next_id:
                next_id = job_id + 1
            job = jobs.get(job_id)
            if rec.rtype == T_DELETE:
                if job is not None:
                    engine.discard_job(job_id)
                continue
            if rec.rtype == T_FULL:
                if job is None:
                    self._adopt(rec, offset, count=True)
                    continue
                if (
                    job.tube.name_bytes != rec.tube
                    or job.body != rec.body
                    or job.ttr != rec.ttr
                    or int(job.created * 1e9) != rec.created_ns
                ):
                    # Not a copy of the job we hold: replace it as a whole.
                    engine.discard_job(job_id)
                    self._adopt(rec, offset, count=False)
                    continue
            elif job is None:
                continue  # UPDATE of a job whose FULL record is gone (as replay)
            job.reserves = rec.reserves
            job.timeouts = rec.timeouts
            job.releases = rec.releases
            job.buries = rec.buries
            job.kicks = rec.kicks
            state = READY if rec.state == RESERVED else rec.state
            deadline = rec.deadline_ns / 1e9 + offset if state == DELAYED else 0.0
            if not engine.requeue(job, state, rec.pri, rec.delay, deadline):
                self.journal_refusals += 1
        self.records_applied += len(records)
        self.batches_applied += 1
        self.next_id = next_id
        engine.raise_next_id(next_id)

    def _adopt(self, rec: Record, offset: float, *, count: bool) -> None:
        engine = self.engine
        tube = engine.tube(rec.tube.decode("ascii"))
        job = Job(rec.job_id, tube, rec.pri, rec.delay, rec.ttr, rec.body, rec.created_ns / 1e9)
        state = READY if rec.state == RESERVED else rec.state
        job.state = state
        if state == DELAYED:
            job.deadline = rec.deadline_ns / 1e9 + offset
        job.reserves = rec.reserves
        job.timeouts = rec.timeouts
        job.releases = rec.releases
        job.buries = rec.buries
        job.kicks = rec.kicks
        if not engine.adopt_job(job, count=count):
            self.journal_refusals += 1
