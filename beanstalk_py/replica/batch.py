"""Replication batches: the records of one event-loop iteration of the leader, as bytes.

In cluster mode (docs/CLUSTER.md) the leader's engine journals every change to a
``BatchRecorder`` (the core ``Journal`` seam, ``core/journal.py``, says which change writes
which record); once per loop iteration the node takes the buffered records as one or more
batches and appends each as one etcd key. Followers ``decode`` them and apply them to a live
engine (``replica/apply.py``). The etcd layer treats a batch as opaque bytes.

Format, version 1 (all integers little-endian, as the binlog's)
===============================================================

Header, 24 bytes:

======  ====  ====  ===============================================================
offset  size  type  field
======  ====  ====  ===============================================================
0       4     bytes magic ``b"BQRB"``
4       2     u16   version (1)
6       2     u16   flags (0)
8       8     u64   the leader engine's ``next_id`` when the batch was taken: job ids
                    never repeat across leaders, even when every record of the highest
                    ids was dropped (a job put and deleted before compaction)
16      4     u32   number of records that follow
20      4     u32   CRC-32 (zlib) of bytes 0..19
======  ====  ====  ===============================================================

Then exactly that many records, back to back up to the end of the batch, each in the
binlog's own CRC-framed record format (``binlog/format.py``, "Record frame" and "Job
payload"): FULL (put, or a re-append of a live job), UPDATE (bury, kick, kick-job, release,
``reserve-job`` of a buried or delayed job: state reserved), DELETE. As in the binlog,
delayed ready times are int64 wall-clock ns since the epoch, ``created`` likewise; the bury
sequence is increasing over the recorder's life on every record whose state is buried (a
reader may equally use log order: the two agree).

A batch is valid only as a whole: good header CRC, version 1, every frame valid (magic,
type, length, CRC), the record count right, nothing left over, every tube name ASCII and
every job state 1..4. ``decode`` checks all of it before returning a single record, so a
corrupt batch is never half applied.

Size: ``take_all(next_id, max_bytes)`` splits the buffered records into batches of at most
``max_bytes`` each, only at record boundaries, in order. A single record larger than that
cannot be sent; ``BatchRecorder(max_batch_bytes=...)`` refuses such a put (the engine answers
``OUT_OF_MEMORY``), and ``take_all`` raises ``BatchTooLarge`` if one got in anyway.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Final, NamedTuple

from beanstalk_py.binlog import format as fmt
from beanstalk_py.core.job import BURIED, DELAYED
from beanstalk_py.core.journal import JournalStats

if TYPE_CHECKING:
    from beanstalk_py.core.clock import Clock
    from beanstalk_py.core.engine import Engine
    from beanstalk_py.core.job import Job

BATCH_MAGIC: Final = b"BQRB"
BATCH_VERSION: Final = 1
BATCH_HEADER = struct.Struct("<4sHHQII")
BATCH_HEADER_SIZE: Final = BATCH_HEADER.size  # 24
_HEAD_CRC_AT: Final = 20
MAX_STATE: Final = DELAYED  # job states 1..4 (binlog/format.py)

T_FULL: Final = fmt.T_FULL
T_UPDATE: Final = fmt.T_UPDATE
T_DELETE: Final = fmt.T_DELETE

assert BATCH_HEADER_SIZE == 24


class BadBatch(ValueError):
    """A batch that is not valid as a whole (header, a frame's CRC, count, length)."""


class BatchTooLarge(ValueError):
    """One record does not fit in a batch of the requested size."""


class Record(NamedTuple):
    """One decoded record. DELETE carries only ``rtype`` and ``job_id`` (the rest 0/empty);
    UPDATE has an empty ``tube`` and ``body``. Times are int ns since the epoch (wall)."""

    rtype: int  # T_FULL, T_UPDATE, T_DELETE
    job_id: int
    pri: int = 0
    state: int = 0  # 1 ready, 2 reserved, 3 buried, 4 delayed
    delay: int = 0
    ttr: int = 0
    created_ns: int = 0
    deadline_ns: int = 0  # delayed only: ready time
    reserves: int = 0
    timeouts: int = 0
    releases: int = 0
    buries: int = 0
    kicks: int = 0
    bury_seq: int = 0
    tube: bytes = b""  # FULL only
    body: bytes = b""  # FULL only, with the trailing b"\r\n"


def encode_header(next_id: int, count: int) -> bytes:
    head = BATCH_HEADER.pack(BATCH_MAGIC, BATCH_VERSION, 0, next_id, count, 0)
    return head[:_HEAD_CRC_AT] + fmt.CRC.pack(zlib.crc32(head[:_HEAD_CRC_AT]))


class BatchRecorder:
    """The leader's journal in cluster mode: records buffered in memory until ``take``.

    Implements the recording side of ``core.journal.Journal``. ``put``/``update`` return
    True (the records are only buffered; the node makes them durable), except that a put
    whose FULL record cannot fit in a batch of ``max_batch_bytes`` is refused."""

    __slots__ = ("_bury_seq", "_clock", "_count", "_ends", "buf", "max_batch_bytes", "records")

    def __init__(self, clock: Clock, *, max_batch_bytes: int | None = None) -> None:
        self._clock = clock
        self.buf = bytearray()  # the records since the last take
        self._ends: list[int] = []  # end offset of each record in buf (split points)
        self._count = 0
        self._bury_seq = 1
        self.max_batch_bytes = max_batch_bytes
        self.records = 0  # records written over the recorder's life

    @property
    def pending(self) -> bool:
        return bool(self._ends)

    def _record(self, rtype: int, job: Job) -> bytes:
        clock = self._clock
        state = job.state
        deadline = (
            int((clock.wall() + (job.deadline - clock.now())) * 1e9) if state == DELAYED else 0
        )
        seq = 0
        if state == BURIED:
            seq = self._bury_seq
            self._bury_seq = seq + 1
        if rtype == T_FULL:
            tube = job.tube.name_bytes
            body = job.body
        else:
            tube = body = b""
        fields = (
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
        return fmt.encode_job(rtype, job.id, fields, tube, body)

    def _append(self, record: bytes) -> None:
        self.buf += record
        self._ends.append(len(self.buf))
        self.records += 1

    def put(self, job: Job) -> bool:
        """A FULL record of ``job`` (a put, or a re-append of a live job's current state)."""
        limit = self.max_batch_bytes
        size = fmt.FULL_BASE + len(job.tube.name_bytes) + len(job.body)
        if limit is not None and BATCH_HEADER_SIZE + size > limit:
            return False
        self._append(self._record(T_FULL, job))
        return True

    def update(self, job: Job) -> bool:
        self._append(self._record(T_UPDATE, job))
        return True

    def record_live_jobs(self, engine: Engine) -> int:
        """A FULL record of every live job of ``engine`` in its current state (the snapshot
        that lets older batches be deleted); returns how many.

        Each tube's buried jobs are written in FIFO order, after the other jobs: a reader
        queues every buried record at the end of the FIFO (bury order = log order), so this
        keeps the leader's bury order on followers that hold the jobs already and on those
        that start from the snapshot. (Writing them in id order would reorder them.)"""
        n = 0
        for job in list(engine.jobs.values()):
            if job.state != BURIED:
                self._append(self._record(T_FULL, job))
                n += 1
        for t in list(engine.tubes.values()):
            for job in list(t.buried.values()):
                self._append(self._record(T_FULL, job))
                n += 1
        return n

    def delete(self, job: Job) -> None:
        self._append(fmt.encode_delete(job.id))

    def stats(self) -> JournalStats:
        return JournalStats(records_written=self.records)

    def take(self, next_id: int) -> bytes | None:
        """Every buffered record as one batch (cleared), or None when there is none."""
        ends = self._ends
        if not ends:
            return None
        batch = encode_header(next_id, len(ends)) + self.buf
        self.buf = bytearray()
        self._ends = []
        return bytes(batch)

    def take_all(self, next_id: int, max_bytes: int) -> list[bytes]:
        """The buffered records as batches of at most ``max_bytes`` each (header included),
        split at record boundaries, in order; cleared. [] when there is none."""
        out: list[bytes] = []
        buf = self.buf
        start = 0  # first byte of the current batch's records
        prev = 0  # end of the last record that fits
        count = 0
        room = max_bytes - BATCH_HEADER_SIZE
        for end in self._ends:
            if end - prev > room:
                raise BatchTooLarge(
                    f"a {end - prev}-byte record does not fit in a {max_bytes}-byte batch"
                )
            if end - start > room:
                out.append(encode_header(next_id, count) + buf[start:prev])
                start = prev
                count = 0
            count += 1
            prev = end
        if count:
            out.append(encode_header(next_id, count) + buf[start:prev])
        self.buf = bytearray()
        self._ends = []
        return out


def decode(batch: bytes) -> tuple[int, list[Record]]:
    """``(next_id, records)`` of a batch; raises ``BadBatch`` unless it is valid as a whole
    (every frame is checked before anything is returned)."""
    n = len(batch)
    if n < BATCH_HEADER_SIZE:
        raise BadBatch(f"batch of {n} bytes is shorter than its {BATCH_HEADER_SIZE}-byte header")
    magic, version, _flags, next_id, count, crc = BATCH_HEADER.unpack_from(batch, 0)
    if magic != BATCH_MAGIC:
        raise BadBatch(f"not a replication batch (magic {magic!r})")
    if crc != zlib.crc32(memoryview(batch)[:_HEAD_CRC_AT]):
        raise BadBatch("batch header checksum mismatch")
    if version != BATCH_VERSION:
        raise BadBatch(f"unknown batch format version {version}")
    bounds: list[tuple[int, int]] = []
    pos = BATCH_HEADER_SIZE
    while pos < n:
        end = fmt.frame_at(batch, pos)
        if end < 0:
            raise BadBatch(f"damaged record at offset {pos} (record {len(bounds) + 1})")
        bounds.append((pos, end))
        pos = end
    if len(bounds) != count:
        raise BadBatch(f"batch holds {len(bounds)} records, its header says {count}")
    records: list[Record] = []
    unpack = fmt.JOB_FIXED.unpack_from
    for pos, end in bounds:
        rtype = batch[pos + 6]
        p = pos + fmt.FRAME_SIZE
        if rtype == T_DELETE:
            records.append(Record(T_DELETE, fmt.DEL_ID.unpack_from(batch, p)[0]))
            continue
        (job_id, pri, state, tlen, delay, ttr, created, deadline, r, t, rl, b, k, seq, _blen) = (
            unpack(batch, p)
        )
        if not 1 <= state <= MAX_STATE:
            raise BadBatch(f"job {job_id}: unknown state {state} at offset {pos}")
        tube = body = b""
        if rtype == T_FULL:
            q = p + fmt.JOB_FIXED_SIZE
            tube = bytes(batch[q : q + tlen])
            if not tube.isascii():
                raise BadBatch(f"job {job_id}: tube name is not ASCII at offset {pos}")
            body = bytes(batch[q + tlen : end])
        records.append(
            Record(
                rtype,
                job_id,
                pri,
                state,
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
                tube,
                body,
            )
        )
    return next_id, records
