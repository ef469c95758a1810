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
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from beanstalk_py.binlog import format as fmt
from beanstalk_py.binlog.writer import (
    Fields,
    ReplayResult,
    RestoredJob,
    _Live,
    _Segment,
    restored_state,
)
from beanstalk_py.job import BURIED, DELAYED, READY

if TYPE_CHECKING:
    from beanstalk_py.binlog.writer import Binlog

log = logging.getLogger("beanstalk_py.binlog")

SEGMENT_NAME = re.compile(r"binlog\.([0-9]+)\Z")
_FIXED_UNPACK = fmt.JOB_FIXED.unpack_from
_DEL_UNPACK = fmt.DEL_ID.unpack_from


def segment_indices(names: list[str]) -> list[int]:
    out = []
    for name in names:
        m = SEGMENT_NAME.match(name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def replay_into(bl: Binlog) -> ReplayResult:
    ops = bl._files
    directory = bl._dir
    warnings: list[str] = []

    def warn(msg: str) -> None:
        log.warning("%s", msg)
        warnings.append(msg)

    indices = segment_indices(ops.listdir(directory))
    live = bl._live
    max_id = 0
    header_next = 1
    for index in indices:
        bl._next_index = max(bl._next_index, index + 1)
        path = directory / f"binlog.{index}"
        name = path.name
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

        frames, damage, end = fmt.scan(data, fmt.HEADER_SIZE)
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

        seg = _Segment(index, path, None, end, end)
        bl._segs[index] = seg
        bl._closed_used += end
        for off, stop in frames:
            rtype = data[off + 6]
            if rtype == fmt.T_DELETE:
                (job_id,) = _DEL_UNPACK(data, off + fmt.FRAME_SIZE)
                max_id = max(max_id, job_id)
                lv = live.pop(job_id, None)
                if lv is not None:
                    _drop(bl, lv, seg)
                continue
            p = off + fmt.FRAME_SIZE
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
            max_id = max(max_id, job_id)
            state = restored_state(state)
            if state not in (READY, BURIED, DELAYED):
                warn(f"{name}: offset {off}: job {job_id} has unknown state {state}; ignored")
                continue
            lv = live.get(job_id)
            if rtype == fmt.T_FULL:
                q = p + fmt.JOB_FIXED_SIZE
                tube = data[q : q + tlen]
                body = data[q + tlen : stop]
                fields: Fields = (pri, state, delay, ttr, created, deadline, r, t, rl, b, k, seq)
                size = stop - off
                if lv is None:
                    lv = _Live(job_id, seg, size, fields, tube, body, None)
                    live[job_id] = lv
                    bl._live_bytes += size
                    seg.jobs[job_id] = lv
                    continue
                old = [s for s in (lv.old or ()) if s is not seg]
                for s in (lv.full, lv.upd):
                    if s is not None and s is not seg:
                        s.jobs.pop(job_id, None)
                if lv.full is not seg:
                    old.append(lv.full)
                lv.old = old or None
                bl._live_bytes += size - lv.size
                lv.full, lv.upd, lv.size = seg, None, size
                lv.fields, lv.tube, lv.body = fields, tube, body
                seg.jobs[job_id] = lv
            elif lv is not None:  # UPDATE for a job we know; otherwise its FULL is gone
                prev = lv.fields
                lv.fields = (pri, state, delay, prev[3], prev[4], deadline, r, t, rl, b, k, seq)
                old_upd = lv.upd
                if old_upd is None:
                    lv.size += fmt.UPDATE_SIZE
                    bl._live_bytes += fmt.UPDATE_SIZE
                elif old_upd is not seg and old_upd is not lv.full:
                    old_upd.jobs.pop(job_id, None)
                lv.upd = seg
                seg.jobs[job_id] = lv

    bl._live_count = len(live)
    next_id = max(header_next, max_id + 1)
    bl._next_id = next_id
    seqs = [lv.fields[11] for lv in live.values() if lv.fields[1] == BURIED]
    bl._bury_seq = max(seqs, default=0) + 1
    return ReplayResult(jobs=_restored_jobs(bl), next_id=next_id, warnings=warnings)


def _drop(bl: Binlog, lv: _Live, seg: _Segment) -> None:
    """A DELETE record in ``seg``: forget the job, pin ``seg`` while older copies exist."""
    bl._live_bytes -= lv.size
    for s in (lv.full, lv.upd):
        if s is not None:
            s.jobs.pop(lv.id, None)
    for s in (lv.full, *(lv.old or ())):
        if s is not seg:
            bl._pin(s, seg)


def _restored_jobs(bl: Binlog) -> list[RestoredJob]:
    now_wall = bl._clock.wall()
    ready: list[RestoredJob] = []
    buried: list[tuple[int, int, RestoredJob]] = []
    for lv in sorted(bl._live.values(), key=lambda lv: lv.id):
        pri, state, delay, ttr, created, deadline, r, t, rl, b, k, seq = lv.fields
        deadline_wall = deadline / 1e9 if state == DELAYED else 0.0
        if state == DELAYED and deadline_wall <= now_wall:
            state = READY
        rj = RestoredJob(
            id=lv.id,
            tube=lv.tube.decode("utf-8", "replace"),
            pri=pri,
            delay=delay,
            ttr=ttr,
            body=lv.body,
            created=created / 1e9,
            state=state,
            deadline_wall=deadline_wall,
            reserves=r,
            timeouts=t,
            releases=rl,
            buries=b,
            kicks=k,
            file=lv.full.index,
        )
        if state == BURIED:
            buried.append((seq, lv.id, rj))
        else:
            ready.append(rj)
    buried.sort(key=lambda item: (item[0], item[1]))
    return ready + [rj for _, _, rj in buried]
