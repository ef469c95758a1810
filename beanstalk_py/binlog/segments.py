"""Segment files: creation with preallocation, space accounting, rotation, record buffers.

Bookkeeping lives on the engine's ``Job`` objects, with no per-job object of our own:
``job.file`` is the segment holding its latest FULL record (0: not journaled, or deleted) and
``job.log_meta`` packs ``bury_seq << SEQ_SHIFT | upd << 1 | has_old``: the bury sequence while
buried, the segment holding its latest UPDATE record (0: none) and whether superseded FULL
copies of it may exist in older segments (compaction and replay set it). Each ``Segment``
keeps ``jobs``, the live jobs whose latest FULL or UPDATE record it holds (this is also how
compaction finds the ``Job`` to re-encode, from its current fields), and ``old``, ids of live
jobs with a superseded FULL copy in it. A job's live bytes are derived, not stored (``live_size``).

Space: the current segment's free tail plus the spares (preallocated segments not yet written)
always hold a DELETE record for every live job; ``plan_fits`` refuses a put or update that
would eat into that room, so a delete never fails for lack of space. A failed segment creation
is retried at most every ``SPARE_RETRY`` seconds and logged once per episode.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from beanstalk_py.binlog import format as fmt
from beanstalk_py.core.job import DELAYED

if TYPE_CHECKING:
    from pathlib import Path

    from beanstalk_py.binlog.fileops import FileOps
    from beanstalk_py.binlog.sync import SyncTracker
    from beanstalk_py.core.clock import Clock
    from beanstalk_py.core.job import Job

log = logging.getLogger("beanstalk_py.binlog")

# Final: compiled, each is a C constant or static instead of a lookup in the module's globals
D: Final = fmt.DELETE_SIZE
H: Final = fmt.HEADER_SIZE
_JOB_REST_PACK: Final = fmt.JOB_REST.pack
_CRC_PACK: Final = fmt.CRC.pack
_crc32: Final = zlib.crc32
_MAGIC: Final = fmt.FRAME_MAGIC
_FULL_BASE: Final = fmt.FULL_BASE
_UPD: Final = fmt.UPDATE_SIZE
SPARE_RETRY: Final = 0.25  # seconds between attempts to create a segment after a failure
SEG_MASK: Final = 0xFFFFFFFF  # job.log_meta >> 1 & SEG_MASK: the segment of the latest UPDATE
SEQ_SHIFT: Final = 33  # job.log_meta >> SEQ_SHIFT: the bury sequence (0 unless buried)


def live_size(job: Job) -> int:
    """Bytes of the job's live records: its FULL record, plus its UPDATE record if any."""
    size = _FULL_BASE + len(job.tube.name_bytes) + len(job.body)
    return size + _UPD if job.log_meta & 0x1FFFFFFFE else size


class Segment:
    """One ``binlog.N`` file: its space, its unwritten records and the jobs that keep it."""

    __slots__ = (
        "buf",
        "buf_off",
        "busy",
        "close_pending",
        "fd",
        "floor",
        "head_seq",
        "index",
        "jobs",
        "old",
        "path",
        "pins",
        "size",
        "tomb_deps",
        "unlinked",
        "used",
    )

    def __init__(self, index: int, path: Path, fd: int | None, size: int, used: int) -> None:
        self.index = index
        self.path = path
        self.fd = fd
        self.size = size  # bytes allocated on disk
        self.used = used  # bytes assigned to header and records, buffered ones included
        self.buf = bytearray()  # records not yet written; they start at file offset buf_off
        self.buf_off = used
        self.jobs: dict[int, Job] = {}  # live jobs whose latest FULL or UPDATE record is here
        self.old: set[int] = set()  # live jobs with a superseded FULL copy here
        self.pins = 0  # DELETE records here that still mask FULL records in older segments
        self.tomb_deps: dict[Segment, int] = {}  # newer segment -> pins it holds because of us
        self.busy = 0  # fsyncs in progress on fd
        self.close_pending = False
        self.unlinked = False
        self.head_seq = 0  # write batch that wrote our header (0: not written yet)
        self.floor = 0  # the floor in our header

    def __repr__(self) -> str:
        return f"<Segment {self.index} used={self.used}/{self.size} jobs={len(self.jobs)}>"


def pin(older: Segment, newer: Segment) -> None:
    """A DELETE record in ``newer`` masks a FULL record in ``older``: keep ``newer`` while
    ``older`` exists."""
    older.tomb_deps[newer] = older.tomb_deps.get(newer, 0) + 1
    newer.pins += 1


def pin_old_copies(segs: dict[int, Segment], job_id: int, seg: Segment) -> None:
    """A DELETE record in ``seg`` must outlive every superseded FULL copy of the job."""
    for s in segs.values():
        if s is not seg and job_id in s.old:
            s.old.discard(job_id)
            pin(s, seg)


class SegmentSpace:
    """The segments of one directory: the current one, the spares, the closed ones."""

    def __init__(
        self, directory: Path, file_size: int, clock: Clock, files: FileOps, sync: SyncTracker
    ) -> None:
        self._dir = directory
        self._file_size = max(file_size, H + _FULL_BASE + D)
        self._clock = clock
        self._files = files
        self._sync = sync
        self._segs: dict[int, Segment] = {}  # kept segments by index, oldest first
        self._cur: Segment | None = None
        self._spares: list[Segment] = []
        self._spare_slots = 0
        self._spare_retry_at = float("-inf")
        self._space_short = False  # a segment creation failed; logged once until one succeeds
        self._next_index = 1
        self._dirty: list[Segment] = []
        self._retiring: list[Segment] = []
        self._closed_used = 0
        self._next_id = 1  # the next job id, written into every new header
        self._gc_hint = False  # segments may be removable
        self.pending = False  # records are buffered: the shell should call write_pending()
        self.records_written = 0

    def disk_bytes(self) -> int:
        """Bytes the segments occupy (allocated size of current and spares, used size of
        closed ones)."""
        total = sum(s.size if s is self._cur else s.used for s in self._segs.values())
        return total + sum(s.size for s in self._spares)

    def _wall_ns(self, deadline: float) -> int:
        clock = self._clock
        return int((clock.wall() + (deadline - clock.now())) * 1e9)

    def _cur_rem(self) -> int:
        cur = self._cur
        return 0 if cur is None else cur.size - cur.used

    def _append_job(self, seg: Segment, rtype: int, job: Job, seq: int) -> int:
        """Buffer a FULL or UPDATE record of ``job``'s current fields; returns its size."""
        state = job.state
        deadline = self._wall_ns(job.deadline) if state == DELAYED else 0
        if rtype == fmt.T_FULL:
            tube = job.tube.name_bytes
            body = job.body
        else:
            tube = body = b""
        size = _FULL_BASE + len(tube) + len(body)
        rest = _JOB_REST_PACK(
            _MAGIC,
            rtype,
            0,
            size - fmt.FRAME_SIZE,
            job.id,
            job.pri,
            state,
            len(tube),
            job.delay,
            job.ttr,
            int(job.created * 1e9),
            deadline,
            job.reserves,
            job.timeouts,
            job.releases,
            job.buries,
            job.kicks,
            seq,
            len(body),
        )
        buf = seg.buf
        if not buf:
            self._dirty.append(seg)
        buf += _CRC_PACK(_crc32(body, _crc32(tube, _crc32(rest))))
        buf += rest
        if tube:
            buf += tube
            buf += body
        seg.used += size
        self.pending = True
        self.records_written += 1
        return size

    def _plan_fits(self, size: int, live_after: int) -> bool:
        """Would a record of ``size`` fit, leaving a DELETE slot for ``live_after`` jobs?"""
        rem = self._cur_rem()
        if size <= rem:
            return (rem - size) // D + self._spare_slots >= live_after
        slots = 0
        placed = False
        for sp in self._spares:
            room = sp.size - H
            if placed:
                slots += room // D
            elif size <= room:
                placed = True
                slots += (room - size) // D
            # a spare too small for the record is activated empty and its room is lost
        return placed and slots >= live_after

    def _make_room(self, size: int, live_after: int) -> Segment | None:
        """Rotate as needed so the current segment takes ``size`` bytes; None if no room."""
        for _ in range(4):
            if self._plan_fits(size, live_after):
                while self._cur_rem() < size:
                    self._rotate()
                return self._cur
            if not self._add_spare(max(self._file_size, H + size)):
                return None
        return None

    def _add_spare(self, size: int, *, force: bool = False) -> bool:
        """Create and preallocate the next ``binlog.N``; False (logged) if the disk refuses."""
        now = self._clock.now()
        if not force and now < self._spare_retry_at:
            return False
        index = self._next_index
        path = self._dir / f"binlog.{index}"
        ops = self._files
        try:
            fd = ops.create(path)
        except OSError as e:
            self._spare_retry_at = now + SPARE_RETRY
            self._space_short_since(f"cannot create {path}: {e}")
            return False
        try:
            ops.preallocate(fd, size)
        except OSError as e:
            self._spare_retry_at = now + SPARE_RETRY
            self._space_short_since(f"cannot preallocate {size} bytes for {path}: {e}")
            quiet(ops.close, fd)
            quiet(ops.unlink, path)
            return False
        if self._space_short and size >= self._file_size:
            self._space_short = False
            log.warning("binlog: disk space available again in %s; puts accepted", self._dir)
        self._next_index = index + 1
        seg = Segment(index, path, fd, size, H)
        seg.buf_off = 0
        self._spares.append(seg)
        self._spare_slots += (size - H) // D
        self._sync.dir_changed()
        return True

    def _space_short_since(self, reason: str) -> None:
        """Log a failed segment creation once per episode (puts retry every SPARE_RETRY)."""
        if self._space_short:
            log.debug("binlog: %s", reason)
            return
        self._space_short = True
        log.warning(
            "binlog: %s; puts answer OUT_OF_MEMORY until disk space is freed "
            "(reserve, peek, stats and delete keep working)",
            reason,
        )

    def _rotate(self) -> None:
        """Move the writer to the first spare segment (which must exist)."""
        old = self._cur
        new = self._spares.pop(0)
        self._spare_slots -= (new.size - H) // D
        if old is not None:
            self._closed_used += old.used
            self._retiring.append(old)
        new.buf += fmt.encode_header(new.index, self._next_id)
        self._dirty.append(new)
        self.pending = True
        self._segs[new.index] = new
        self._cur = new
        self._gc_hint = True

    def _retire(self) -> None:
        """Give back the unused preallocated tail of segments the writer left."""
        for seg in self._retiring:
            if seg.buf or seg.fd is None:
                continue
            if not seg.unlinked:
                try:
                    self._files.ftruncate(seg.fd, seg.used)
                except OSError as e:
                    log.warning("cannot truncate %s: %s", seg.path, e)
            seg.size = seg.used
            self._sync.close_when_idle(seg)
        self._retiring = [s for s in self._retiring if s.buf]


def quiet(fn: Callable[..., object], *args: object) -> None:
    """Run a cleanup call; an ``OSError`` is only logged."""
    try:
        fn(*args)
    except OSError as e:
        log.warning("binlog cleanup: %s", e)
