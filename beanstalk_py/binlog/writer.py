"""``Binlog``: the engine's ``Journal`` backed by segment files (format: ``format.py``).

Threading: everything runs on the event-loop thread except ``fsync()``, which the server may run
in a worker thread. The two share only what ``_lock`` guards: the set of segments written but
not synced, the written/synced batch numbers, directory-change generations, and the decision
to close a segment's fd (a segment being fsynced is never closed under the syncer's feet).

Bookkeeping: every live job has a ``_Live`` entry pointing at the segment holding its latest
FULL record and, if newer, the one holding its latest UPDATE record. A segment is removable when
no live job points at it and no DELETE record in it still has to mask an older FULL record of
the same job (``pins``). Those pins are released only once the removal of the older segment is
known durable (a directory fsync), or a power loss could bring back the older segment without
the DELETE record and resurrect the job.
"""

from __future__ import annotations

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
from beanstalk_py.job import BURIED, DELAYED, READY, RESERVED

if TYPE_CHECKING:
    from beanstalk_py.clock import Clock
    from beanstalk_py.job import Job

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

Fields = tuple[int, int, int, int, int, int, int, int, int, int, int, int]
# pri, state, delay, ttr, created_ns, deadline_ns, reserves, timeouts, releases, buries, kicks,
# bury_seq: the job's last *written* state, which compaction copies forward.


@dataclass
class RestoredJob:
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
    jobs: list[RestoredJob]  # insertion order: by id, then buried jobs in their bury order
    next_id: int
    warnings: list[str] = field(default_factory=list)
    duration: float = 0.0


class _Segment:
    __slots__ = (
        "buf",
        "buf_off",
        "busy",
        "close_pending",
        "fd",
        "index",
        "jobs",
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
        self.jobs: dict[int, _Live] = {}  # live jobs whose latest FULL or UPDATE is here
        self.pins = 0  # DELETE records here that still mask FULL records in older segments
        self.tomb_deps: dict[_Segment, int] = {}  # newer segment -> pins it holds because of us
        self.busy = 0  # fsyncs in progress on fd
        self.close_pending = False
        self.unlinked = False

    def __repr__(self) -> str:
        return f"<Segment {self.index} used={self.used}/{self.size} jobs={len(self.jobs)}>"


class _Live:
    __slots__ = ("body", "fields", "full", "id", "job", "old", "size", "tube", "upd")

    def __init__(
        self,
        job_id: int,
        full: _Segment,
        size: int,
        fields: Fields,
        tube: bytes,
        body: bytes,
        job: Job | None,
    ) -> None:
        self.id = job_id
        self.full = full
        self.upd: _Segment | None = None
        self.old: list[_Segment] | None = None  # segments with superseded FULL copies
        self.size = size  # live bytes: the FULL record, plus the UPDATE record if any
        self.fields = fields
        self.tube = tube
        self.body = body
        self.job = job


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
        self._next_index = 1
        self._dirty: list[_Segment] = []
        self._retiring: list[_Segment] = []
        self._live: dict[int, _Live] = {}
        self._live_count = 0
        self._live_bytes = 0
        self._closed_used = 0
        self._next_id = 1
        self._bury_seq = 1
        self._tubes: dict[object, bytes] = {}
        self._releases: list[tuple[int, _Segment, int]] = []
        self._gc_hint = False
        self._replayed = False
        self._closed = False
        self._failed: BaseException | None = None

        self._lock = threading.Lock()
        self._written_seq = 0
        self._synced_seq = 0
        self._unsynced: set[_Segment] = set()
        self._first_unsynced: float | None = None
        self._last_sync = float("-inf")
        self._syncing = 0
        self._dir_gen = 0
        self._dir_synced_gen = 0

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
        except (BlockingIOError, PermissionError) as e:
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

    def replay(self) -> ReplayResult:
        """Read the existing segments, then start a new one. Call once, before any put."""
        from beanstalk_py.binlog.replay import replay_into

        if self._replayed:
            raise BinlogError("replay() called twice")
        t0 = time.perf_counter()
        result = replay_into(self)
        self._replayed = True
        self._start_writing(result.warnings)
        result.duration = self.replay_duration = time.perf_counter() - t0
        log.info(
            "binlog replay: %d jobs, next id %d, %d segments, %.3fs",
            len(result.jobs),
            result.next_id,
            len(self._segs),
            result.duration,
        )
        return result

    def _start_writing(self, warnings: list[str]) -> None:
        if not self._add_spare(self._file_size, force=True):
            raise BinlogWriteError(f"cannot create a binlog segment in {self._dir}")
        self._rotate()
        while self._spare_slots + (self._cur_rem() // _D) < self._live_count:
            if not self._add_spare(self._file_size, force=True):
                msg = (
                    "not enough disk space to reserve room for deleting every restored job; "
                    "puts will fail until space is freed"
                )
                log.warning(msg)
                warnings.append(msg)
                break
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

    def disk_bytes(self) -> int:
        """Bytes the segments occupy (allocated size of current and spares, used size of
        closed ones)."""
        total = sum(s.size if s is self._cur else s.used for s in self._segs.values())
        return total + sum(s.size for s in self._spares)

    # ------------------------------------------------------------------ Journal seam

    def put(self, job: Job) -> bool:
        """Buffer a FULL record for a new job; False if it cannot be made durable."""
        cur = self._cur
        if cur is None or self._failed is not None:
            return False
        name = job.tube.name
        tube = self._tubes.get(name)
        if tube is None:
            tube = self._tube_bytes(name)
        body = job.body
        size = fmt.FULL_BASE + len(tube) + len(body)
        rem = cur.size - cur.used
        live = self._live_count + 1
        if size > rem or (rem - size) // _D + self._spare_slots < live:
            cur = self._make_room(size, live)
            if cur is None:
                return False
        state = job.state
        deadline = self._wall_ns(job.deadline) if state == DELAYED else 0
        seq = 0
        if state == BURIED:
            seq = self._bury_seq
            self._bury_seq = seq + 1
        fields: Fields = (
            job.pri,
            state,
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
        )
        job_id = job.id
        rest = _JOB_REST_PACK(
            _MAGIC,
            fmt.T_FULL,
            0,
            size - fmt.FRAME_SIZE,
            job_id,
            fields[0],
            state,
            len(tube),
            fields[2],
            fields[3],
            fields[4],
            deadline,
            fields[6],
            fields[7],
            fields[8],
            fields[9],
            fields[10],
            seq,
            len(body),
        )
        buf = cur.buf
        if not buf:
            self._dirty.append(cur)
        buf += _CRC_PACK(_crc32(body, _crc32(tube, _crc32(rest))))
        buf += rest
        buf += tube
        buf += body
        cur.used += size
        self.pending = True
        self.records_written += 1
        lv = _Live(job_id, cur, size, fields, tube, body, job)
        self._live[job_id] = lv
        cur.jobs[job_id] = lv
        self._live_count = live
        self._live_bytes += size
        if job_id >= self._next_id:
            self._next_id = job_id + 1
        job.file = cur.index
        return True

    def update(self, job: Job) -> bool:
        """Buffer an UPDATE record (bury, kick, release); False if there is no room."""
        cur = self._cur
        if cur is None or self._failed is not None:
            return False
        lv = self._live.get(job.id)
        if lv is None:
            return False
        size = fmt.UPDATE_SIZE
        rem = cur.size - cur.used
        if size > rem or (rem - size) // _D + self._spare_slots < self._live_count:
            cur = self._make_room(size, self._live_count)
            if cur is None:
                return False
        state = job.state
        prev = lv.fields
        if state == BURIED:
            if prev[1] == BURIED:
                seq = prev[11]
            else:
                seq = self._bury_seq
                self._bury_seq = seq + 1
        else:
            seq = 0
        deadline = self._wall_ns(job.deadline) if state == DELAYED else 0
        fields: Fields = (
            job.pri,
            state,
            job.delay,
            prev[3],
            prev[4],
            deadline,
            job.reserves,
            job.timeouts,
            job.releases,
            job.buries,
            job.kicks,
            seq,
        )
        self._append_job(cur, fmt.T_UPDATE, lv.id, fields, b"", b"")
        old = lv.upd
        if old is None:
            lv.size += size
            self._live_bytes += size
        elif old is not cur and old is not lv.full:
            del old.jobs[lv.id]
            self._gc_hint = True
        lv.upd = cur
        cur.jobs[lv.id] = lv
        lv.fields = fields
        lv.job = job
        return True

    def delete(self, job: Job) -> None:
        """Buffer a DELETE record; never fails for lack of space (room reserved at put)."""
        lv = self._live.pop(job.id, None)
        if lv is None or self._failed is not None:
            return
        cur = self._cur
        assert cur is not None
        if cur.size - cur.used < _D:
            room = self._make_room(_D, self._live_count - 1)
            if room is None:
                # Only reachable if the reservation could not be restored after a replay.
                self._fail(OSError(28, "no space left to log a delete"))
                return
            cur = room
        rest = _DEL_REST_PACK(_MAGIC, fmt.T_DELETE, 0, 8, lv.id)
        buf = cur.buf
        if not buf:
            self._dirty.append(cur)
        buf += _CRC_PACK(_crc32(rest))
        buf += rest
        cur.used += _D
        self.pending = True
        self.records_written += 1
        self._live_count -= 1
        self._live_bytes -= lv.size
        full = lv.full
        if full is not cur:
            full.jobs.pop(lv.id, None)
            self._pin(full, cur)
        upd = lv.upd
        if upd is not None and upd is not cur:
            upd.jobs.pop(lv.id, None)
        cur.jobs.pop(lv.id, None)
        if lv.old:
            for seg in lv.old:
                if not seg.unlinked and seg is not cur:
                    self._pin(seg, cur)
        self._gc_hint = True

    def restored(self, job: Job) -> None:
        """Optional: link the engine's Job built from a ``RestoredJob``, so compaction can
        keep ``job.file`` current."""
        lv = self._live.get(job.id)
        if lv is not None:
            lv.job = job
            job.file = lv.full.index

    # ------------------------------------------------------------------ shell API

    def write_pending(self) -> int:
        """Write every buffered record (one pwrite per segment touched); run compaction and
        segment removal. Returns the batch number of the last write."""
        if self._failed is not None:
            raise BinlogWriteError(f"binlog disabled after an I/O error: {self._failed}")
        if self._closed_used > 2 * self._live_bytes and self._replayed:
            self._compact(2 * sum(len(s.buf) for s in self._dirty) + 65536)
        seq = self._written_seq
        if self.pending:
            seq = self._write_buffers()
        if self._retiring:
            self._retire()
        if self._gc_hint:
            self._gc()
        if not self._spares and self._replayed:
            self._add_spare(self._file_size)
        return seq

    def _write_buffers(self) -> int:
        ops = self._files
        total = 0
        try:
            for seg in self._dirty:
                buf = seg.buf
                n = len(buf)
                off = seg.buf_off
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
        if dir_gen and self._releases:
            self._gc_hint = True
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

    def _tube_bytes(self, name: object) -> bytes:
        raw = name.encode() if isinstance(name, str) else bytes(name)  # type: ignore[call-overload]
        if not 0 < len(raw) <= fmt.MAX_TUBE_NAME:
            raise ValueError(f"bad tube name {name!r}")
        self._tubes[name] = raw
        return raw

    def _wall_ns(self, deadline: float) -> int:
        clock = self._clock
        return int((clock.wall() + (deadline - clock.now())) * 1e9)

    def _cur_rem(self) -> int:
        cur = self._cur
        return 0 if cur is None else cur.size - cur.used

    def _append_job(
        self, seg: _Segment, rtype: int, job_id: int, fields: Fields, tube: bytes, body: bytes
    ) -> None:
        pri, state, delay, ttr, created, deadline, r, t, rl, b, k, seq = fields
        rest = _JOB_REST_PACK(
            _MAGIC,
            rtype,
            0,
            _FIXED + len(tube) + len(body),
            job_id,
            pri,
            state,
            len(tube),
            delay,
            ttr,
            created,
            deadline,
            r,
            t,
            rl,
            b,
            k,
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
        seg.used += fmt.FULL_BASE + len(tube) + len(body)
        self.pending = True
        self.records_written += 1

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
            log.warning("cannot create %s: %s", path, e)
            return False
        try:
            ops.preallocate(fd, size)
        except OSError as e:
            self._spare_retry_at = now + _SPARE_RETRY
            log.warning("cannot preallocate %d bytes for %s: %s", size, path, e)
            self._quiet(ops.close, fd)
            self._quiet(ops.unlink, path)
            return False
        self._next_index = index + 1
        seg = _Segment(index, path, fd, size, _H)
        seg.buf_off = 0
        self._spares.append(seg)
        self._spare_slots += (size - _H) // _D
        self._dir_changed()
        return True

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
        cur = self._cur
        dead = [
            s
            for s in self._segs.values()
            if s is not cur and not s.jobs and s.pins == 0 and not s.buf
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
        if self._releases:
            self._gc_hint = True

    def _compact(self, budget: int) -> None:
        """Copy live jobs out of the oldest segment so it can be removed (FIFO cleaning)."""
        while budget > 0 and self._closed_used > 2 * self._live_bytes:
            head = next(iter(self._segs.values()))
            if head is self._cur or not head.jobs:
                return
            for lv in list(head.jobs.values()):
                size = fmt.FULL_BASE + len(lv.tube) + len(lv.body)
                if not self._migrate(lv, size):
                    return
                budget -= size
                if budget <= 0:
                    return
            self._gc()

    def _migrate(self, lv: _Live, size: int) -> bool:
        cur = self._cur
        assert cur is not None
        rem = cur.size - cur.used
        if size > rem or (rem - size) // _D + self._spare_slots < self._live_count:
            room = self._make_room(size, self._live_count)
            if room is None:
                return False
            cur = room
        self._append_job(cur, fmt.T_FULL, lv.id, lv.fields, lv.tube, lv.body)
        self.records_migrated += 1
        old_full, old_upd = lv.full, lv.upd
        old = [s for s in lv.old if not s.unlinked] if lv.old else []
        if old_full is not cur:
            old.append(old_full)
            old_full.jobs.pop(lv.id, None)
        if old_upd is not None and old_upd is not cur:
            old_upd.jobs.pop(lv.id, None)
        lv.old = old or None
        lv.full = cur
        lv.upd = None
        cur.jobs[lv.id] = lv
        self._live_bytes += size - lv.size
        lv.size = size
        if lv.job is not None:
            lv.job.file = cur.index
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

    def _import_job(self, job_id: int, fields: Fields, tube: bytes, body: bytes) -> bool:
        """Write a FULL record from raw fields (the beanstalkd importer)."""
        cur = self._cur
        assert cur is not None and job_id not in self._live
        size = fmt.FULL_BASE + len(tube) + len(body)
        room = self._make_room(size, self._live_count + 1)
        if room is None:
            return False
        cur = room
        if fields[1] == BURIED:
            fields = (*fields[:11], self._bury_seq)
            self._bury_seq += 1
        self._append_job(cur, fmt.T_FULL, job_id, fields, tube, body)
        lv = _Live(job_id, cur, size, fields, tube, body, None)
        self._live[job_id] = lv
        cur.jobs[job_id] = lv
        self._live_count += 1
        self._live_bytes += size
        self._next_id = max(self._next_id, job_id + 1)
        return True


def restored_state(state: int) -> int:
    """Jobs reserved when the log was written come back ready."""
    return READY if state == RESERVED else state
