"""Segment removal (garbage collection) and copy-forward compaction, with the header floor.

A segment is removable when it holds no live job's latest record and no DELETE record in it
still has to mask an older FULL record of the same job (``Segment.pins``). Those pins are
released only once the removal of the older segment is known durable (a directory fsync), or a
power loss could bring back the older segment without the DELETE record and resurrect the job.

Pins alone free one level per directory fsync: under churn, when puts and their deletes
straddle segment boundaries, every segment pins the one before and the chain grew with the
write rate. So each header also carries a floor (``format.py``, "Floor"), filled in when the
header is written, after compaction has copied the live jobs of older segments forward: once
that header is durable, every segment below its floor goes at once, pinned or not, and the
segment holding the newest durable header stays until a newer one is durable. Compaction copies
out of the oldest segment that still holds live records (skipping dead ones that only wait)
while the closed segments hold more than twice the live bytes; when more than a segment of dead
data waits for a floor to become durable, the writer fsyncs on the spot
(``Binlog.write_pending``) rather than let the directory grow with the write rate.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from beanstalk_py.binlog import format as fmt
from beanstalk_py.binlog.segments import (
    SEG_MASK,
    SEQ_SHIFT,
    D,
    Segment,
    SegmentSpace,
    live_size,
)
from beanstalk_py.core.job import BURIED

if TYPE_CHECKING:
    from pathlib import Path

    from beanstalk_py.binlog.fileops import FileOps
    from beanstalk_py.binlog.sync import SyncTracker
    from beanstalk_py.core.clock import Clock
    from beanstalk_py.core.job import Job

log = logging.getLogger("beanstalk_py.binlog")

_FULL_BASE: Final = fmt.FULL_BASE


class Compaction(SegmentSpace):
    """Segments plus what decides their removal: live counts, pins, floors, copy-forward."""

    def __init__(
        self, directory: Path, file_size: int, clock: Clock, files: FileOps, sync: SyncTracker
    ) -> None:
        super().__init__(directory, file_size, clock, files, sync)
        self._releases: list[tuple[int, Segment, int]] = []  # (dir gen, segment, pins) to drop
        self._live_count = 0
        self._live_bytes = 0
        self.records_migrated = 0

    def _floor(self) -> int:
        """The oldest segment holding a live job's latest record (the current one if none)."""
        for seg in self._segs.values():
            if seg.jobs:
                return seg.index
        return self._cur.index if self._cur is not None else 0

    def _gc(self) -> None:
        """Remove every segment that is no longer needed (see the module docstring)."""
        self._gc_hint = False
        sync = self._sync
        if self._releases:
            synced = sync.durable_dir_gen()
            keep = []
            for gen, seg, n in self._releases:
                if gen <= synced:
                    seg.pins -= n
                else:
                    keep.append((gen, seg, n))
            self._releases = keep
        # The newest durable header: its floor lets every segment below it go at once, in
        # any order (no chain of pins, one level per directory fsync); it stays itself until
        # a newer header is durable, so a crash always finds a floor at least this high.
        synced_seq = sync.durable_seq()
        keeper: Segment | None = None
        for seg in reversed(self._segs.values()):
            if seg.head_seq and seg.head_seq <= synced_seq:
                keeper = seg
                break
        floor = keeper.floor if keeper is not None else 0
        cur = self._cur
        if cur is None:
            return  # no durable header with the next id yet (Binlog.adopt)
        dead = [
            s
            for s in self._segs.values()
            if s is not cur
            and s is not keeper
            and not s.jobs
            and not s.buf
            and (s.pins == 0 or s.index < floor)
        ]
        for seg in dead:
            self._unlink(seg)

    def _unlink(self, seg: Segment) -> None:
        try:
            self._files.unlink(seg.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove %s: %s", seg.path, e)
            return
        del self._segs[seg.index]
        self._closed_used -= seg.used
        seg.unlinked = True
        if seg in self._retiring:
            self._retiring.remove(seg)
        sync = self._sync
        sync.close_when_idle(seg)
        sync.dir_changed()
        for newer, n in seg.tomb_deps.items():
            self._releases.append((sync.dir_gen, newer, n))
        seg.tomb_deps = {}
        seg.old = set()
        if self._releases:
            self._gc_hint = True

    def _compact(self, budget: int) -> None:
        """Copy live jobs out of the oldest segment so it can be removed (FIFO cleaning)."""
        while budget > 0 and self._closed_used > 2 * self._live_bytes:
            # The oldest segment holding live records; older ones without any only wait for
            # a durable floor or their pins (_gc), moving nothing out of them helps.
            head = next((s for s in self._segs.values() if s.jobs), None)
            if head is None or head is self._cur:
                return
            for job in list(head.jobs.values()):
                size = _FULL_BASE + len(job.tube.name_bytes) + len(job.body)
                if not self._migrate(job, size):
                    return
                budget -= size
                if budget <= 0:
                    return
            self._gc()

    def _migrate(self, job: Job, size: int) -> bool:
        """Write a FULL record of ``job``'s current state into the current segment."""
        cur = self._cur
        assert cur is not None
        rem = cur.size - cur.used
        if size > rem or (rem - size) // D + self._spare_slots < self._live_count:
            room = self._make_room(size, self._live_count)
            if room is None:
                return False
            cur = room
        meta = job.log_meta
        seq = meta >> SEQ_SHIFT if job.state == BURIED else 0
        self._append_job(cur, fmt.T_FULL, job, seq)
        self.records_migrated += 1
        job_id = job.id
        segs = self._segs
        old_size = live_size(job)
        has_old = meta & 1
        full = segs[job.file]
        if full is not cur:
            full.jobs.pop(job_id, None)
            full.old.add(job_id)
            has_old = 1
        upd = meta >> 1 & SEG_MASK
        if upd and upd != cur.index:
            segs[upd].jobs.pop(job_id, None)
        cur.jobs[job_id] = job
        job.file = cur.index
        job.log_meta = seq << SEQ_SHIFT | has_old
        self._live_bytes += size - old_size
        self._gc_hint = True
        return True
