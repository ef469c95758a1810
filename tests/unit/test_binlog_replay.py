"""Replay semantics, damage handling and the directory lock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.binlog_helpers import make_job, open_binlog, segment_files
from support.servers import ours_process

from beanstalk_py.binlog import Binlog, BinlogLocked, ReplayResult, RestoredJob
from beanstalk_py.binlog import format as fmt
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.job import BURIED, DELAYED, READY, RESERVED


def by_id(result: ReplayResult) -> dict[int, RestoredJob]:
    return {j.id: j for j in result.jobs}


def test_fields_round_trip(tmp_path: Path) -> None:
    clock = ManualClock()
    bl, res = open_binlog(tmp_path, clock)
    assert res.jobs == [] and res.next_id == 1
    j = make_job(7, b"payload", tube="emails", pri=3, ttr=30, clock=clock)
    j.reserves, j.timeouts, j.releases, j.buries, j.kicks = 4, 3, 2, 1, 5
    assert bl.put(j)
    assert j.file == bl.current_index
    bl.close()
    bl, res = open_binlog(tmp_path, clock)
    (r,) = res.jobs
    assert (r.id, r.tube, r.pri, r.delay, r.ttr, r.body) == (7, "emails", 3, 0, 30, b"payload\r\n")
    assert (r.reserves, r.timeouts, r.releases, r.buries, r.kicks) == (4, 3, 2, 1, 5)
    assert r.state == READY and r.created == clock.wall() and r.file == 1
    assert res.next_id == 8
    bl.close()


def test_updates_and_deletes(tmp_path: Path) -> None:
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path, clock)
    jobs = [make_job(i, b"j%d" % i, clock=clock) for i in range(1, 6)]
    for j in jobs:
        assert bl.put(j)
    bl.write_pending()
    # release with delay 0 and a new priority is kept (beanstalkd #597 loses it)
    jobs[0].pri, jobs[0].releases = 99, 1
    assert bl.update(jobs[0])
    # reserved: not written, comes back ready with the counters of its last record
    jobs[1].state, jobs[1].reserves = RESERVED, 1
    # delayed by release
    jobs[2].state, jobs[2].delay, jobs[2].deadline, jobs[2].releases = (
        DELAYED,
        100,
        clock.now() + 100,
        1,
    )
    assert bl.update(jobs[2])
    # buried then kicked
    jobs[3].state, jobs[3].buries = BURIED, 1
    assert bl.update(jobs[3])
    jobs[3].state, jobs[3].kicks = READY, 1
    assert bl.update(jobs[3])
    bl.delete(jobs[4])
    bl.write_pending()
    # kill -9: no close, the fd and lock die with the "process"; a new Binlog reads the files
    assert bl._lock_fd is not None
    bl._files.close(bl._lock_fd)  # release the lock as a crash would
    bl._lock_fd = None
    clock.advance(30)
    bl2, res = open_binlog(tmp_path, clock)
    got = by_id(res)
    assert sorted(got) == [1, 2, 3, 4]
    assert (got[1].pri, got[1].releases, got[1].state) == (99, 1, READY)
    assert (got[2].state, got[2].reserves) == (READY, 0)
    assert got[3].state == DELAYED and got[3].delay == 100
    assert got[3].deadline_wall == pytest.approx(clock.wall() + 70)
    assert (got[4].state, got[4].buries, got[4].kicks) == (READY, 1, 1)
    assert res.next_id == 6
    bl2.close()
    clock.advance(100)
    bl3, res = open_binlog(tmp_path, clock)
    assert by_id(res)[3].state == READY  # its deadline passed while down
    bl3.close()


def test_buried_order_and_counters_survive_restarts(tmp_path: Path) -> None:
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path, clock, file_size=4096)
    jobs = {i: make_job(i, b"x" * 50, clock=clock) for i in range(1, 8)}
    for j in jobs.values():
        assert bl.put(j)
    for i in (5, 2, 7, 1):
        jobs[i].state, jobs[i].buries = BURIED, 1
        assert bl.update(jobs[i])
    bl.write_pending()
    bl.close()
    for _ in range(3):  # restarts must not add buries or reorder
        bl, res = open_binlog(tmp_path, clock, file_size=4096)
        buried = [j for j in res.jobs if j.state == BURIED]
        assert [j.id for j in buried] == [5, 2, 7, 1]
        assert all(j.buries == 1 for j in buried)
        assert [j.id for j in res.jobs if j.state != BURIED] == [3, 4, 6]
        # churn so compaction copies the buried jobs forward in some other order
        for k in range(100, 400):
            j = make_job(k, b"y" * 200, clock=clock)
            assert bl.put(j)
            bl.delete(j)
            bl.write_pending()
        assert bl.records_migrated > 0
        bl.close()


def test_ids_never_repeat_after_all_deleted(tmp_path: Path) -> None:
    bl, _ = open_binlog(tmp_path, file_size=4096)
    for i in range(1, 11):
        j = make_job(i)
        assert bl.put(j)
        bl.delete(j)
    bl.close()
    for _ in range(3):
        bl, res = open_binlog(tmp_path, file_size=4096)
        assert res.jobs == [] and res.next_id == 11
        bl.close()
        assert len(segment_files(tmp_path)) == 1  # every dead segment was removed


def test_max_size_job_survives(tmp_path: Path) -> None:
    # bigger than a whole segment, too
    bl, _ = open_binlog(tmp_path, file_size=16384, max_job_size=65535)
    body = (bytes(range(256)) * 256)[:65535]
    assert len(body) == 65535
    assert bl.put(make_job(1, body))
    assert bl.put(make_job(2, b"after"))
    bl.close()
    bl, res = open_binlog(tmp_path, file_size=16384, max_job_size=65535)
    assert [(j.id, j.body) for j in res.jobs] == [(1, body + b"\r\n"), (2, b"after\r\n")]
    assert res.warnings == []
    bl.close()


def _three_jobs(d: Path) -> tuple[Path, int, int]:
    """Write jobs 1..3 into one segment; return (path, start of record 3, its end)."""
    bl, _ = open_binlog(d)
    for i in (1, 2, 3):
        assert bl.put(make_job(i, b"body-%d" % i))
    bl.close()
    (seg,) = segment_files(d)
    data = seg.read_bytes()
    frames, damage, end = fmt.scan(data, fmt.HEADER_SIZE)
    assert len(frames) == 3 and not damage and end == len(data)
    return seg, frames[2][0], frames[2][1]


def test_torn_tail_at_every_offset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    seg, start, end = _three_jobs(src)
    for cut in range(start, end):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        path = d / seg.name
        data = path.read_bytes()
        path.write_bytes(data[:cut])
        bl, res = open_binlog(d)
        assert [j.id for j in res.jobs] == [1, 2], cut
        assert res.next_id >= 3
        if cut > start:
            assert res.warnings and f"offset {start}" in res.warnings[0]
            assert (d / (seg.name + ".broken")).read_bytes() == data[start:cut]
        bl.close()
        assert path.stat().st_size == start
        shutil.rmtree(d)


def test_torn_tail_in_preallocated_segment(tmp_path: Path) -> None:
    # a crash leaves the current segment at full preallocated size with a zero tail
    src = tmp_path / "src"
    seg, start, end = _three_jobs(src)
    for cut in (start + 1, start + 12, (start + end) // 2, end - 1):
        d = tmp_path / f"z{cut}"
        shutil.copytree(src, d)
        path = d / seg.name
        data = path.read_bytes()
        path.write_bytes(data[:cut] + bytes(65536 - cut))
        bl, res = open_binlog(d)
        assert [j.id for j in res.jobs] == [1, 2]
        assert len(res.warnings) == 1
        bl.close()


def test_flipped_byte_keeps_later_records(tmp_path: Path) -> None:
    src = tmp_path / "src"
    seg, _, _ = _three_jobs(src)
    data = seg.read_bytes()
    frames, _, _ = fmt.scan(data, fmt.HEADER_SIZE)
    for pos in range(frames[1][0], frames[1][1], 7):
        d = tmp_path / f"f{pos}"
        shutil.copytree(src, d)
        bad = bytearray(data)
        bad[pos] ^= 0x40
        (d / seg.name).write_bytes(bytes(bad))
        bl, res = open_binlog(d)
        assert [j.id for j in res.jobs] == [1, 3], pos
        assert len(res.warnings) == 1 and f"offset {frames[1][0]}" in res.warnings[0]
        bl.close()
        shutil.rmtree(d)


def test_damage_in_earlier_segment(tmp_path: Path) -> None:
    bl, _ = open_binlog(tmp_path, file_size=2048)
    for i in range(1, 61):
        assert bl.put(make_job(i, b"z" * 100))
        bl.write_pending()
    bl.close()
    files = segment_files(tmp_path)
    assert len(files) >= 3
    first = files[0]
    data = bytearray(first.read_bytes())
    frames, _, _ = fmt.scan(bytes(data), fmt.HEADER_SIZE)
    hit = frames[2][0] + 30
    data[hit] ^= 0xFF
    first.write_bytes(bytes(data))
    bl, res = open_binlog(tmp_path, file_size=2048)
    ids = sorted(j.id for j in res.jobs)
    assert ids == [i for i in range(1, 61) if i != 3]
    assert len(res.warnings) == 1
    assert first.name in res.warnings[0] and str(frames[2][0]) in res.warnings[0]
    bl.close()


def test_truncated_header_and_empty_files(tmp_path: Path) -> None:
    bl, _ = open_binlog(tmp_path)
    assert bl.put(make_job(1))
    bl.close()
    (tmp_path / "binlog.7").write_bytes(b"BSPY")  # creation interrupted mid-header
    (tmp_path / "binlog.8").write_bytes(b"")
    (tmp_path / "binlog.9").write_bytes(bytes(4096))  # an unused preallocated spare
    bl, res = open_binlog(tmp_path)
    assert [j.id for j in res.jobs] == [1]
    assert any("binlog.7" in w and "truncated header" in w for w in res.warnings)
    assert any("binlog.8" in w for w in res.warnings)
    assert (tmp_path / "binlog.7.broken").exists()
    assert not (tmp_path / "binlog.8").exists() and not (tmp_path / "binlog.9").exists()
    assert bl.current_index == 10
    assert bl.put(make_job(2))
    bl.close()
    bl, res = open_binlog(tmp_path)
    assert [j.id for j in res.jobs] == [1, 2]
    bl.close()


def test_zero_byte_lock_file(tmp_path: Path) -> None:
    (tmp_path / "lock").write_bytes(b"")
    bl, res = open_binlog(tmp_path)
    assert res.jobs == []
    bl.close()


def test_second_process_is_refused(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from beanstalk_py.binlog import Binlog
        from beanstalk_py.system import SystemClock
        bl = Binlog.open(Path({str(tmp_path)!r}), clock=SystemClock(), max_job_size=10)
        print("locked", flush=True)
        sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **ours_process(),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(BinlogLocked, match="in use by another process"):
            Binlog.open(tmp_path, clock=ManualClock(), max_job_size=10)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    bl = Binlog.open(tmp_path, clock=ManualClock(), max_job_size=10)  # free again
    bl.close()


def test_foreign_file_left_alone(tmp_path: Path) -> None:
    (tmp_path / "binlog.1").write_bytes(b"\x07\x00\x00\x00" + os.urandom(100))
    bl, res = open_binlog(tmp_path)
    assert res.jobs == [] and any("binlog.1" in w for w in res.warnings)
    assert bl.current_index == 2
    bl.close()
    assert (tmp_path / "binlog.1").exists()


def test_update_as_reserved_brings_a_buried_or_delayed_job_back_ready(tmp_path: Path) -> None:
    """reserve-job of a buried / delayed job: the UPDATE says reserved, replay says ready."""
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path, clock)
    buried = make_job(1, b"b", clock=clock)
    delayed = make_job(2, b"d", delay=3600, clock=clock)
    delayed.state, delayed.deadline = DELAYED, clock.now() + 3600
    assert bl.put(buried) and bl.put(delayed)
    buried.state = BURIED
    assert bl.update(buried)
    for job in (buried, delayed):
        job.state = RESERVED
        assert bl.update(job)
    bl.close()
    _, res = open_binlog(tmp_path, clock)
    assert {j.id: j.state for j in res.jobs} == {1: READY, 2: READY}
    assert res.buried == []


def test_a_delete_read_at_replay_outlives_the_full_record_it_cancels(tmp_path: Path) -> None:
    """Segment 1: FULL A (stays live), FULL X. Segment 2: DELETE X only. After a restart
    segment 2 holds no live job, but removing it while segment 1 is still on disk would
    bring X back at the next restart: the replay must pin it as the writer did."""
    clock = ManualClock()
    fs = 8 * 1024
    bl, _ = open_binlog(tmp_path, clock, file_size=fs, fsync_ms=None)
    a = make_job(1, b"a" * 5000, clock=clock)
    x = make_job(2, b"x" * 2000, clock=clock)
    c = make_job(3, b"c" * 1000, clock=clock)
    for j in (a, x):
        assert bl.put(j)
    bl.write_pending()
    assert bl.put(c)  # no room left in segment 1
    bl.write_pending()
    assert c.file == 2 and x.file == 1
    bl.delete(x)
    bl.delete(c)
    bl.write_pending()
    bl.close()

    # restart 1: segment 2 now only holds the DELETE of X; write a little and restart
    bl, res = open_binlog(tmp_path, clock, file_size=fs, fsync_ms=None)
    assert sorted(res.by_id) == [1]
    d = make_job(4, b"d", clock=clock)
    assert bl.put(d)
    bl.write_pending()
    bl.delete(d)
    bl.write_pending()
    bl.close()

    bl, res = open_binlog(tmp_path, clock, file_size=fs, fsync_ms=None)
    assert sorted(res.by_id) == [1], "a deleted job came back"
    assert res.by_id[1].body == a.body
    bl.close()
