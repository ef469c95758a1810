"""Import a beanstalkd binlog directory (format versions 7 and 5) into our format.

beanstalkd writes raw C structs in host byte order; we read the LP64 little-endian layout
(x86_64, arm64), which is what every supported beanstalkd build produces:

* file: ``int32 version`` then records; a record is ``namelen`` (int32 in v7, size_t in v5),
  the tube name if ``namelen > 0`` (FULL record), the job struct (80 bytes v7, 77 bytes v5),
  then for FULL records the body (``body_size`` bytes, including ``\\r\\n``).
* v7 times are nanoseconds; v5 times are microseconds.

Replay follows beanstalkd's rules: files in numeric order, records in order; an id of 0 ends
the file (zero padding); a SHORT record for an unknown id is ignored; state 0 deletes;
Reserved comes back Ready. Where beanstalkd loses data we don't: the body limit is compared
with the user bytes (beanstalkd compares ``body_size`` including CRLF, losing max-size jobs),
and ``buries`` is not incremented. Buried jobs keep beanstalkd's order (first appearance).
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from beanstalk_py.binlog.errors import BinlogError
from beanstalk_py.binlog.fileops import FileOps, OsFileOps
from beanstalk_py.binlog.writer import Binlog
from beanstalk_py.core.job import BURIED, DELAYED, READY, RESERVED, Job
from beanstalk_py.core.tube import Tube
from beanstalk_py.system import SystemClock

log = logging.getLogger("beanstalk_py.binlog")

_V7 = struct.Struct("<QI4xqqi4xqqIIIIIB3x")  # 80 bytes, offsets in docs/BINLOG.md
_V5 = struct.Struct("<QI4xQQi4xQQIIIIIB")  # 77 bytes
_NAMELEN = {7: struct.Struct("<i"), 5: struct.Struct("<q")}
_NAME = re.compile(r"binlog\.([0-9]+)\Z")
_MAX_NAME = 200


@dataclass
class ImportReport:
    files_read: int = 0
    records_read: int = 0
    jobs: int = 0
    ready: int = 0
    delayed: int = 0
    buried: int = 0
    next_id: int = 1
    warnings: list[str] = field(default_factory=list)


class _Job:
    __slots__ = ("body", "fields", "tube")

    def __init__(self, tube: bytes, fields: list[int], body: bytes) -> None:
        self.tube = tube
        self.fields = fields  # pri, state, delay_ns, ttr_ns, created_ns, deadline_ns, 5 counters
        self.body = body


def read_beanstalkd(
    src: Path, *, max_job_size: int, files: FileOps | None = None
) -> tuple[dict[int, _Job], int, ImportReport]:
    """Replay a beanstalkd binlog directory in memory: (jobs in recovery order, next id)."""
    ops = files if files is not None else OsFileOps()
    report = ImportReport()

    def warn(msg: str) -> None:
        log.warning("import: %s", msg)
        report.warnings.append(msg)

    indices = sorted(int(m.group(1)) for n in ops.listdir(src) if (m := _NAME.match(n)))
    jobs: dict[int, _Job] = {}  # insertion order = beanstalkd's recovery list order
    max_id = 0
    for index in indices:
        name = f"binlog.{index}"
        try:
            data = ops.read_file(src / name)
        except OSError as e:
            warn(f"{name}: cannot read: {e}")
            continue
        report.files_read += 1
        if len(data) < 4:
            warn(f"{name}: too short for a version")
            continue
        (version,) = struct.unpack_from("<i", data, 0)
        if version not in (5, 7):
            warn(f"{name}: unknown version: {version}")
            continue
        nl = _NAMELEN[version]
        rec = _V7 if version == 7 else _V5
        unit = 1 if version == 7 else 1000  # v5 times are microseconds
        pos = 4
        n = len(data)
        while True:
            if n - pos < nl.size:
                break
            (namelen,) = nl.unpack_from(data, pos)
            pos += nl.size
            if namelen < 0 or namelen > _MAX_NAME:
                warn(f"{name}:{pos - nl.size}: namelen {namelen} exceeds maximum of {_MAX_NAME}")
                break
            tube = data[pos : pos + namelen]
            if len(tube) < namelen:
                warn(f"{name}:{pos}: unexpected EOF reading tube name")
                break
            pos += namelen
            if n - pos < rec.size:
                if data.count(0, pos - nl.size) != n - pos + nl.size:
                    warn(f"{name}:{pos}: unexpected EOF reading job struct")
                break
            (job_id, pri, delay, ttr, body_size, created, deadline, *counters, state) = (
                rec.unpack_from(data, pos)
            )
            pos += rec.size
            if job_id == 0:
                break  # zero padding: end of data
            report.records_read += 1
            max_id = max(max_id, job_id)
            if state > 4:
                warn(f"{name}:{pos}: job {job_id} has unknown state {state}; job dropped")
                jobs.pop(job_id, None)
                break
            fields = [
                pri,
                READY if state == RESERVED else state,
                delay * unit,
                ttr * unit,
                created * unit,
                deadline * unit,
                *counters,
            ]
            job = jobs.get(job_id)
            if namelen > 0:
                body = data[pos : pos + body_size]
                if body_size < 2 or len(body) < body_size:
                    warn(f"{name}:{pos}: unexpected EOF reading job body; job {job_id} dropped")
                    jobs.pop(job_id, None)
                    break
                pos += body_size
                if job is None:
                    if body_size - 2 > max_job_size:
                        warn(f"job {job_id} is too big ({body_size - 2} > {max_job_size}); skipped")
                        continue
                    jobs[job_id] = job = _Job(tube, fields, body)
                else:
                    job.tube, job.body = tube, body
            elif job is None:
                continue  # SHORT record whose FULL record was in a removed file
            job.fields = fields
            if state == 0:
                del jobs[job_id]
    return jobs, max_id + 1, report


def import_beanstalkd(
    src: Path, dst: Path, *, file_size: int, max_job_size: int, files: FileOps | None = None
) -> ImportReport:
    """Read beanstalkd binlog directory ``src`` and write its live jobs into ``dst``.

    ``dst`` must hold no binlog yet. Ids, tubes, bodies, priorities, delays and absolute
    ready times, ttr, creation times, counters and buried order are kept."""
    ops = files if files is not None else OsFileOps()
    src = Path(src)
    dst = Path(dst)
    try:
        src_lock = ops.lock(src / "lock")
    except OSError as e:
        raise BinlogError(f"{src} is locked: is beanstalkd still running on it? ({e})") from e
    try:
        jobs, next_id, report = read_beanstalkd(src, max_job_size=max_job_size, files=ops)
        clock = SystemClock()
        bl = Binlog.open(
            dst,
            file_size=file_size,
            fsync_ms=None,
            clock=clock,
            max_job_size=max_job_size,
            files=ops,
        )
        try:
            restored = bl.replay()
            if restored.count or restored.next_id > 1:
                raise BinlogError(f"{dst} already holds a binlog; import into an empty directory")
            offset = clock.now() - clock.wall()  # wall -> monotonic, as Job.deadline wants
            tubes: dict[bytes, Tube] = {}
            for job_id, raw in jobs.items():
                pri, state, delay, ttr, created, deadline, r, t, rl, b, k = raw.fields
                tube = tubes.get(raw.tube)
                if tube is None:
                    tube = tubes[raw.tube] = Tube(raw.tube.decode("ascii", "backslashreplace"))
                job = Job(
                    job_id,
                    tube,
                    pri,
                    delay // 1_000_000_000,
                    max(1, ttr // 1_000_000_000),
                    raw.body,
                    created / 1e9,
                )
                job.state = state
                if state == DELAYED:
                    job.deadline = deadline / 1e9 + offset
                job.reserves, job.timeouts, job.releases, job.buries, job.kicks = r, t, rl, b, k
                if not bl.put(job):
                    raise BinlogError(f"no disk space in {dst} for job {job_id}")
                report.jobs += 1
                if state == BURIED:
                    report.buried += 1
                elif state == DELAYED:
                    report.delayed += 1
                else:
                    report.ready += 1
            bl.set_next_id(next_id)
            report.next_id = next_id
        finally:
            bl.close()
    finally:
        ops.close(src_lock)
    return report
