"""``Binlog``: the engine's ``Journal`` backed by segment files (format: ``format.py``).

The journal API (``put``/``update``/``delete`` only buffer records), the shell API
(``write_pending`` once per loop iteration before replies leave, ``sync_deadline``/``fsync``
for the fsync policy, ``gc_due``), start-up (``replay`` reads the directory through
``replay.replay_segments`` and ``adopt`` takes over what it learned), ``stats()`` and
``close``. The parts live in their own modules: ``segments`` (files, space, rotation, record
buffers), ``compaction`` (removal and copy-forward, the header floor) and ``sync`` (the fsync
policy, the only state shared with a worker thread).

Space rule (``segments``): the room for a DELETE record of every live job is always kept, so
a delete never fails for lack of space. At start-up that room is reserved before anything
else: on a full disk a segment just big enough for it, and puts are refused until a full-size
segment can be created (retried every ``segments.SPARE_RETRY`` s). Only when not even that fits
is there no current segment (``_cur is None``); a delete then fails the binlog (fail-stop,
never acknowledged).

Failure rule: a failed write or fsync disables the binlog for good (the kernel may have
dropped the dirty pages), so no later reply can claim a change that is not on disk.
"""

from __future__ import annotations

import gc
import logging
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from beanstalk_py.binlog import format as fmt
from beanstalk_py.binlog.compaction import Compaction
from beanstalk_py.binlog.errors import BinlogError, BinlogLocked, BinlogWriteError
from beanstalk_py.binlog.fileops import FileOps, OsFileOps
from beanstalk_py.binlog.replay import Replayed, ReplayResult, replay_segments
from beanstalk_py.binlog.segments import (
    SEG_MASK,
    SEQ_SHIFT,
    D,
    H,
    Segment,
    live_size,
    pin,
    pin_old_copies,
    quiet,
)
from beanstalk_py.binlog.sync import SyncTracker
from beanstalk_py.core.job import BURIED
from beanstalk_py.core.journal import JournalStats

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beanstalk_py.core.clock import Clock
    from beanstalk_py.core.job import Job
    from beanstalk_py.core.tube import Tube

log = logging.getLogger("beanstalk_py.binlog")

_D: Final = D
_H: Final = H
_DEL_REST_PACK: Final = fmt.DEL_REST.pack
_CRC_PACK: Final = fmt.CRC.pack
_crc32: Final = zlib.crc32
_MAGIC: Final = fmt.FRAME_MAGIC
_FULL_BASE: Final = fmt.FULL_BASE
_UPD: Final = fmt.UPDATE_SIZE


class Binlog(Compaction):
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
        sync = SyncTracker(directory, fsync_ms, clock, files)
        super().__init__(directory, file_size, clock, files, sync)
        self._fsync_ms = fsync_ms
        self._max_job_size = max_job_size
        self._lock_fd: int | None = lock_fd
        self._bury_seq = 1
        self._replayed = False
        self._closed = False
        self._failed: BaseException | None = None
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
        if self._replayed:
            raise BinlogError("replay() called twice")
        t0 = time.perf_counter()
        # A million new Job objects would trigger many full collections (each one walking
        # every object so far) for nothing: nothing built here is cyclic garbage.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            replayed = replay_segments(
                self._files, self._dir, self._clock, dict(tubes) if tubes is not None else {}
            )
        finally:
            if gc_was_on:
                gc.enable()
        result = self.adopt(replayed)
        result.duration = self.replay_duration = time.perf_counter() - t0
        log.info(
            "binlog replay: %d jobs, next id %d, %d segments, %.3fs",
            result.count,
            result.next_id,
            len(self._segs),
            result.duration,
        )
        return result

    def adopt(self, replayed: Replayed) -> ReplayResult:
        """Take over the segments and counts a replay read, then open a new segment to write
        to (its header carries the next id and is made durable before anything is removed).
        Once, before any put; warnings about disk space are added to the result's."""
        if self._replayed:
            raise BinlogError("replay() called twice")
        self._segs = replayed.segments
        self._next_index = max(self._next_index, replayed.next_index)
        self._live_count = replayed.live_count
        self._live_bytes = replayed.live_bytes
        self._closed_used = replayed.closed_used
        self._bury_seq = replayed.bury_seq
        result = replayed.result
        self._next_id = result.next_id
        self._replayed = True
        self._start_writing(result.warnings)
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
        # segments (which may hold the only record of the highest ids) are removed. With
        # none (a first start) or under -F nothing waits for it: the -f policy syncs it, and
        # the first reply comes a few ms sooner (greenstalk's 0.1 s start-up window).
        self.write_pending()
        if self._fsync_ms is not None and len(self._segs) > 1:
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
            quiet(ops.close, seg.fd)
            quiet(ops.unlink, seg.path)
        self._spares.clear()
        for seg in list(self._segs.values()):
            if seg.fd is not None:
                if seg is self._cur and self._failed is None:
                    quiet(ops.ftruncate, seg.fd, seg.used)
                quiet(ops.close, seg.fd)
                seg.fd = None
        if self._lock_fd is not None:
            quiet(ops.close, self._lock_fd)
            self._lock_fd = None
        if err is not None:
            raise err

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
    def failed(self) -> bool:
        return self._failed is not None

    @property
    def live_bytes(self) -> int:
        return self._live_bytes

    @property
    def gc_due(self) -> bool:
        """Segments may be removable (after an fsync): call ``write_pending()`` even with
        nothing buffered."""
        return self._gc_hint

    def stats(self) -> JournalStats:
        """A snapshot of the counters ``stats`` and /metrics report."""
        failed = self._failed
        return JournalStats(
            oldest_index=self.oldest_index,
            current_index=self.current_index,
            records_written=self.records_written,
            records_migrated=self.records_migrated,
            max_size=self._file_size,
            bytes_written=self.bytes_written,
            disk_bytes=self.disk_bytes(),
            fsync_count=self._sync.fsync_count,
            replay_duration=self.replay_duration,
            space_short=self._space_short,
            last_error=str(failed) if failed is not None else "",
        )

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
            pin(full, cur)
        else:
            cur.jobs.pop(job_id, None)
        upd = meta >> 1 & SEG_MASK
        if upd and upd != full_index:
            segs[upd].jobs.pop(job_id, None)
        if meta & 1:
            pin_old_copies(segs, job_id, cur)
        job.file = 0
        job.log_meta = 0
        self._gc_hint = True

    # ------------------------------------------------------------------ shell API

    def write_pending(self) -> int:
        """Write every buffered record (one pwrite per segment touched); run compaction and
        segment removal. Returns the batch number of the last write."""
        if self._failed is not None:
            raise BinlogWriteError(f"binlog disabled after an I/O error: {self._failed}")
        if self._closed_used > 2 * self._live_bytes and self._cur is not None:
            self._compact(2 * sum(len(s.buf) for s in self._dirty) + 65536)
        sync = self._sync
        seq = sync.written_seq
        if self.pending:
            seq = self._write_buffers()
        if self._retiring:
            self._retire()
        if self._gc_hint:
            self._gc()
        if (
            self._fsync_ms is not None
            and sync.head_seq > sync.synced_seq
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
        self._sync.wait_idle()
        self.fsync()
        self._gc()

    def _write_buffers(self) -> int:
        ops = self._files
        total = 0
        headed: list[Segment] = []
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
        seq = self._sync.written(dirty, bool(headed))
        for seg in headed:
            seg.head_seq = seq
        return seq

    def sync_deadline(self) -> float | None:
        """Monotonic time by which ``fsync()`` should run, or None (nothing unsynced, or -F).

        Written data is synced at once if the previous fsync is at least MS old, else when it
        becomes MS old: at most one fsync per MS, and no write waits more than about MS."""
        # A new header's floor frees the closed segments as soon as it is durable: at most
        # one early fsync per segment, so disk use stays bounded under fast churn.
        return self._sync.deadline(self._closed_used > 2 * self._live_bytes)

    def fsync(self) -> int:
        """Make every write so far durable; returns the highest durable batch number.

        Blocking; may run in a worker thread while the loop thread keeps buffering and
        writing the next batch."""
        if self._failed is not None:
            raise BinlogWriteError(f"binlog disabled after an I/O error: {self._failed}")
        t0 = time.perf_counter()
        try:
            synced, dir_gen = self._sync.sync()
        except OSError as err:
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
        return self._sync.synced_seq

    def set_next_id(self, next_id: int) -> None:
        """Raise the next job id (an import) and make it durable in a fresh segment header."""
        if next_id > self._next_id:
            self._next_id = next_id
            if self._add_spare(self._file_size, force=True):
                self._rotate()

    def _fail(self, err: BaseException) -> None:
        if self._failed is None:
            self._failed = err
            log.error("binlog disabled: %s", err)
