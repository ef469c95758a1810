"""The replication batch format (replica/batch.py): a leader engine journaling to a
BatchRecorder, decoded back; corrupt batches rejected as a whole; splitting by size."""

from __future__ import annotations

import zlib

import pytest

from beanstalk_py.binlog import format as fmt
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.engine import Engine
from beanstalk_py.protocol.session import Session
from beanstalk_py.replica.batch import (
    BATCH_HEADER,
    BATCH_HEADER_SIZE,
    T_DELETE,
    T_FULL,
    T_UPDATE,
    BadBatch,
    BatchRecorder,
    BatchTooLarge,
    decode,
)


def leader(limit: int | None = None) -> tuple[ManualClock, Engine, BatchRecorder, Session]:
    clock = ManualClock()
    rec = BatchRecorder(clock, max_batch_bytes=limit)
    engine = Engine(clock, rec, max_job_size=70000)
    return clock, engine, rec, Session(engine)


def cmd(s: Session, line: bytes, body: bytes | None = None) -> bytes:
    s.feed(line + b"\r\n" + (body + b"\r\n" if body is not None else b""))
    return s.take_output()


def test_records_round_trip_with_the_leader_s_fields() -> None:
    clock, engine, rec, s = leader()
    assert not rec.pending and rec.take(engine.next_id) is None
    assert cmd(s, b"use emails") == b"USING emails\r\n"
    body = bytes(range(256)) * 3 + b"\r\n"  # binary, CRLF inside
    assert cmd(s, b"put 5 0 60 %d" % len(body), body) == b"INSERTED 1\r\n"
    assert cmd(s, b"put 2000 30 7 1", b"x") == b"INSERTED 2\r\n"
    assert rec.pending
    batch = rec.take(engine.next_id)
    assert batch is not None and not rec.pending and rec.take(5) is None
    next_id, records = decode(batch)
    assert next_id == 3
    (a, b) = records
    assert (a.rtype, a.job_id, a.pri, a.state, a.delay, a.ttr) == (T_FULL, 1, 5, 1, 0, 60)
    assert (a.tube, a.body) == (b"emails", body + b"\r\n")
    assert a.created_ns == int(clock.wall() * 1e9)
    assert (b.rtype, b.job_id, b.state, b.delay, b.ttr, b.body) == (T_FULL, 2, 4, 30, 7, b"x\r\n")
    # the delayed job's ready time is wall-clock ns, as in the binlog
    assert b.deadline_ns == int((clock.wall() + 30) * 1e9)

    clock.advance(1)
    assert cmd(s, b"watch emails") == b"WATCHING 2\r\n"
    assert cmd(s, b"reserve-with-timeout 0").startswith(b"RESERVED 1 ")
    assert cmd(s, b"bury 1 9") == b"BURIED\r\n"
    assert cmd(s, b"kick-job 1") == b"KICKED\r\n"
    assert cmd(s, b"reserve-job 2").startswith(b"RESERVED 2 ")
    assert cmd(s, b"release 2 3 0") == b"RELEASED\r\n"
    assert cmd(s, b"delete 2") == b"DELETED\r\n"
    batch = rec.take(engine.next_id)
    assert batch is not None
    _, records = decode(batch)
    assert [(r.rtype, r.job_id, r.state) for r in records] == [
        (T_UPDATE, 1, 3),  # bury
        (T_UPDATE, 1, 1),  # kick-job
        (T_UPDATE, 2, 2),  # reserve-job out of delayed: recorded reserved
        (T_UPDATE, 2, 1),  # release
        (T_DELETE, 2, 0),
    ]
    bury, kick = records[0], records[1]
    assert (bury.pri, bury.buries, bury.reserves, bury.bury_seq) == (9, 1, 1, 1)
    assert (kick.kicks, kick.bury_seq, kick.tube, kick.body) == (1, 0, b"", b"")
    assert records[3].pri == 3 and records[3].releases == 1
    assert rec.stats().records_written == 7


def small_batch() -> bytes:
    _, engine, rec, s = leader()
    cmd(s, b"put 1 0 10 3", b"abc")
    cmd(s, b"put 2 5 10 2", b"de")
    cmd(s, b"reserve-with-timeout 0")
    cmd(s, b"bury 1 1")
    cmd(s, b"delete 2")
    batch = rec.take(engine.next_id)
    assert batch is not None
    return batch


def test_every_flipped_byte_is_rejected() -> None:
    batch = small_batch()
    assert len(decode(batch)[1]) == 4
    for i in range(len(batch)):
        bad = bytearray(batch)
        bad[i] ^= 0x5A
        with pytest.raises(BadBatch):
            decode(bytes(bad))


def test_bad_headers_and_lengths_are_rejected() -> None:
    batch = small_batch()
    with pytest.raises(BadBatch, match="shorter than"):
        decode(batch[:10])
    with pytest.raises(BadBatch, match="magic"):
        decode(b"XXXX" + batch[4:])

    def with_header(version: int, count: int) -> bytes:
        _m, _v, flags, next_id, _c, _crc = BATCH_HEADER.unpack_from(batch, 0)
        head = BATCH_HEADER.pack(b"BQRB", version, flags, next_id, count, 0)[:20]
        return head + fmt.CRC.pack(zlib.crc32(head)) + batch[BATCH_HEADER_SIZE:]

    with pytest.raises(BadBatch, match="version 2"):
        decode(with_header(2, 4))
    with pytest.raises(BadBatch, match="header says 5"):
        decode(with_header(1, 5))
    # a batch cut at a record boundary: every frame is fine, the count is not
    last = fmt.DELETE_SIZE
    with pytest.raises(BadBatch, match="3 records, its header says 4"):
        decode(batch[:-last])
    with pytest.raises(BadBatch, match="damaged record"):
        decode(batch + b"\x00")


def test_take_all_splits_at_record_boundaries() -> None:
    _, engine, rec, s = leader()
    for n in (10, 200, 1, 150, 90, 3, 300):
        cmd(s, b"put 1 0 10 %d" % n, b"b" * n)
    cmd(s, b"delete 3")
    cmd(s, b"kick-job 2")  # not buried: no record
    assert rec.pending
    limit = 500
    parts = rec.take_all(engine.next_id, limit)
    assert not rec.pending and rec.take_all(engine.next_id, limit) == []
    assert len(parts) > 2
    assert all(len(p) <= limit for p in parts)
    decoded = [decode(p) for p in parts]
    assert {n for n, _ in decoded} == {8}
    ids = [(r.rtype, r.job_id) for _, records in decoded for r in records]
    assert ids == [(T_FULL, i) for i in range(1, 8)] + [(T_DELETE, 3)]
    # a part is as full as the limit allows: the next record would not have fit
    for (_, records), (_, after), part in zip(decoded, decoded[1:], parts, strict=False):
        first = after[0]
        size = fmt.FULL_BASE + len(first.tube) + len(first.body)
        assert len(part) + size > limit, records


def test_a_record_larger_than_a_batch() -> None:
    _, engine, rec, s = leader()
    cmd(s, b"put 1 0 10 400", b"z" * 400)
    with pytest.raises(BatchTooLarge):
        rec.take_all(engine.next_id, 300)
    # the recorder given the limit refuses such a put: the client gets OUT_OF_MEMORY
    _, engine, rec, s = leader(limit=300)
    assert cmd(s, b"put 1 0 10 400", b"z" * 400) == b"OUT_OF_MEMORY\r\n"
    assert not engine.jobs and not rec.pending
    n = 300 - BATCH_HEADER_SIZE - fmt.FULL_BASE - len(b"default") - 2
    assert cmd(s, b"put 1 0 10 %d" % n, b"z" * n) == b"INSERTED 2\r\n"
    (part,) = rec.take_all(engine.next_id, 300)
    assert len(part) == 300
