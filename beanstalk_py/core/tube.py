"""Tubes: the per-tube queues and the reference's ordered-set semantics.

Invariants:
* ``ready`` maps each priority to a ``Level`` of job ids (a packed FIFO of fresh puts plus a
  heap of returning ids), and ``ready_pris`` is a heap of those priorities, so the head is
  the lowest (pri, id). Deletion is lazy: an id is live only while
  its job is still ready in this tube with that pri (``engine.jobs`` is the truth).
  ``ready_ct`` counts live jobs, ``ready_entries`` all ids; stale ids are purged when they
  outnumber live ones. (Ids packed per priority cost less memory and compare faster than
  one heap of ``pri << 64 | id`` keys.)
* ``delayed`` is a heap of ``(deadline, id)`` with the same lazy rule (live while the job is
  delayed here with that deadline).
* ``buried`` is a FIFO in bury order (kick and peek-buried take the head).
* A tube lives while ``jobs_ct + using_ct + watching_ct > 0``; ``default`` lives forever.
"""

from __future__ import annotations

import heapq
from array import array
from collections import OrderedDict
from typing import TYPE_CHECKING, Final

from beanstalk_py.core.job import DELAYED, READY, Job
from beanstalk_py.core.jobtable import JobTable
from beanstalk_py.core.swaplist import SwapList

if TYPE_CHECKING:
    from beanstalk_py.core.client import Client

# Module-level Final aliases: mypyc keeps them in C statics (no attribute lookup per call).
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop
_heapify: Final = heapq.heapify


class Level:
    """The ready job ids of one priority in a tube, lowest first.

    Fresh puts arrive with ever larger ids, so they go to the end of a packed array (8 bytes
    per job, no int object); ids that come back (release, kick, TTR timeout) go to a heap.
    The head is the smaller of the two heads. Entries are validated by the caller (lazy).
    """

    __slots__ = ("fifo", "head", "heap", "tail")

    def __init__(self) -> None:
        self.fifo = array("q")
        self.head = 0  # fifo[:head] has been consumed
        self.heap: list[int] = []
        # fifo[-1] while fifo[head:] is not empty, kept here because reading the array boxes
        self.tail = 0

    def push(self, job_id: int) -> None:
        if job_id > self.tail or len(self.fifo) == self.head:
            self.fifo.append(job_id)
            self.tail = job_id
        else:
            _heappush(self.heap, job_id)

    def extend(self, ids: list[int]) -> None:
        if len(self.fifo) == self.head and not self.heap:
            ids.sort()
            self.fifo = array("q", ids)
            self.head = 0
            if ids:
                self.tail = ids[-1]
        else:
            for job_id in ids:
                _heappush(self.heap, job_id)

    def first(self) -> int:
        """The lowest id, or -1 when empty."""
        fifo = self.fifo
        heap = self.heap
        if self.head < len(fifo):
            top = fifo[self.head]
            return heap[0] if heap and heap[0] < top else top
        return heap[0] if heap else -1

    def pop_first(self) -> None:
        fifo = self.fifo
        heap = self.heap
        head = self.head
        if head < len(fifo) and not (heap and heap[0] < fifo[head]):
            head += 1
            if head == len(fifo):
                self.fifo = array("q")
                head = 0
            elif head > 1024 and head * 2 > len(fifo):
                del fifo[:head]  # compact the consumed prefix
                head = 0
            self.head = head
        else:
            _heappop(heap)

    def ids(self) -> list[int]:
        return list(self.fifo[self.head :]) + self.heap


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
        self.ready: dict[int, Level] = {}
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
        self.waiting: SwapList[Client] = SwapList()  # clients waiting in a reserve

    def __repr__(self) -> str:
        return f"<Tube {self.name!r}>"

    # --- ready queue ------------------------------------------------------------------

    def push_ready(self, job: Job, jobs: JobTable) -> None:
        if self.ready_entries > 2 * self.ready_ct + 64:
            self._purge_ready(jobs)
        pri = job.pri
        level = self.ready.get(pri)
        if level is None:
            level = self.ready[pri] = Level()
            _heappush(self.ready_pris, pri)
        level.push(job.id)
        self.ready_entries += 1

    def add_ready_ids(self, pri: int, ids: list[int]) -> None:
        """Bulk insert (binlog replay): ``ids`` of ready jobs with priority ``pri``."""
        level = self.ready.get(pri)
        if level is None:
            level = self.ready[pri] = Level()
            _heappush(self.ready_pris, pri)
        level.extend(ids)
        self.ready_entries += len(ids)

    def _purge_ready(self, jobs: JobTable) -> None:
        levels: dict[int, Level] = {}
        n = 0
        for pri, level in self.ready.items():
            live = set()
            for job_id in level.ids():
                job = jobs.get(job_id)
                if job is not None and job.state == READY and job.tube is self and job.pri == pri:
                    live.add(job_id)
            if live:
                fresh = levels[pri] = Level()
                fresh.extend(list(live))
                n += len(live)
        self.ready = levels
        self.ready_pris = list(levels)
        _heapify(self.ready_pris)
        self.ready_entries = n

    def peek_ready(self, jobs: JobTable) -> Job | None:
        """The ready job with the lowest (pri, id), or None."""
        pris = self.ready_pris
        levels = self.ready
        while pris:
            pri = pris[0]
            level = levels[pri]
            while True:
                job_id = level.first()
                if job_id < 0:
                    break
                job = jobs.get(job_id)
                if job is not None and job.state == READY and job.tube is self and job.pri == pri:
                    return job
                level.pop_first()
                self.ready_entries -= 1
            _heappop(pris)
            del levels[pri]
        return None

    # --- delay heap ---------------------------------------------------------------------

    def push_delayed(self, job: Job, jobs: JobTable) -> None:
        delayed = self.delayed
        if len(delayed) > 2 * self.delayed_ct + 64:
            self._purge_delayed(jobs)
        _heappush(delayed, (job.deadline, job.id))

    def _purge_delayed(self, jobs: JobTable) -> None:
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
        _heapify(self.delayed)

    def peek_delayed(self, jobs: JobTable) -> Job | None:
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
            _heappop(delayed)
        return None
