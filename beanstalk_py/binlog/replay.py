"""Reading segments back at start-up: last writer wins, damage is cut off or skipped.

Rules (see ``format.py`` for the byte layout):

* Segments are read in increasing number; inside one, in file order.
* A file that is empty or all zeros (a preallocated segment never activated, or one whose
  creation was interrupted) is removed. A file too short for a header, or whose header is
  not ours or of another version, is renamed ``.broken`` (short) or skipped (foreign).
* Damage with no valid record after it (a torn tail) is copied to ``binlog.N.broken`` and
  the file is truncated there; damage followed by valid records is skipped and logged with
  file and offset. A zero tail (unused preallocated space) is truncated away.
* FULL creates or replaces a job; UPDATE replaces its state if the job is known; DELETE
  drops it. Every id seen, and every header's next id, raises the next id.

Records are read straight into the engine's ``Job`` objects (no intermediate per-job object):
a FULL record of a new id, by far the most common one, is checked and decoded inline with one
``struct`` call; everything else (UPDATE, DELETE, a second FULL of an id, damage) takes the
general path through ``format.frame_at``, which accepts exactly the same frames.
"""

from __future__ import annotations

import logging
import re
import zlib
from typing import TYPE_CHECKING, NamedTuple

from beanstalk_py.binlog import format as fmt
from beanstalk_py.binlog.segments import (
    SEG_MASK,
    SEQ_SHIFT,
    Segment,
    live_size,
    pin,
    pin_old_copies,
)
from beanstalk_py.core.job import BURIED, DELAYED, READY, RESERVED, Job
from beanstalk_py.core.tube import Tube

if TYPE_CHECKING:
    from pathlib import Path

    from beanstalk_py.binlog.fileops import FileOps
    from beanstalk_py.core.clock import Clock

log = logging.getLogger("beanstalk_py.binlog")

SEGMENT_NAME = re.compile(r"binlog\.([0-9]+)\Z")
_FIXED_UNPACK = fmt.JOB_FIXED.unpack_from
_FRAME_JOB_UNPACK = fmt.FRAME_JOB.unpack_from
_DEL_UNPACK = fmt.DEL_ID.unpack_from
_FS = fmt.FRAME_SIZE
_JF = fmt.JOB_FIXED_SIZE
_FB = fmt.FULL_BASE


class RestoredJob(NamedTuple):
    """A read-only view of one replayed job (``ReplayResult.jobs``; tests and tools).

    NamedTuples and a plain class here, not dataclasses: with ``-b`` this module is on the way
    to the first reply, and importing dataclasses (with inspect) costs start-up time."""

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


class ReplayResult:
    """What ``Binlog.replay`` read: the engine's own ``Job`` objects, ready to adopt.

    ``by_id``: every live job, with its final state (READY, BURIED or DELAYED; reserved ones
    come back READY), ``deadline`` on the clock's monotonic scale for DELAYED jobs (possibly
    passed), counters as written and ``file``/``log_meta`` set. ``tubes``: the tubes those jobs
    point at (the ones passed to ``replay`` where the names match, new ``Tube`` objects
    otherwise; some may end up without jobs). ``buried``: the buried jobs in bury order.
    ``Engine.restore_many(by_id, tubes, buried, next_id)`` takes it as is."""

    def __init__(
        self,
        by_id: dict[int, Job],
        tubes: list[Tube],
        buried: list[Job],
        next_id: int,
        warnings: list[str] | None = None,
        duration: float = 0.0,
        mono_minus_wall: float = 0.0,  # clock.now() - clock.wall() when replay started
        now_wall: float = 0.0,  # clock.wall() when replay ended: passed delays show as READY
    ) -> None:
        self.by_id = by_id
        self.tubes = tubes
        self.buried = buried
        self.next_id = next_id
        self.warnings: list[str] = [] if warnings is None else warnings
        self.duration = duration
        self.mono_minus_wall = mono_minus_wall
        self.now_wall = now_wall
        self._view: list[RestoredJob] | None = None

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


class Replayed(NamedTuple):
    """Everything a replay learned, for ``Binlog.adopt``: the engine's jobs (``result``) and
    the writer's bookkeeping of the segments read (closed; their fds are not open)."""

    result: ReplayResult
    segments: dict[int, Segment]  # by index, oldest first
    next_index: int  # the first unused segment number
    live_count: int
    live_bytes: int  # bytes of the live jobs' latest records
    closed_used: int  # bytes of the segments read
    bury_seq: int  # the next bury sequence number


def segment_indices(names: list[str]) -> list[int]:
    out = []
    for name in names:
        m = SEGMENT_NAME.match(name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def restored_state(state: int) -> int:
    """Jobs reserved when the log was written come back ready."""
    return READY if state == RESERVED else state


class _Replay:
    """The state of one replay: jobs by id, tubes by name, buried ids, byte accounting."""

    def __init__(self, clock: Clock, tubes: dict[str, Tube]) -> None:
        self.segs: dict[int, Segment] = {}
        self.jobs: dict[int, Job] = {}
        self.known = tubes  # the engine's tubes by name (only read)
        self.tubes: dict[bytes, Tube] = {}
        self.buried: set[int] = set()
        self.warnings: list[str] = []
        self.live_bytes = 0
        self.max_id = 0
        self.offset = clock.now() - clock.wall()  # wall -> monotonic

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)  # logged once, by whoever started the replay

    def tube(self, raw: bytes) -> Tube:
        t = self.tubes.get(raw)
        if t is None:
            name = raw.decode("ascii", "backslashreplace")
            t = self.known.get(name)
            if t is None:
                t = Tube(name)
            self.tubes[raw] = t
        return t

    def read(self, data: bytes, seg: Segment) -> tuple[int, list[tuple[int, int]]]:
        """Apply every valid record of a segment; returns ``(end, damage)`` as
        ``format.scan`` does."""
        jobs = self.jobs
        seg_jobs = seg.jobs
        index = seg.index
        buried = self.buried
        offset = self.offset
        crc32 = zlib.crc32
        unpack = _FRAME_JOB_UNPACK
        frame_at = fmt.frame_at
        mv = memoryview(data)
        n = len(data)
        pos = fmt.HEADER_SIZE
        damage: list[tuple[int, int]] = []
        live_bytes = 0
        max_id = self.max_id
        last_raw = b""
        last_tlen = -1
        last_tube: Tube | None = None
        try:
            while pos < n:
                if n - pos >= _FB and data[pos + 6] == fmt.T_FULL:
                    (
                        crc,
                        magic,
                        _rtype,
                        _flags,
                        length,
                        job_id,
                        pri,
                        state,
                        tlen,
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
                        blen,
                    ) = unpack(data, pos)
                    end = pos + _FS + length
                    if (
                        magic == fmt.FRAME_MAGIC
                        and tlen
                        and length == _JF + tlen + blen
                        and end <= n
                        and job_id not in jobs
                        and READY <= state <= DELAYED
                        and crc32(mv[pos + 4 : end]) == crc
                    ):
                        # the common case: the first FULL record of a job
                        if job_id > max_id:
                            max_id = job_id
                        q = pos + _FB
                        if tlen == last_tlen and data.startswith(last_raw, q):
                            tube = last_tube
                        else:
                            last_raw = data[q : q + tlen]
                            last_tlen = tlen
                            tube = last_tube = self.tube(last_raw)
                        assert tube is not None
                        body = data[q + tlen : end]
                        job = Job(job_id, tube, pri, delay, ttr, body, created / 1e9)
                        if state != READY:
                            if state == DELAYED:
                                job.state = DELAYED
                                job.deadline = deadline / 1e9 + offset
                            elif state == BURIED:
                                job.state = BURIED
                                job.log_meta = seq << SEQ_SHIFT
                                buried.add(job_id)
                            # RESERVED comes back READY
                        if r or t or rl or b or k:
                            job.reserves = r
                            job.timeouts = t
                            job.releases = rl
                            job.buries = b
                            job.kicks = k
                        job.file = index
                        jobs[job_id] = job
                        seg_jobs[job_id] = job
                        live_bytes += end - pos
                        pos = end
                        continue
                end = frame_at(data, pos)
                if end > 0:
                    self.live_bytes += live_bytes
                    live_bytes = 0
                    self.max_id = max_id
                    self.apply(data, pos, end, seg)
                    max_id = self.max_id
                    pos = end
                    continue
                if data.count(0, pos) == n - pos:
                    break  # preallocated zero tail: the normal end of a segment
                resume = fmt.resync(data, pos + 1)
                damage.append((pos, resume))
                if resume < 0:
                    break
                pos = resume
        finally:
            mv.release()
        self.live_bytes += live_bytes
        self.max_id = max_id
        return pos, damage

    def apply(self, data: bytes, pos: int, end: int, seg: Segment) -> None:
        """One valid record, the general way."""
        rtype = data[pos + 6]
        if rtype == fmt.T_DELETE:
            (job_id,) = _DEL_UNPACK(data, pos + _FS)
            self.max_id = max(self.max_id, job_id)
            job = self.jobs.pop(job_id, None)
            if job is not None:
                self.drop(job, seg)
            return
        p = pos + _FS
        (
            job_id,
            pri,
            state,
            tlen,
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
            _blen,
        ) = _FIXED_UNPACK(data, p)
        self.max_id = max(self.max_id, job_id)
        state = restored_state(state)
        if state not in (READY, BURIED, DELAYED):
            self.warn(
                f"{seg.path.name}: offset {pos}: job {job_id} has unknown state {state}; ignored"
            )
            return
        job = self.jobs.get(job_id)
        index = seg.index
        segs = self.segs
        if rtype == fmt.T_FULL:
            q = p + _JF
            tube = self.tube(data[q : q + tlen])
            body = data[q + tlen : end]
            has_old = 0
            if job is None:
                job = Job(job_id, tube, pri, delay, ttr, body, created / 1e9)
                self.jobs[job_id] = job
            else:  # a newer copy (compaction): the older ones must stay masked by deletes
                self.live_bytes -= live_size(job)
                meta = job.log_meta
                has_old = meta & 1
                if job.file != index:
                    old = segs[job.file]
                    old.jobs.pop(job_id, None)
                    old.old.add(job_id)
                    has_old = 1
                upd = meta >> 1 & SEG_MASK
                if upd and upd != index:
                    segs[upd].jobs.pop(job_id, None)
                job.tube, job.body, job.ttr, job.created = tube, body, ttr, created / 1e9
                job.pri, job.delay = pri, delay
            job.file = index
            job.log_meta = has_old
            self.live_bytes += end - pos
        elif job is not None:  # UPDATE for a job we know; otherwise its FULL is gone
            meta = job.log_meta
            upd = meta >> 1 & SEG_MASK
            if upd == 0:
                self.live_bytes += fmt.UPDATE_SIZE
            elif upd != index and upd != job.file:
                segs[upd].jobs.pop(job_id, None)
            job.pri, job.delay = pri, delay
            job.log_meta = index << 1 | meta & 1
        else:
            return
        job.state = state
        job.deadline = deadline / 1e9 + self.offset if state == DELAYED else 0.0
        if state == BURIED:
            job.log_meta |= seq << SEQ_SHIFT
            self.buried.add(job_id)
        else:
            self.buried.discard(job_id)
        job.reserves, job.timeouts, job.releases, job.buries, job.kicks = r, t, rl, b, k
        seg.jobs[job_id] = job

    def drop(self, job: Job, seg: Segment) -> None:
        """A DELETE record in ``seg``: forget the job, pin ``seg`` while older copies exist."""
        segs = self.segs
        job_id = job.id
        self.live_bytes -= live_size(job)
        self.buried.discard(job_id)
        full = segs[job.file]
        full.jobs.pop(job_id, None)
        if full is not seg:
            pin(full, seg)
        meta = job.log_meta
        upd = meta >> 1 & SEG_MASK
        if upd:
            segs[upd].jobs.pop(job_id, None)
        if meta & 1:
            pin_old_copies(segs, job_id, seg)


def replay_segments(
    ops: FileOps, directory: Path, clock: Clock, tubes: dict[str, Tube]
) -> Replayed:
    """Read every segment of ``directory`` (repairing as the module docstring says); jobs of
    a tube named in ``tubes`` point at that ``Tube``, other tubes are created."""
    rp = _Replay(clock, tubes)
    next_index = 1
    closed_used = 0
    warn = rp.warn

    indices = segment_indices(ops.listdir(directory))
    header_next = 1
    # The highest floor of any header (format.py, "Floor"): everything below it is dead.
    heads: dict[int, bytes] = {}
    floor = 0
    for index in indices:
        try:
            head_bytes = ops.read_head(directory / f"binlog.{index}", fmt.HEADER_SIZE)
        except OSError:
            continue
        heads[index] = head_bytes
        floor = max(floor, fmt.header_floor(head_bytes))
    for index in indices:
        next_index = max(next_index, index + 1)
        path = directory / f"binlog.{index}"
        name = path.name
        if index < floor:
            below = fmt.decode_header(heads.get(index, b""))
            if below is not None and below[0] == fmt.VERSION:
                # Dead as a whole: its removal was interrupted by a crash.
                if below[2]:
                    header_next = max(header_next, below[1])
                log.info("%s: below the floor %d, removed", name, floor)
                try:
                    ops.unlink(path)
                except OSError as e:
                    warn(f"{name}: below the floor {floor} but cannot remove it: {e}; skipped")
                continue
        try:
            data = ops.read_file(path)
        except OSError as e:
            warn(f"{name}: cannot read: {e}; skipped")
            continue
        if data.count(0) == len(data):
            # Never activated (a spare) or interrupted while being created: nothing in it.
            if data:
                log.info("%s: unused preallocated segment, removed", name)
            else:
                warn(f"{name}: empty file, removed")
            ops.unlink(path)
            continue
        head = fmt.decode_header(data)
        if head is None:
            if len(data) < fmt.HEADER_SIZE:
                warn(f"{name}: truncated header ({len(data)} bytes), moved to {name}.broken")
                ops.rename(path, path.with_name(name + ".broken"))
            else:
                warn(f"{name}: not a beanstalk-py binlog segment (bad magic); left alone")
            continue
        version, next_id, header_ok = head
        if version != fmt.VERSION:
            warn(f"{name}: unknown format version {version}; left alone")
            continue
        if header_ok:
            header_next = max(header_next, next_id)
        else:
            warn(f"{name}: header checksum mismatch; reading its records anyway")

        seg = Segment(index, path, None, 0, 0)
        rp.segs[index] = seg
        end, damage = rp.read(data, seg)
        seg.size = seg.used = seg.buf_off = end
        closed_used += end
        for off, resume in damage:
            if resume >= 0:
                warn(
                    f"{name}: damaged data at offset {off}, skipped {resume - off} bytes "
                    f"up to the next valid record at offset {resume}"
                )
            else:
                broken = path.with_name(name + ".broken")
                warn(
                    f"{name}: damaged or torn record at offset {off}; truncated there, "
                    f"{len(data) - off} bytes kept in {broken.name}"
                )
                ops.write_file(broken, data[off:])
        if end < len(data):
            ops.truncate(path, end)
        del data

    jobs = rp.jobs
    next_id = max(header_next, rp.max_id + 1)
    buried = sorted((jobs[i] for i in rp.buried), key=lambda j: (j.log_meta >> SEQ_SHIFT, j.id))
    result = ReplayResult(
        by_id=jobs,
        tubes=list(rp.tubes.values()),
        buried=buried,
        next_id=next_id,
        warnings=rp.warnings,
        mono_minus_wall=rp.offset,
        now_wall=clock.wall(),
    )
    return Replayed(
        result=result,
        segments=rp.segs,
        next_index=next_index,
        live_count=len(jobs),
        live_bytes=rp.live_bytes,
        closed_used=closed_used,
        bury_seq=(buried[-1].log_meta >> SEQ_SHIFT if buried else 0) + 1,
    )
