"""Segment removal under churn: the header floor (format.py, "Floor") and compaction.

Puts and deletes that straddle segment boundaries make every segment's DELETE records mask
FULL records of the one before. Removing those one level per directory fsync let the
directory grow with the write rate (issue 10, item 2); a durable header floor removes the
whole dead prefix at once.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from support.binlog_helpers import dir_bytes, make_job, open_binlog, segment_files

from beanstalk_py.binlog import format as fmt
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.job import BURIED, DELAYED, READY, RESERVED

SEG = 64 * 1024


def test_dir_stays_bounded_when_fsyncs_lag_behind_churn(tmp_path: Path) -> None:
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path, clock, file_size=SEG)
    keep = []
    for i, state in enumerate((READY, DELAYED, BURIED, RESERVED)):
        job = make_job(i + 1, b"k%d" % i * 1000, tube=f"keep{i}", pri=i, clock=clock)
        if state == DELAYED:
            job.state, job.deadline = DELAYED, clock.now() + 3600
        assert bl.put(job)
        if state in (BURIED, RESERVED):
            job.state = state
            assert bl.update(job)
        keep.append(job)
    next_id = 10
    sizes = []
    for r in range(150):  # ~4.5 MB of churn, 6 jobs of 5,000 bytes a round
        batch = []
        for _ in range(6):
            job = make_job(next_id, b"c" * 5000, tube="churn", clock=clock)
            next_id += 1
            assert bl.put(job)
            batch.append(job)
        bl.write_pending()
        for job in batch:
            bl.delete(job)
        bl.write_pending()
        if r % 4 == 0:  # the timer's fsync comes once every 4 rounds (several segments)
            clock.advance(0.06)
            bl.fsync()
            bl.write_pending()  # what the server does after an fsync when gc_due
        sizes.append(dir_bytes(tmp_path))
    # current and spare segments plus one closed segment, and twice the live data
    assert max(sizes[10:]) <= 3 * SEG + 2 * bl.live_bytes
    bl.close()
    _, res = open_binlog(tmp_path, clock, file_size=SEG)
    got = {j.id: (j.tube, j.state, j.pri, j.body) for j in res.jobs}
    want = {
        j.id: (j.tube.name, READY if j.state == RESERVED else j.state, j.pri, j.body) for j in keep
    }
    assert got == want


def _segment(index: int, next_id: int, floor: int, *records: bytes) -> bytes:
    # Packed by hand from the layout in format.py, independent of encode_header.
    head = struct.pack("<8sHHIQI", b"BSPYBLOG", 1, 0, index, next_id, floor)
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(records)


def test_replay_drops_segments_below_the_floor_left_by_a_crash(tmp_path: Path) -> None:
    """A crash after the floor was durable but while the dead segments were being removed:
    binlog.2 (the DELETE) is gone, binlog.1 (the FULL it masked) is still there."""
    clock = ManualClock()
    job = make_job(1, b"deleted long ago", clock=clock)
    full = fmt.encode_job(
        fmt.T_FULL,
        1,
        (10, READY, 0, 60, int(job.created * 1e9), 0, 0, 0, 0, 0, 0, 0),
        b"default",
        job.body,
    )
    (tmp_path / "binlog.1").write_bytes(_segment(1, 1, 0, full))
    (tmp_path / "binlog.3").write_bytes(_segment(3, 2, 3))
    bl, res = open_binlog(tmp_path, clock)
    assert res.jobs == [] and res.next_id == 2
    assert "binlog.1" not in [p.name for p in segment_files(tmp_path)]
    bl.close()


def test_floor_in_header_round_trips(tmp_path: Path) -> None:
    h = fmt.encode_header(7, 99, 5)
    assert h == _segment(7, 99, 5)
    assert fmt.header_floor(h) == 5 and fmt.decode_header(h) == (1, 99, True)
    bad = bytearray(h)
    bad[24] ^= 1
    assert fmt.header_floor(bytes(bad)) == 0  # a damaged header sets no floor
