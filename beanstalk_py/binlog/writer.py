"""``Binlog``: the engine's ``Journal`` backed by segment files (format: ``format.py``).

Threading: everything runs on the event-loop thread except ``fsync()``, which the server may run
in a worker thread. The two share only what ``_lock`` guards: the set of segments written but
not synced, the written/synced batch numbers, directory-change generations, and the decision
to close a segment's fd (a segment being fsynced is never closed under the syncer's feet).

Bookkeeping lives on the engine's ``Job`` objects, with no per-job object of our own:
``job.file`` is the segment holding its latest FULL record (0: not journaled, or deleted) and
``job.log_meta`` packs ``bury_seq << 33 | upd << 1 | has_old``: the bury sequence while buried,
the segment holding its latest UPDATE record (0: none) and whether superseded FULL copies of it
may exist in older segments (compaction and replay set it). Each segment keeps ``jobs``, the
live jobs whose latest FULL or UPDATE record it holds (this is also how compaction finds the
``Job`` to re-encode, from its current fields), and ``old``, ids of live jobs with a superseded
FULL copy in it. A job's live bytes are derived, not stored: ``FULL_BASE + len(tube name) +
len(body)``, plus ``UPDATE_SIZE`` while it has an UPDATE record.

Space: the current segment's free tail plus the spares always hold a DELETE record for every
live job (a put or update that would eat into that room is refused), so a delete never fails
for lack of space. At start-up that room is reserved before anything else: on a full disk a
segment just big enough for it, and puts are refused until a full-size segment can be
created (retried every ``_SPARE_RETRY`` s). Only when not even that fits is there no current
segment (``_cur is None``); a delete then fails the binlog (fail-stop, never acknowledged).

A segment is removable when it holds no live job's latest record and no DELETE record in it
still has to mask an older FULL record of the same job (``pins``). Those pins are released only
once the removal of the older segment is known durable (a directory fsync), or a power loss
could bring back the older segment without the DELETE record and resurrect the job.

Pins alone free one level per directory fsync: under churn, when puts and their deletes
straddle segment boundaries, every segment pins the one before and the chain grew with the
write rate. So each header also carries a floor (``format.py``, "Floor"), filled in when the
header is written, after compaction has copied the live jobs of older segments forward: once
that header is durable, every segment below its floor goes at once, pinned or not, and the
segment holding the newest durable header stays until a newer one is durable. Compaction copies
out of the oldest segment that still holds live records (skipping dead ones that only wait),
and when more than a segment of dead data waits for a floor to become durable, the writer
fsyncs on the spot (``_sync_backlog``) rather than let the directory grow with the write rate.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from beanstalk_py.binlog import format as fmt
from beanstalk_py.binlog.errors import BinlogError, BinlogLocked, BinlogWriteError
from beanstalk_py.binlog.fileops import FileOps, OsFileOps
from beanstalk_py.core.job import BURIED, DELAYED, READY

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beanstalk_py.core.clock import Clock
    from beanstalk_py.core.job import Job
    from beanstalk_py.core.tube import Tube

log = logging.getLogger("beanstalk_py.binlog")

_D = fmt.DELETE_SIZE
_H = fmt.HEADER_SIZE
_JOB_REST_PACK = fmt.JOB_REST.pack
_DEL_REST_PACK = fmt.DEL_REST.pack
_CRC_PACK = fmt.CRC.pack
_crc32 = zlib.crc32
_MAGIC = fmt.FRAME_MAGIC
_FIXED = fmt.JOB_FIXED_SIZE
_SPARE_RETRY = 0.25  # seconds between attempts to create a segment after a failure
_FULL_BASE = fmt.FULL_BASE
_UPD = fmt.UPDATE_SIZE
SEG_MASK = 0xFFFFFFFF  # job.log_meta >> 1 & SEG_MASK: the segment of the latest UPDATE
SEQ_SHIFT = 33  # job.log_meta >> SEQ_SHIFT: the bury sequence (0 unless buried)


def live_size(job: Job) -> int:
    """Bytes of the job's live records: its FULL record, plus its UPDATE record if any."""
    size = _FULL_BASE + len(job.tube.name_bytes) + len(job.body)
    return size + _UPD if job.log_meta & 0x1FFFFFFFE else size


@dataclass
class RestoredJob:
    """A read-only view of one replayed job (``ReplayResult.jobs``; tests and tools)."""

    id: int
    tube: str
    pri: int
    delay: int
    ttr: int
    body: bytes  # with the trailing b"\r\n"
    created: float  # wall epoch seconds
    state: int  # READY, BURIED or DELAYED (a passed delay comes back READY)
    deadline_wall: float  # delayed only: wall epoch seconds when it becomes ready
    reserves: int
    timeouts: int
    releases: int
    buries: int
    kicks: int
    file: int


@dataclass
class ReplayResult:
    """What ``Binlog.replay`` read: the engine's own ``Job`` objects, ready to adopt.

    ``by_id``: every live job, with its final state (READY, BURIED or DELAYED; reserved ones
    come back READY), ``deadline`` on the clock's monotonic scale for DELAYED jobs (possibly
    passed), counters as written and ``file``/``log_meta`` set. ``tubes``: the tubes those jobs
    point at (the ones passed to ``replay`` where the names match, new ``Tube`` objects
    otherwise; some may end up without jobs). ``buried``: the buried jobs in bury order.
    ``Engine.restore_many(by_id, tubes, buried, next_id)`` takes it as is."""

    by_id: dict[int, Job]
    tubes: list[Tube]
    buried: list[Job]
    next_id: int
    warnings: list[str] = field(default_factory=list)
    duration: float = 0.0
    mono_minus_wall: float = 0.0  # clock.now() - clock.wall() when replay started
    now_wall: float = 0.0  # clock.wall() when replay ended: passed delays show as READY
    _view: list[RestoredJob] | None = None

    @property
    def count(self) -> int:
        return len(self.by_id)

    @property
    def jobs(self) -> list[RestoredJob]:
        """The jobs as ``RestoredJob`` views (built on first use; the server never asks):
        by id, then buried jobs in bury order; a passed delay shows as READY."""
        if self._view is None:
            off = self.mono_minus_wall
            buried = {j.id for j in self.buried}
            view = []
            for job in sorted(self.by_id.values(), key=lambda j: j.id):
                if job.id in buried:
                    continue
                state = job.state
                deadline_wall = job.deadline - off if state == DELAYED else 0.0
                if state == DELAYED and deadline_wall <= self.now_wall:
                    state = READY
                view.append(_view_of(job, state, deadline_wall))
            self._view = view + [_view_of(j, BURIED, 0.0) for j in self.buried]
        return self._view


def _view_of(job: Job, state: int, deadline_wall: float) -> RestoredJob:
    return RestoredJob(
        id=job.id,
        tube=job.tube.name,
        pri=job.pri,
        delay=job.delay,
        ttr=job.ttr,
        body=job.body,
        created=job.created,
        state=state,
        deadline_wall=deadline_wall,
        reserves=job.reserves,
        timeouts=job.timeouts,
        releases=job.releases,
        buries=job.buries,
        kicks=job.kicks,
        file=job.file,
    )


class _Segment:
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
        self.tomb_deps: dict[_Segment, int] = {}  # newer segment -> pins it holds because of us
        self.busy = 0  # fsyncs in progress on fd
        self.close_pending = False
        self.unlinked = False
        self.head_seq = 0  # write batch that wrote our header (0: not written yet)
        self.floor = 0  # the floor in our header

    def __repr__(self) -> str:
        return f"<Segment {self.index} used={self.used}/{self.size} jobs={len(self.jobs)}>"


class Binlog:
    """Durable journal: buffers records, the server writes them once per loop iteration."""

    def __init__(
        self,
        directory: Path,
        *,
        file_size: int,
        fsync_ms: int | None,
        clock: Clock,
        max_job_size: int,
        files: FileOps,
        lock_fd: int,
    ) -> None:
        self._dir = directory
        self._file_size = max(file_size, _H + fmt.FULL_BASE + _D)
        self._fsync_ms = fsync_ms
        self._clock = clock
        self._max_job_size = max_job_size
        self._files = files
        self._lock_fd: int | None = lock_fd

        self._segs: dict[int, _Segment] = {}  # kept segments by index, oldest first
        self._cur: _Segment | None = None
        self._spares: list[_Segment] = []
        self._spare_slots = 0
        self._spare_retry_at = float("-inf")
        self._space_short = False  # a segment creation failed; logged once until one succeeds
        self._next_index = 1
        self._dirty: list[_Segment] = []
        self._retiring: list[_Segment] = []
        self._live_count = 0
        self._live_bytes = 0
        self._closed_used = 0
        self._next_id = 1
        self._bury_seq = 1
        self._releases: list[tuple[int, _Segment, int]] = []
        self._gc_hint = False
        self._replayed = False
        self._closed = False
        self._failed: BaseException | None = None

        self._lock = threading.Lock()
        self._sync_idle = threading.Condition(self._lock)  # notified when an fsync() ends
        self._written_seq = 0
        self._synced_seq = 0
        self._unsynced: set[_Segment] = set()
        self._first_unsynced: float | None = None
        self._last_sync = float("-inf")
        self._syncing = 0
        self._dir_gen = 0
        self._dir_synced_gen = 0
        self._head_seq = 0  # the last write batch that wrote a segment header

        self.pending = False
        self.records_written = 0
        self.records_migrated = 0
        self.bytes_written = 0
        self.replay_duration = 0.0
        self.on_fsync: Callable[[float], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        file_size: int = 10 * 1024 * 1024,
        fsync_ms: int | None = 50,
        clock: Clock,
        max_job_size: int,
        files: FileOps | None = None,
    ) -> Binlog:
        """Lock ``directory`` (created if missing) for this process; raises ``BinlogLocked``."""
        ops = files if files is not None else OsFileOps()
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BinlogError(f"cannot create binlog directory {directory}: {e}") from e
        lock_path = directory / "lock"
        try:
            lock_fd = ops.lock(lock_path)
        except BlockingIOError as e:
            raise BinlogLocked(
                f"binlog directory {directory} is in use by another process "
                f"(cannot lock {lock_path}: {e.strerror})"
            ) from e
        except OSError as e:
            raise BinlogError(f"cannot open lock file {lock_path}: {e}") from e
        return cls(
            directory,
            file_size=file_size,
            fsync_ms=fsync_ms,
            clock=clock,
            max_job_size=max_job_size,
            files=ops,
            lock_fd=lock_fd,
        )

    def replay(self, tubes: Mapping[str, Tube] | None = None) -> ReplayResult:
        """Read the existing segments, then start a new one. Call once, before any put.

        Builds the engine's ``Job`` objects directly; jobs of a tube named in ``tubes`` point
        at that ``Tube`` (pass a snapshot of ``engine.tubes``), other tubes are created. Only
        reads ``tubes``, so it may run in a worker thread while the loop serves /readyz."""
        from beanstalk_py.binlog.replay import replay_into

        if self._replayed:
            raise BinlogError("replay() called twice")
        t0 = time.perf_counter()
        # A million new Job objects would trigger many full collections (each one walking
        # every object so far) for nothing: nothing built here is cyclic garbage.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            result = replay_into(self, dict(tubes) if tubes is not None else {})
        finally:
            if gc_was_on:
                gc.enable()
        self._replayed = True
        self._start_writing(result.warnings)
        result.duration = self.replay_duration = time.perf_counter() - t0
        log.info(
            "binlog replay: %d jobs, next id %d, %d segments, %.3fs",
            result.count,
            result.next_id,
            len(self._segs),
            result.duration,
        )
        return result

    def _start_writing(self, warnings: list[str]) -> None:
        """Open the segment the writer appends to; never fails for lack of disk space.

        On a full disk the room for the restored jobs' DELETE records comes first (a segment
        just big enough for them): the server then serves reserve, peek, stats and delete, and
        puts answer OUT_OF_MEMORY until a full-size segment can be created again."""
        if not self._add_spare(self._file_size, force=True):
            self._add_spare(_H + self._live_count * _D, force=True)
        if self._spares:
            self._rotate()
        while (short := self._live_count - self._spare_slots - self._cur_rem() // _D) > 0:
            if not self._add_spare(self._file_size, force=True) and not self._add_spare(
                _H + short * _D, force=True
            ):
                msg = (
                    f"no disk space to log the deletes of the {self._live_count} restored "
                    f"jobs in {self._dir}; a delete stops the server until space is freed"
                )
                warnings.append(msg)  # the caller logs the replay's warnings
                break
        if self._cur is None:
            # Nothing could be created: the existing segments may hold the only record of the
            # highest ids, so none is removed until a new header is durable (see below).
            return
        # The new segment's header carries the next job id: make it durable before older
        # segments (which may hold the only record of the highest ids) are removed.
        self.write_pending()
        self.fsync()
        self._gc_hint = True
        self.write_pending()

    def close(self) -> None:
        """Write and fsync everything, then release the directory lock."""
        if self._closed:
            return
        err: BaseException | None = None
        try:
            if self._failed is None and self._replayed:
                self.write_pending()
                self.fsync()
        except BinlogError as e:
            err = e
        self._closed = True
        ops = self._files
        for seg in self._spares:
            self._quiet(ops.close, seg.fd)
            self._quiet(ops.unlink, seg.path)
        self._spares.clear()
        for seg in list(self._segs.values()):
            if seg.fd is not None:
                if seg is self._cur and self._failed is None:
                    self._quiet(ops.ftruncate, seg.fd, seg.used)
                self._quiet(ops.close, seg.fd)
                seg.fd = None
        if self._lock_fd is not None:
            self._quiet(ops.close, self._lock_fd)
            self._lock_fd = None
        if err is not None:
            raise err

    @staticmethod
    def _quiet(fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except OSError as e:
            log.warning("binlog cleanup: %s", e)

    # ------------------------------------------------------------------ stats

    @property
    def oldest_index(self) -> int:
        for index in self._segs:
            return index
        return 0

    @property
    def current_index(self) -> int:
        return self._cur.index if self._cur is not None else 0

    @property
    def max_size(self) -> int:
        return self._file_size

    @property
    def failed(self) -> bool:
        return self._failed is not None

    @property
    def syncing(self) -> bool:
        """An ``fsync()`` is running (don't start a second one)."""
        return self._syncing > 0

    @property
    def live_bytes(self) -> int:
        return self._live_bytes

    @property
    def gc_due(self) -> bool:
        """Segments may be removable (after an fsync): call ``write_pending()`` even with
        nothing buffered."""
        return self._gc_hint

    def disk_bytes(self) -> int:
        """Bytes the segments occupy (allocated size of current and spares, used size of
        closed ones)."""
        total = sum(s.size if s is self._cur else s.used for s in self._segs.values())
        return total + sum(s.size for s in self._spares)

    # ------------------------------------------------------------------ Journal seam

    def put(self, job: Job) -> bool:
        """Buffer a FULL record for a new job; False if it cannot be made durable."""
        if self._failed is not None or not self._replayed:
            return False
        cur = self._cur  # None only if no segment could be created yet (full disk)
        tube = job.tube.name_bytes
        body = job.body
        size = _FULL_BASE + len(tube) + len(body)
        rem = cur.size - cur.used if cur is not None else 0
        live = self._live_count + 1
        if cur is None or size > rem or (rem - size) // _D + self._spare_slots < live:
            cur = self._make_room(size, live)
            if cur is None:
                return False
        seq = 0
        if job.state == BURIED:
            seq = self._bury_seq
            self._bury_seq = seq + 1
        self._append_job(cur, fmt.T_FULL, job, seq)
        job_id = job.id
        cur.jobs[job_id] = job
        self._live_count = live
        self._live_bytes += size
        if job_id >= self._next_id:
            self._next_id = job_id + 1
        job.file = cur.index
        job.log_meta = seq << SEQ_SHIFT
        return True

    def update(self, job: Job) -> bool:
        """Buffer an UPDATE record (bury, kick, release); False if there is no room."""
        if self._failed is not None or not job.file:
            return False
        cur = self._cur
        size = _UPD
        rem = cur.size - cur.used if cur is not None else 0
        if cur is None or size > rem or (rem - size) // _D + self._spare_slots < self._live_count:
            cur = self._make_room(size, self._live_count)
            if cur is None:
                return False
        seq = 0
        if job.state == BURIED:  # a bury always goes to the end of the tube's FIFO
            seq = self._bury_seq
            self._bury_seq = seq + 1
        self._append_job(cur, fmt.T_UPDATE, job, seq)
        job_id = job.id
        meta = job.log_meta
        index = cur.index
        old = meta >> 1 & SEG_MASK
        if old == 0:
            self._live_bytes += size
        elif old != index and old != job.file:
            del self._segs[old].jobs[job_id]
            self._gc_hint = True
        cur.jobs[job_id] = job
        job.log_meta = seq << SEQ_SHIFT | index << 1 | meta & 1
        return True

    def delete(self, job: Job) -> None:
        """Buffer a DELETE record; never fails for lack of space (room reserved at put)."""
        full_index = job.file
        if not full_index:
            return
        cur = self._cur
        if self._failed is None:
            if cur is None or cur.size - cur.used < _D:
                cur = self._make_room(_D, self._live_count - 1)
                if cur is None:
                    # Only reachable if not even the deletes' room could be created at start.
                    self._fail(OSError(28, "no space left to log a delete"))
        if self._failed is not None:
            # The shell's next write_pending() raises, so no reply claims the delete.
            self.pending = True
            return
        assert cur is not None
        job_id = job.id
        rest = _DEL_REST_PACK(_MAGIC, fmt.T_DELETE, 0, 8, job_id)
        buf = cur.buf
        if not buf:
            self._dirty.append(cur)
        buf += _CRC_PACK(_crc32(rest))
        buf += rest
        cur.used += _D
        self.pending = True
        self.records_written += 1
        self._live_count -= 1
        self._live_bytes -= live_size(job)
        segs = self._segs
        meta = job.log_meta
        full = segs[full_index]
        if full is not cur:
            full.jobs.pop(job_id, None)
            self._pin(full, cur)
        else:
            cur.jobs.pop(job_id, None)
        upd = meta >> 1 & SEG_MASK
        if upd and upd != full_index:
            segs[upd].jobs.pop(job_id, None)
        if meta & 1:
            self._pin_old_copies(job_id, cur)
        job.file = 0
        job.log_meta = 0
        self._gc_hint = True

    def _pin_old_copies(self, job_id: int, seg: _Segment) -> None:
        """A DELETE record in ``seg`` must outlive every superseded FULL copy of the job."""
        for s in self._segs.values():
            if s is not seg and job_id in s.old:
                s.old.discard(job_id)
                self._pin(s, seg)

    # ------------------------------------------------------------------ shell API

    def write_pending(self) -> int:
        """Write every buffered record (one pwrite per segment touched); run compaction and
        segment removal. Returns the batch number of the last write."""
        if self._failed is not None:
            raise BinlogWriteError(f"binlog disabled after an I/O error: {self._failed}")
        if self._closed_used > 2 * self._live_bytes and self._cur is not None:
            self._compact(2 * sum(len(s.buf) for s in self._dirty) + 65536)
        seq = self._written_seq
        if self.pending:
            seq = self._write_buffers()
        if self._retiring:
            self._retire()
        if self._gc_hint:
            self._gc()
        if (
            self._fsync_ms is not None
            and self._head_seq > self._synced_seq
            and self._closed_used > 2 * self._live_bytes + self._file_size
        ):
            self._sync_backlog()
        if not self._spares and self._replayed:
            self._add_spare(self._file_size)
        return seq

    def _sync_backlog(self) -> None:
        """More than a segment of dead data waits for a new header's floor to be durable:
        writes outrun the fsyncs. Sync here, on the loop thread (after the running fsync, if
        any), and remove it; at most once per segment written, so disk use stays bounded
        (back-pressure at the disk's pace) instead of growing with the write rate."""
        with self._lock:
            while self._syncing:
                self._sync_idle.wait()
        self.fsync()
        self._gc()

    def _write_buffers(self) -> int:
        ops = self._files
        total = 0
        headed: list[_Segment] = []
        floor = -1
        try:
            for seg in self._dirty:
                buf = seg.buf
                n = len(buf)
                off = seg.buf_off
                if off == 0:
                    # The header goes out now: its floor reflects this batch, compaction
                    # included (format.py, "Floor").
                    if floor < 0:
                        floor = self._floor()
                    seg.floor = min(floor, seg.index)
                    buf[:_H] = fmt.encode_header(seg.index, self._next_id, seg.floor)
                    headed.append(seg)
                assert seg.fd is not None
                done = ops.pwrite(seg.fd, buf, off)
                if done < n:
                    with memoryview(buf) as view:
                        while done < n:
                            w = ops.pwrite(seg.fd, view[done:], off + done)
                            if w <= 0:
                                raise OSError(5, "short write made no progress")
                            done += w
                seg.buf_off = off + n
                buf.clear()
                total += n
        except OSError as e:
            self._fail(e)
            raise BinlogWriteError(f"binlog write failed: {e}") from e
        dirty = self._dirty
        self._dirty = []
        self.pending = False
        self.bytes_written += total
        with self._lock:
            seq = self._written_seq = self._written_seq + 1
            for seg in headed:
                seg.head_seq = seq
            if headed:
                self._head_seq = seq
            if self._fsync_ms is not None:
                self._unsynced.update(dirty)
                if self._first_unsynced is None:
                    self._first_unsynced = self._clock.now()
        return seq

    def sync_deadline(self) -> float | None:
        """Monotonic time by which ``fsync()`` should run, or None (nothing unsynced, or -F).

        Written data is synced at once if the previous fsync is at least MS old, else when it
        becomes MS old: at most one fsync per MS, and no write waits more than about MS."""
        if self._fsync_ms is None:
            return None
        first = self._first_unsynced
        if first is None:
            return None
        if self._head_seq > self._synced_seq and self._closed_used > 2 * self._live_bytes:
            # A new header's floor frees the closed segments as soon as it is durable: at
            # most one early fsync per segment, so disk use stays bounded under fast churn.
            return first
        return max(first, self._last_sync + self._fsync_ms / 1000.0)

    def fsync(self) -> int:
        """Make every write so far durable; returns the highest durable batch number.

        Blocking; may run in a worker thread while the loop thread keeps buffering and
        writing the next batch."""
        with self._lock:
            if self._failed is not None:
                raise BinlogWriteError(f"binlog disabled after an I/O error: {self._failed}")
            segs = list(self._unsynced)
            self._unsynced.clear()
            for seg in segs:
                seg.busy += 1
            seq = self._written_seq
            dir_gen = self._dir_gen if self._dir_gen > self._dir_synced_gen else 0
            self._first_unsynced = None
            self._last_sync = self._clock.now()
            self._syncing += 1
        t0 = time.perf_counter()
        err: OSError | None = None
        try:
            for seg in segs:
                if seg.fd is not None and not seg.unlinked:
                    self._files.fsync(seg.fd)
            if dir_gen:
                self._files.fsync_dir(self._dir)
        except OSError as e:
            err = e
        finally:
            with self._lock:
                self._syncing -= 1
                self._sync_idle.notify_all()
                for seg in segs:
                    seg.busy -= 1
                    self._maybe_close_locked(seg)
                if err is None:
                    self._synced_seq = max(self._synced_seq, seq)
                    self._dir_synced_gen = max(self._dir_synced_gen, dir_gen)
                synced = self._synced_seq
        if err is not None:
            # After a failed fsync the kernel may have dropped the dirty pages: nothing
            # written since the last good fsync can be trusted, so stop for good.
            self._fail(err)
            raise BinlogWriteError(f"binlog fsync failed: {err}") from err
        if (dir_gen and self._releases) or len(self._segs) > 1:
            self._gc_hint = True  # pins released or a floor durable: segments may go
        hook = self.on_fsync
        if hook is not None:
            hook(time.perf_counter() - t0)
        return synced

    @property
    def synced_seq(self) -> int:
        return self._synced_seq

    @property
    def written_seq(self) -> int:
        return self._written_seq

    # ------------------------------------------------------------------ internals

    def _wall_ns(self, deadline: float) -> int:
        clock = self._clock
        return int((clock.wall() + (deadline - clock.now())) * 1e9)

    def _cur_rem(self) -> int:
        cur = self._cur
        return 0 if cur is None else cur.size - cur.used

    def _append_job(self, seg: _Segment, rtype: int, job: Job, seq: int) -> int:
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
            return (rem - size) // _D + self._spare_slots >= live_after
        slots = 0
        placed = False
        for sp in self._spares:
            room = sp.size - _H
            if placed:
                slots += room // _D
            elif size <= room:
                placed = True
                slots += (room - size) // _D
            # a spare too small for the record is activated empty and its room is lost
        return placed and slots >= live_after

    def _make_room(self, size: int, live_after: int) -> _Segment | None:
        """Rotate as needed so the current segment takes ``size`` bytes; None if no room."""
        for _ in range(4):
            if self._plan_fits(size, live_after):
                while self._cur_rem() < size:
                    self._rotate()
                return self._cur
            if not self._add_spare(max(self._file_size, _H + size)):
                return None
        return None

    def _add_spare(self, size: int, *, force: bool = False) -> bool:
        now = self._clock.now()
        if not force and now < self._spare_retry_at:
            return False
        index = self._next_index
        path = self._dir / f"binlog.{index}"
        ops = self._files
        try:
            fd = ops.create(path)
        except OSError as e:
            self._spare_retry_at = now + _SPARE_RETRY
            self._space_short_since(f"cannot create {path}: {e}")
            return False
        try:
            ops.preallocate(fd, size)
        except OSError as e:
            self._spare_retry_at = now + _SPARE_RETRY
            self._space_short_since(f"cannot preallocate {size} bytes for {path}: {e}")
            self._quiet(ops.close, fd)
            self._quiet(ops.unlink, path)
            return False
        if self._space_short and size >= self._file_size:
            self._space_short = False
            log.warning("binlog: disk space available again in %s; puts accepted", self._dir)
        self._next_index = index + 1
        seg = _Segment(index, path, fd, size, _H)
        seg.buf_off = 0
        self._spares.append(seg)
        self._spare_slots += (size - _H) // _D
        self._dir_changed()
        return True

    def _space_short_since(self, reason: str) -> None:
        """Log a failed segment creation once per episode (puts retry every _SPARE_RETRY)."""
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
        self._spare_slots -= (new.size - _H) // _D
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
            with self._lock:
                seg.close_pending = True
                self._maybe_close_locked(seg)
        self._retiring = [s for s in self._retiring if s.buf]

    def _maybe_close_locked(self, seg: _Segment) -> None:
        if seg.close_pending and seg.busy == 0 and seg.fd is not None:
            if seg in self._unsynced and not seg.unlinked:
                return  # the next fsync() still has to cover it
            self._unsynced.discard(seg)
            fd = seg.fd
            seg.fd = None
            try:
                self._files.close(fd)
            except OSError as e:
                log.warning("cannot close %s: %s", seg.path, e)

    def _dir_changed(self) -> None:
        with self._lock:
            self._dir_gen += 1
            if self._fsync_ms is not None and self._first_unsynced is None:
                self._first_unsynced = self._clock.now()

    def _pin(self, older: _Segment, newer: _Segment) -> None:
        older.tomb_deps[newer] = older.tomb_deps.get(newer, 0) + 1
        newer.pins += 1

    def _floor(self) -> int:
        """The oldest segment holding a live job's latest record (the current one if none)."""
        for seg in self._segs.values():
            if seg.jobs:
                return seg.index
        return self._cur.index if self._cur is not None else 0

    def _gc(self) -> None:
        self._gc_hint = False
        if self._releases:
            synced = self._dir_synced_gen if self._fsync_ms is not None else self._dir_gen
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
        synced_seq = self._synced_seq if self._fsync_ms is not None else self._written_seq
        keeper: _Segment | None = None
        for seg in reversed(self._segs.values()):
            if seg.head_seq and seg.head_seq <= synced_seq:
                keeper = seg
                break
        floor = keeper.floor if keeper is not None else 0
        cur = self._cur
        if cur is None:
            return  # no durable header with the next id yet (see _start_writing)
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

    def _unlink(self, seg: _Segment) -> None:
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
        with self._lock:
            seg.close_pending = True
            self._maybe_close_locked(seg)
        self._dir_changed()
        for newer, n in seg.tomb_deps.items():
            self._releases.append((self._dir_gen, newer, n))
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
        if size > rem or (rem - size) // _D + self._spare_slots < self._live_count:
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

    def _fail(self, err: BaseException) -> None:
        if self._failed is None:
            self._failed = err
            log.error("binlog disabled: %s", err)

    def _set_next_id(self, next_id: int) -> None:
        """Raise the next job id and make it durable in a fresh segment header."""
        if next_id > self._next_id:
            self._next_id = next_id
            if self._add_spare(self._file_size, force=True):
                self._rotate()
