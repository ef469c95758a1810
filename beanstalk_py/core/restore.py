"""Bulk restore: adopt the jobs a binlog replay (or an import) built, in one pass.

Restoring job by job through ``put`` would journal every job again and cost a heap push
each; here ready ids are appended per (tube, pri) and heapified once, delayed entries and
their timers likewise. Nothing is journaled and no counter of this run (total-jobs,
cmd-put) moves.
"""

from __future__ import annotations

import heapq
from typing import Final

from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import BURIED, DELAYED, READY, URGENT_THRESHOLD, Job
from beanstalk_py.core.timers import TIMER_DELAY
from beanstalk_py.core.tube import Tube

_heapify: Final = heapq.heapify


def restore_many(
    engine: Engine, jobs: dict[int, Job], tubes: list[Tube], buried: list[Job], next_id: int
) -> None:
    """Adopt the jobs a binlog replay built, in bulk (no journal calls, no counters of
    this run such as total-jobs).

    ``jobs`` holds every job by id with its final state: READY, BURIED, or DELAYED with
    ``deadline`` on this engine's clock (a passed one comes back ready). Each job's
    ``tube`` is one of ``tubes``; a tube whose name the engine already knows is merged
    into the engine's own, the others are adopted if they hold a job. ``buried`` lists
    the buried jobs in bury order. Ready ids are appended per (tube, pri) and heapified
    once, delayed entries and their timers likewise."""
    remap: dict[Tube, Tube] = {}
    for t in tubes:
        known = engine.tubes.get(t.name)
        if known is not None and known is not t:
            remap[t] = known
    engine.jobs.update(jobs)
    now = engine.clock.now()
    ready: dict[Tube, dict[int, list[int]]] = {}
    delayed: dict[Tube, list[tuple[float, int]]] = {}
    timers = engine.timers
    body_bytes = 0
    last_tube: Tube | None = None
    last_pri = -1
    level: list[int] = []
    for job in jobs.values():
        body_bytes += len(job.body)
        t = job.tube
        if remap and t in remap:
            t = job.tube = remap[t]
        state = job.state
        if state == DELAYED:
            deadline = job.deadline
            if deadline > now:
                entries = delayed.get(t)
                if entries is None:
                    entries = delayed[t] = []
                entries.append((deadline, job.id))
                timers.append_unordered(deadline, TIMER_DELAY, job)
                continue
            job.state = READY
        elif state != READY:
            continue  # BURIED: below, in bury order
        pri = job.pri
        if pri != last_pri or t is not last_tube:
            levels = ready.get(t)
            if levels is None:
                levels = ready[t] = {}
            found = levels.get(pri)
            if found is None:
                found = levels[pri] = []
            level = found
            last_tube = t
            last_pri = pri
        level.append(job.id)
    engine.body_bytes += body_bytes
    used: set[Tube] = set()
    for t, levels in ready.items():
        used.add(t)
        n = urgent = 0
        for pri, ids in levels.items():
            k = len(ids)
            t.add_ready_ids(pri, ids)
            n += k
            if pri < URGENT_THRESHOLD:
                urgent += k
        t.ready_ct += n
        t.urgent_ct += urgent
        t.jobs_ct += n
        engine.ready_ct += n
        engine.urgent_ct += urgent
    for t, entries in delayed.items():
        used.add(t)
        t.delayed.extend(entries)
        _heapify(t.delayed)
        t.delayed_ct += len(entries)
        t.jobs_ct += len(entries)
        engine.delayed_ct += len(entries)
    if delayed:
        timers.heapify()
    for job in buried:
        t = job.tube
        if remap and t in remap:
            t = job.tube = remap[t]
        used.add(t)
        job.state = BURIED
        t.buried[job.id] = job
        t.jobs_ct += 1
        engine.buried_ct += 1
    for t in tubes:  # adopt the new tubes that hold jobs, in the replay's order
        if t in used and t.name not in engine.tubes:
            engine.tubes[t.name] = t
            engine.tube_list.append(t)
    engine.next_id = max(engine.next_id, next_id)
    waiting = [t for t in ready if t.waiting.items]
    if waiting:
        engine.offer_waiting(waiting)
