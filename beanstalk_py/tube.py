"""Tubes: the per-tube queues and the reference's ordered-set semantics.

Invariants:
* ``ready`` maps each priority to a heap of job ids, and ``ready_pris`` is a heap of those
  priorities, so the head is the lowest (pri, id). Deletion is lazy: an id is live only while
  its job is still ready in this tube with that pri (``engine.jobs`` is the truth).
  ``ready_ct`` counts live jobs, ``ready_entries`` all ids; stale ids are purged when they
  outnumber live ones. (Small-int ids in per-priority heaps cost less memory and compare
  faster than one heap of ``pri << 64 | id`` keys.)
* ``delayed`` is a heap of ``(deadline, id)`` with the same lazy rule (live while the job is
  delayed here with that deadline).
* ``buried`` is a FIFO in bury order (kick and peek-buried take the head).
* A tube lives while ``jobs_ct + using_ct + watching_ct > 0``; ``default`` lives forever.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Generic, TypeVar

from beanstalk_py.job import DELAYED, READY, Job

T = TypeVar("T")



class SwapList(Generic[T]):
    """beanstalkd's ``ms``: an array whose removal moves the last item into the hole.

    Its iteration order is what ``list-tubes`` and ``list-tubes-watched`` print, and ``take``
    reproduces the reference's "mostly FIFO" order of serving waiting clients.
    """

    __slots__ = ("items", "last")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.last = 0

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: object) -> bool:
        return item in self.items

    def append(self, item: T) -> None:
        self.items.append(item)

    def remove_at(self, i: int) -> T:
        items = self.items
        item = items[i]
        tail = items.pop()
        if i < len(items):
            items[i] = tail
        return item

    def remove(self, item: T) -> bool:
        try:
            i = self.items.index(item)
        except ValueError:
            return False
        self.remove_at(i)
        return True

    def take(self) -> T:
        """Remove and return the next item in the reference's rotating order."""
        i = self.last % len(self.items)
        item = self.remove_at(i)
        self.last = i + 1
        return item


class Tube:
    __slots__ = (
        "buried",
        "cmd_delete",
        "cmd_pause_tube",
        "delayed",
        "delayed_ct",
        "jobs_ct",
        "name",
        "name_bytes",
        "pause",
        "pause_until",
        "ready",
        "ready_ct",
        "ready_entries",
        "ready_pris",
        "reserved_ct",
        "total_jobs",
        "urgent_ct",
        "using_ct",
        "waiting",
        "watching_ct",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.name_bytes = name.encode("ascii")
        self.ready: dict[int, list[int]] = {}
        self.ready_pris: list[int] = []
        self.ready_entries = 0
        self.ready_ct = 0
        self.urgent_ct = 0
        self.delayed: list[tuple[float, int]] = []
        self.delayed_ct = 0
        self.buried: OrderedDict[int, Job] = OrderedDict()
        self.reserved_ct = 0
        self.jobs_ct = 0  # jobs of this tube in any state
        self.total_jobs = 0
        self.cmd_delete = 0
        self.cmd_pause_tube = 0
        self.pause = 0  # seconds, as given to pause-tube; 0 when not paused
        self.pause_until = 0.0  # monotonic; 0.0 when not paused
        self.using_ct = 0
        self.watching_ct = 0
        self.waiting: SwapList[object] = SwapList()

    def __repr__(self) -> str:
        return f"<Tube {self.name!r}>"

    # --- ready queue ------------------------------------------------------------------

    def push_ready(self, job: Job, jobs: dict[int, Job]) -> None:
        if self.ready_entries > 2 * self.ready_ct + 64:
            self._purge_ready(jobs)
        pri = job.pri
        level = self.ready.get(pri)
        if level is None:
            self.ready[pri] = [job.id]
            heapq.heappush(self.ready_pris, pri)
        else:
            heapq.heappush(level, job.id)
        self.ready_entries += 1

    def _purge_ready(self, jobs: dict[int, Job]) -> None:
        levels: dict[int, list[int]] = {}
        n = 0
        for pri, ids in self.ready.items():
            live = set()
            for job_id in ids:
                job = jobs.get(job_id)
                if job is not None and job.state == READY and job.tube is self and job.pri == pri:
                    live.add(job_id)
            if live:
                level = levels[pri] = list(live)
                heapq.heapify(level)
                n += len(level)
        self.ready = levels
        self.ready_pris = list(levels)
        heapq.heapify(self.ready_pris)
        self.ready_entries = n

    def peek_ready(self, jobs: dict[int, Job]) -> Job | None:
        """The ready job with the lowest (pri, id), or None."""
        pris = self.ready_pris
        levels = self.ready
        while pris:
            pri = pris[0]
            level = levels[pri]
            while level:
                job = jobs.get(level[0])
                if job is not None and job.state == READY and job.tube is self and job.pri == pri:
                    return job
                heapq.heappop(level)
                self.ready_entries -= 1
            heapq.heappop(pris)
            del levels[pri]
        return None

    # --- delay heap ---------------------------------------------------------------------

    def push_delayed(self, job: Job, jobs: dict[int, Job]) -> None:
        delayed = self.delayed
        if len(delayed) > 2 * self.delayed_ct + 64:
            self._purge_delayed(jobs)
        heapq.heappush(delayed, (job.deadline, job.id))

    def _purge_delayed(self, jobs: dict[int, Job]) -> None:
        live = set()
        for entry in self.delayed:
            job = jobs.get(entry[1])
            if (
                job is not None
                and job.state == DELAYED
                and job.tube is self
                and job.deadline == entry[0]
            ):
                live.add(entry)
        self.delayed = list(live)
        heapq.heapify(self.delayed)

    def peek_delayed(self, jobs: dict[int, Job]) -> Job | None:
        """The delayed job with the earliest (deadline, id), or None."""
        delayed = self.delayed
        while delayed:
            deadline, job_id = delayed[0]
            job = jobs.get(job_id)
            if (
                job is not None
                and job.state == DELAYED
                and job.tube is self
                and job.deadline == deadline
            ):
                return job
            heapq.heappop(delayed)
        return None
