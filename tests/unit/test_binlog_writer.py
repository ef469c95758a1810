"""Group commit, fsync policy, space reservation, I/O errors, bounded disk."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest
from support.binlog_helpers import EIO, ENOSPC, FaultyOps, dir_bytes, make_job, open_binlog

from beanstalk_py.binlog import BinlogWriteError
from beanstalk_py.binlog import format as fmt
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.job import BURIED, DELAYED, READY, Job
from beanstalk_py.core.journal import JournalStats, NullJournal


def test_group_commit_one_write_per_batch(tmp_path: Path) -> None:
    ops = FaultyOps()
    bl, _ = open_binlog(tmp_path, files=ops, file_size=1 << 20)
    before = ops.writes
    for i in range(1, 201):
        assert bl.put(make_job(i))
    assert bl.pending and ops.writes == before  # put only buffers
    seq = bl.write_pending()
    assert ops.writes == before + 1 and not bl.pending
    assert bl.write_pending() == seq  # nothing to do
    assert bl.records_written == 200
    assert bl.bytes_written > 200 * fmt.FULL_BASE
    bl.close()


def test_fsync_deadline_interval(tmp_path: Path) -> None:
    clock = ManualClock(now=1000.0)
    bl, _ = open_binlog(tmp_path, clock, fsync_ms=50)
    # A first start writes its header without waiting for an fsync: the policy syncs it.
    assert bl.sync_deadline() == pytest.approx(1000.0)
    bl.fsync()  # at t=1000
    assert bl.sync_deadline() is None
    durations: list[float] = []
    bl.on_fsync = durations.append
    clock.advance(0.01)
    bl.put(make_job(1))
    assert bl.sync_deadline() is None  # buffered, not written: nothing to sync yet
    seq = bl.write_pending()
    assert bl.sync_deadline() == pytest.approx(1000.05)  # at most one fsync per 50 ms
    clock.advance(0.04)
    assert bl.fsync() == seq and len(durations) == 1
    assert bl.sync_deadline() is None
    clock.advance(0.2)  # a quiet period: the next write is synced right away...
    bl.put(make_job(2))
    bl.write_pending()
    assert bl.sync_deadline() == pytest.approx(clock.now())
    bl.fsync()
    clock.advance(0.001)  # ...and a burst right after waits for the interval
    bl.put(make_job(3))
    seq = bl.write_pending()
    assert bl.sync_deadline() == pytest.approx(clock.now() - 0.001 + 0.05)
    assert bl.fsync() == seq
    bl.close()


def test_fsync_always_and_never(tmp_path: Path) -> None:
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path / "a", clock, fsync_ms=0)
    bl.put(make_job(1))
    seq = bl.write_pending()
    assert bl.sync_deadline() == clock.now()
    assert bl.synced_seq < seq and bl.fsync() >= seq
    bl.close()
    bl, _ = open_binlog(tmp_path / "n", clock, fsync_ms=None)
    bl.put(make_job(1))
    bl.write_pending()
    assert bl.sync_deadline() is None
    bl.close()


def test_fsync_in_thread_while_loop_writes(tmp_path: Path) -> None:
    bl, _ = open_binlog(tmp_path, file_size=4096, fsync_ms=0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def syncer() -> None:
        try:
            while not stop.is_set():
                bl.fsync()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=syncer)
    t.start()
    try:
        for i in range(1, 3001):
            j = make_job(i, b"q" * 40)
            assert bl.put(j)
            if i % 3:
                bl.delete(j)
            bl.write_pending()
    finally:
        stop.set()
        t.join(10)
    assert not errors
    seq = bl.write_pending()
    assert bl.fsync() >= seq
    bl.close()
    bl, res = open_binlog(tmp_path, file_size=4096)
    assert [j.id for j in res.jobs] == [i for i in range(1, 3001) if i % 3 == 0]
    bl.close()


def test_disk_full_refuses_puts_but_deletes_work(tmp_path: Path) -> None:
    ops = FaultyOps()
    clock = ManualClock()
    bl, _ = open_binlog(tmp_path, clock, files=ops, file_size=8192)
    bl.write_pending()  # creates the spare segment
    ops.fail_prealloc = ENOSPC
    accepted = []
    for i in range(1, 1000):
        j = make_job(i, b"w" * 100)
        if not bl.put(j):
            break
        accepted.append(j)
        bl.write_pending()
    else:
        pytest.fail("puts never failed on a full disk")
    # 193-byte records plus a 20-byte delete slot each, in two 8 KiB segments
    assert 70 <= len(accepted) <= 2 * 8192 // 213
    j = accepted[0]
    j.state, j.buries = BURIED, 1
    # An update would eat into the room reserved for the deletes of the accepted jobs: it is
    # refused (the job keeps its state, the command an error reply) so every delete stays loggable.
    assert not bl.update(j)
    for j in accepted:  # every delete can still be logged
        bl.delete(j)
        bl.write_pending()
    assert not bl.failed
    clock.advance(1)
    ops.fail_prealloc = None
    assert bl.put(make_job(5000))
    bl.close()
    bl, res = open_binlog(tmp_path)
    assert [j.id for j in res.jobs] == [5000]
    bl.close()


def _three_jobs_left_behind(d: Path) -> None:
    bl, _ = open_binlog(d, file_size=8192)
    for i in (1, 2, 3):
        assert bl.put(make_job(i, b"r" * 100))
    bl.write_pending()
    bl.close()


def test_full_disk_at_start_reserves_the_deletes_and_refuses_puts(tmp_path: Path) -> None:
    _three_jobs_left_behind(tmp_path)
    ops = FaultyOps()
    ops.fail_prealloc, ops.fail_prealloc_from = ENOSPC, 8192  # only small segments fit
    clock = ManualClock()
    bl, res = open_binlog(tmp_path, clock, files=ops, file_size=8192)
    assert [j.id for j in res.jobs] == [1, 2, 3]
    assert not bl.put(make_job(4))
    for j in res.by_id.values():  # the room reserved first takes every delete
        bl.delete(j)
        bl.write_pending()
    assert not bl.failed
    ops.fail_prealloc = None
    assert not bl.put(make_job(5))  # the next attempt waits for the retry interval
    clock.advance(1)
    assert bl.put(make_job(6))
    bl.write_pending()
    bl.close()
    bl, res = open_binlog(tmp_path, file_size=8192)
    assert [j.id for j in res.jobs] == [6]
    bl.close()


def test_no_room_at_all_at_start_still_replays(tmp_path: Path) -> None:
    _three_jobs_left_behind(tmp_path)
    ops = FaultyOps()
    ops.fail_prealloc = ENOSPC
    clock = ManualClock()
    bl, res = open_binlog(tmp_path, clock, files=ops, file_size=8192)
    assert [j.id for j in res.jobs] == [1, 2, 3]
    assert any("no disk space to log the deletes of the 3" in w for w in res.warnings)
    assert not bl.put(make_job(4))
    ops.fail_prealloc = None
    clock.advance(1)
    assert bl.put(make_job(5))  # space is back: a segment (with a fresh header) is created
    bl.write_pending()
    bl.close()
    bl, res = open_binlog(tmp_path, file_size=8192)
    assert [j.id for j in res.jobs] == [1, 2, 3, 5]
    bl.close()


def test_a_delete_with_nowhere_to_go_is_never_acknowledged(tmp_path: Path) -> None:
    _three_jobs_left_behind(tmp_path)
    ops = FaultyOps()
    ops.fail_prealloc = ENOSPC
    bl, res = open_binlog(tmp_path, files=ops, file_size=8192)
    bl.delete(res.by_id[1])
    assert bl.failed and bl.pending  # the shell must call write_pending before replying...
    with pytest.raises(BinlogWriteError):
        bl.write_pending()  # ...which fails, so the server stops without DELETED
    bl.close()
    bl, res = open_binlog(tmp_path, file_size=8192)
    assert [j.id for j in res.jobs] == [1, 2, 3]
    bl.close()


def test_write_error_disables(tmp_path: Path) -> None:
    ops = FaultyOps()
    bl, _ = open_binlog(tmp_path, files=ops)
    bl.put(make_job(1))
    ops.fail_write = EIO
    with pytest.raises(BinlogWriteError, match="write failed"):
        bl.write_pending()
    assert bl.failed
    assert not bl.put(make_job(2))
    with pytest.raises(BinlogWriteError):
        bl.write_pending()
    with pytest.raises(BinlogWriteError):
        bl.fsync()
    bl.close()


def test_fsync_error_disables(tmp_path: Path) -> None:
    ops = FaultyOps()
    bl, _ = open_binlog(tmp_path, files=ops)
    bl.put(make_job(1))
    bl.write_pending()
    ops.fail_fsync = EIO
    with pytest.raises(BinlogWriteError, match="fsync failed"):
        bl.fsync()
    assert bl.failed and not bl.put(make_job(2))
    bl.close()


def test_bounded_disk_under_churn(tmp_path: Path) -> None:
    """Long-lived delayed (re-released many times) and buried jobs must not pin segments."""
    rng = random.Random(1)
    clock = ManualClock()
    fs = 16 * 1024
    bl, _ = open_binlog(tmp_path, clock, file_size=fs, fsync_ms=50)
    live: dict[int, Job] = {}
    next_id = 1

    def put(body: bytes, state: int = READY) -> Job:
        nonlocal next_id
        j = make_job(next_id, body, clock=clock)
        next_id += 1
        if state == DELAYED:
            j.state, j.delay, j.deadline = DELAYED, 3600, clock.now() + 3600
        assert bl.put(j)
        live[j.id] = j
        return j

    sticky = [put(b"d" * 60, DELAYED) for _ in range(20)]
    buried = [put(b"b" * 60) for _ in range(10)]
    for j in buried:
        j.state, j.buries = BURIED, 1
        assert bl.update(j)
    churn: list[Job] = []
    peak_ratio = 0.0
    for step in range(20000):
        churn.append(put(bytes(rng.randrange(10, 400))))
        if len(churn) > 40:
            j = churn.pop(rng.randrange(len(churn)))
            bl.delete(j)
            del live[j.id]
        if step % 5 == 0:
            j = sticky[rng.randrange(len(sticky))]
            j.releases += 1
            j.deadline = clock.now() + 3600
            assert bl.update(j)
        bl.write_pending()
        if step % 7 == 0:
            clock.advance(0.01)
        deadline = bl.sync_deadline()
        if deadline is not None and deadline <= clock.now():
            bl.fsync()
            bl.write_pending()
        live_est = sum(2 * fmt.FULL_BASE + len(j.tube.name) + len(j.body) for j in live.values())
        used = dir_bytes(tmp_path)
        assert used <= 2 * live_est + 3 * fs, (step, used, live_est)
        peak_ratio = max(peak_ratio, (used - 2 * fs) / live_est)
    assert bl.records_migrated > 0
    assert bl.oldest_index > 1
    print(
        f"peak (disk - 2 segments) / live = {peak_ratio:.2f}, migrated {bl.records_migrated}, "
        f"segments {bl.oldest_index}..{bl.current_index}"
    )
    bl.close()
    bl, res = open_binlog(tmp_path, clock, file_size=fs)
    got = {j.id: j for j in res.jobs}
    assert sorted(got) == sorted(live)
    assert [j.id for j in res.jobs if j.state == BURIED] == [j.id for j in buried]
    for j in sticky:
        assert got[j.id].releases == j.releases
        assert got[j.id].state == DELAYED
    bl.close()


def test_journal_stats_snapshot(tmp_path: Path) -> None:
    """``stats()`` is what `stats` and /metrics show: counters move with the writes and
    fsyncs, a failure is reported with its error, and without -b everything is zero."""
    ops = FaultyOps()
    bl, _ = open_binlog(tmp_path, files=ops, file_size=1 << 16, fsync_ms=50)
    before = bl.stats()
    assert before.current_index >= before.oldest_index >= 1
    assert before.max_size == 1 << 16 and before.last_error == ""
    assert before.disk_bytes >= 1 << 16  # the current segment is preallocated
    for i in range(1, 11):
        assert bl.put(make_job(i))
    bl.write_pending()
    bl.fsync()
    after = bl.stats()
    assert after.records_written == before.records_written + 10
    assert after.bytes_written >= before.bytes_written + 10 * fmt.FULL_BASE
    assert after.fsync_count == before.fsync_count + 1
    assert after.replay_duration >= 0.0 and not after.space_short
    ops.fail_fsync = EIO
    bl.put(make_job(11))
    bl.write_pending()
    with pytest.raises(BinlogWriteError):
        bl.fsync()
    failed = bl.stats()
    assert "Input/output error" in failed.last_error
    assert failed.fsync_count == after.fsync_count
    bl.close()  # a failed binlog closes without writing
    assert NullJournal().stats() == JournalStats()


def test_binlog_files_are_private_to_the_owner(tmp_path: Path) -> None:
    """Job bodies may be secrets: no binlog file is readable or writable by group or others,
    whatever the umask."""
    old_umask = os.umask(0)
    try:
        bl, _ = open_binlog(tmp_path, file_size=4096)
        for i in range(1, 6):  # several segments
            assert bl.put(make_job(i, b"secret" * 200))
            bl.write_pending()
        bl.close()
    finally:
        os.umask(old_umask)
    files = list(tmp_path.iterdir())  # segments and the lock file
    assert len(files) >= 2
    for p in files:
        assert p.stat().st_mode & 0o077 == 0, f"{p.name}: {oct(p.stat().st_mode)}"


def test_close_leaves_no_file_descriptor_open(tmp_path: Path) -> None:
    """A server that opens and closes its binlog (tests, the importer, a restart in one
    process) must not leak the lock or segment descriptors."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.exists():
        pytest.skip("needs /proc")
    before = len(list(fd_dir.iterdir()))
    for round_ in range(3):
        bl, _ = open_binlog(tmp_path, file_size=4096)
        for i in range(1, 6):
            assert bl.put(make_job(round_ * 10 + i, b"x" * 1000))
            bl.write_pending()
        bl.fsync()
        bl.close()
    assert len(list(fd_dir.iterdir())) == before
