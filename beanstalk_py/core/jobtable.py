"""``JobTable``: every live job by id, in pages of consecutive ids (the engine's ``jobs``).

Ids are handed out in order, so the live jobs of a server mostly sit in runs of consecutive
ids. A page holds the jobs of ``PAGE_SIZE`` consecutive ids in a list (8 bytes a job, no key
object); a dict of id -> job costs about ten times that (a boxed int key per job plus the
hash slots).

Invariants:
* Every live job is in exactly one place: the slot ``id & PAGE_MASK`` of the page
  ``id >> PAGE_BITS`` in ``pages``, or ``spill`` (a plain dict).
* A page in ``pages`` holds ``live > 0`` jobs; an emptied page is dropped at once, except
  the top page (the one puts go into), kept until a newer page is made: a queue that keeps
  emptying and refilling (one job in flight) would otherwise make and free a 1,024-slot page
  for every job.
* A page below the two newest ones (``top``) whose ``live`` falls under ``SPARSE`` moves its
  jobs to ``spill`` and is dropped, and a job put into such an old page that does not exist
  goes to ``spill``: so a few long-lived jobs among many deleted ones (old buried jobs) cost
  what a dict entry costs, never a mostly empty page each.
* Iteration (``values``, ``items``, ``keys``, ``iter``) is in id order, over a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from beanstalk_py.core.job import Job

PAGE_BITS: Final = 10
PAGE_SIZE: Final = 1 << PAGE_BITS
PAGE_MASK: Final = PAGE_SIZE - 1
SPARSE: Final = PAGE_SIZE // 8  # an old page with fewer live jobs moves them to ``spill``


class Page:
    __slots__ = ("live", "slots")

    def __init__(self) -> None:
        self.slots: list[Job | None] = [None] * PAGE_SIZE
        self.live = 0


def _job_id(job: Job) -> int:
    return job.id


class JobTable:
    """A mapping of live job id -> ``Job`` (the subset of the dict API the server uses)."""

    __slots__ = ("last", "last_no", "n", "pages", "spill", "top")

    def __init__(self) -> None:
        self.pages: dict[int, Page] = {}
        self.spill: dict[int, Job] = {}
        self.n = 0
        self.top = -1  # the highest page number a job was ever put into
        # the page found last (puts, and the reserves and deletes of a FIFO, stay on one)
        self.last_no = -1
        self.last: Page | None = None

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def _page(self, no: int) -> Page | None:
        if no == self.last_no:
            return self.last
        page = self.pages.get(no)
        if page is not None:
            self.last_no = no
            self.last = page
        return page

    def _drop(self, no: int) -> None:
        del self.pages[no]
        if self.last_no == no:
            self.last_no = -1
            self.last = None

    def get(self, job_id: int) -> Job | None:
        page = self._page(job_id >> PAGE_BITS)
        if page is not None:
            job = page.slots[job_id & PAGE_MASK]
            if job is not None:
                return job
        if self.spill:
            return self.spill.get(job_id)
        return None

    def __contains__(self, job_id: int) -> bool:
        return self.get(job_id) is not None

    def __getitem__(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def __setitem__(self, job_id: int, job: Job) -> None:
        self._put(job_id, job, False)

    def _put(self, job_id: int, job: Job, bulk: bool) -> None:
        no = job_id >> PAGE_BITS
        page = self._page(no)
        if page is None:
            if self.spill and job_id in self.spill:
                self.spill[job_id] = job
                return
            if no < self.top - 1 and not bulk:
                self.spill[job_id] = job  # an old page: see the module docstring
                self.n += 1
                return
            page = self.pages[no] = Page()
            self.last_no = no
            self.last = page
            if no > self.top:
                old = self.pages.get(self.top)
                if old is not None and old.live == 0:
                    del self.pages[self.top]  # the old top page, kept while empty, goes now
                self.top = no
        i = job_id & PAGE_MASK
        if page.slots[i] is None:
            if self.spill and job_id in self.spill:
                self.spill[job_id] = job  # a page made again (bulk) over spilled ids
                return
            page.live += 1
            self.n += 1
        page.slots[i] = job

    def pop(self, job_id: int) -> Job | None:
        """Remove and return the job ``job_id``, or None if there is none."""
        no = job_id >> PAGE_BITS
        page = self._page(no)
        if page is not None:
            i = job_id & PAGE_MASK
            job = page.slots[i]
            if job is not None:
                page.slots[i] = None
                self.n -= 1
                live = page.live - 1
                page.live = live
                if live == 0:
                    if no != self.top:
                        self._drop(no)
                elif live < SPARSE and no < self.top - 1:
                    self._spill_page(no, page)
                return job
        if self.spill:
            job = self.spill.pop(job_id, None)
            if job is not None:
                self.n -= 1
            return job
        return None

    def __delitem__(self, job_id: int) -> None:
        if self.pop(job_id) is None:
            raise KeyError(job_id)

    def _spill_page(self, no: int, page: Page) -> None:
        spill = self.spill
        base = no << PAGE_BITS
        slots = page.slots
        for i in range(PAGE_SIZE):
            job = slots[i]
            if job is not None:
                spill[base | i] = job
        self._drop(no)

    def update(self, jobs: dict[int, Job]) -> None:
        """Add every job of ``jobs`` (a binlog restore: any order, many at once)."""
        for job_id, job in jobs.items():
            self._put(job_id, job, True)
        for no in list(self.pages):
            page = self.pages[no]
            if page.live < SPARSE and no < self.top - 1:
                self._spill_page(no, page)

    def clear(self) -> None:
        self.pages = {}
        self.spill = {}
        self.n = 0
        self.top = -1
        self.last_no = -1
        self.last = None

    def values(self) -> list[Job]:
        """Every live job, in id order (a snapshot)."""
        out: list[Job] = []
        pages = self.pages
        for no in sorted(pages):
            for job in pages[no].slots:
                if job is not None:
                    out.append(job)
        if self.spill:
            out.extend(self.spill.values())
            out.sort(key=_job_id)
        return out

    def keys(self) -> list[int]:
        return [job.id for job in self.values()]

    def items(self) -> list[tuple[int, Job]]:
        return [(job.id, job) for job in self.values()]

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())
