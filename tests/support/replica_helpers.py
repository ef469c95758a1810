"""Helpers for the replication tests: a journal that feeds two journals, state snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from beanstalk_py.binlog import Binlog
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import DELAYED, READY, RESERVED, Job
from beanstalk_py.core.journal import Journal, JournalStats
from beanstalk_py.core.restore import restore_many


class Tee:
    """A journal that records every change in each of ``journals`` (all are always called)."""

    def __init__(self, *journals: Journal) -> None:
        self.journals = journals

    def put(self, job: Job) -> bool:
        return all([j.put(job) for j in self.journals])

    def update(self, job: Job) -> bool:
        return all([j.update(job) for j in self.journals])

    def delete(self, job: Job) -> None:
        for j in self.journals:
            j.delete(job)

    def stats(self) -> JournalStats:
        return self.journals[0].stats()


def open_binlog(directory: Path, clock: ManualClock) -> Binlog:
    bl = Binlog.open(directory, file_size=1 << 20, fsync_ms=None, clock=clock, max_job_size=70000)
    return bl


def replayed_engine(directory: Path, clock: ManualClock) -> Engine:
    """A fresh engine restored from the binlog in ``directory`` (as at a restart)."""
    bl = open_binlog(directory, clock)
    engine = Engine(clock, max_job_size=70000)
    res = bl.replay(dict(engine.tubes))
    restore_many(engine, res.by_id, res.tubes, res.buried, res.next_id)
    bl.close()
    return engine


def _ready_ids(engine: Engine, name: str) -> list[int]:
    """The ready jobs the tube's heap really holds, in reserve order."""
    t = engine.tubes[name]
    live = set()
    for pri, level in t.ready.items():
        for job_id in level.ids():
            job = engine.jobs.get(job_id)
            if job is not None and job.state == READY and job.tube is t and job.pri == pri:
                live.add(job_id)
    return sorted(live, key=lambda i: (engine.jobs[i].pri, i))


def _delayed_ids(engine: Engine, name: str) -> list[int]:
    t = engine.tubes[name]
    live = set()
    for deadline, job_id in t.delayed:
        job = engine.jobs.get(job_id)
        if job is not None and job.state == DELAYED and job.tube is t and job.deadline == deadline:
            live.add(job_id)
    return sorted(live)


def snapshot(engine: Engine, *, counters: bool = True) -> dict[str, Any]:
    """Everything a restart must reproduce, as seen from outside; reserved jobs show as ready
    and tubes without jobs (but ``default``) are left out (a restart's view). ``counters=False`` leaves out reserves and timeouts, which change
    without a record (as in beanstalkd)."""
    jobs = {}
    for j in sorted(engine.jobs.values(), key=lambda j: j.id):
        state = READY if j.state == RESERVED else j.state
        row: tuple[Any, ...] = (
            j.tube.name,
            j.pri,
            state,
            j.body,
            j.delay,
            j.ttr,
            round(j.created, 6),
            round(j.deadline, 3) if state == DELAYED else None,
            j.releases,
            j.buries,
            j.kicks,
        )
        if counters:
            row += (j.reserves, j.timeouts)
        jobs[j.id] = row
    tubes = {}
    reserved = 0
    for name, t in sorted(engine.tubes.items()):
        if not t.jobs_ct and t is not engine.default:
            continue  # kept alive by a client only: gone after a restart
        reserved += t.reserved_ct
        ready = _ready_ids(engine, name)
        # the heap holds exactly the ready jobs (reserved ones counted as ready)
        assert len(ready) == t.ready_ct, (name, ready, t.ready_ct)
        tubes[name] = {
            "current-jobs-urgent": t.urgent_ct
            + sum(
                1
                for j in engine.jobs.values()
                if j.tube is t and j.state == RESERVED and j.pri < 1024
            ),
            "current-jobs-ready": t.ready_ct + t.reserved_ct,
            "current-jobs-delayed": t.delayed_ct,
            "current-jobs-buried": len(t.buried),
            "jobs": t.jobs_ct,
            "ready-order": sorted(
                ready + [j.id for j in engine.jobs.values() if j.tube is t and j.state == RESERVED],
                key=lambda i: (engine.jobs[i].pri, i),
            ),
            "delayed": _delayed_ids(engine, name),
            "buried-order": list(t.buried),
        }
    return {
        "jobs": jobs,
        "tubes": tubes,
        "ready": engine.ready_ct + reserved,
        "delayed": engine.delayed_ct,
        "buried": engine.buried_ct,
        "body_bytes": engine.body_bytes,
        "total": len(engine.jobs),
        "urgent": sum(v["current-jobs-urgent"] for v in tubes.values()),
        "urgent_ct_global": engine.urgent_ct
        + sum(1 for j in engine.jobs.values() if j.state == RESERVED and j.pri < 1024),
    }
