"""The durability promises of the README, checked on the real ``python -m beanstalk_py`` process.

Every test starts the server with the real flags (``-b``, ``-s``, ``-f``, ``-F``, ``-u``), kills
or stops it, starts it again on the same directory and looks only at what a client sees:
replies, ``stats``/``stats-job``, ``/metrics``, the exit status and the log. The full-disk tests
mount a 2 MB tmpfs (root only; skipped with the reason otherwise).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.requirements import require
from support.servers import ServerProcess, ours_argv, ours_env
from support.syncclient import Conn, http_get

SEGMENT = 262144  # -s: a 2 MB disk holds about seven segments
BODY = 60_000  # four jobs per segment
DISK_FULL_LOG = "puts answer OUT_OF_MEMORY until disk space is freed"


def start(bdir: Path, *flags: str) -> ServerProcess:
    return ServerProcess(ours_argv("-b", str(bdir), *flags), env=ours_env()).start()


def kill9(srv: ServerProcess) -> None:
    srv.send_signal(signal.SIGKILL)
    assert srv.stop() == -signal.SIGKILL


def stop(srv: ServerProcess) -> str:
    """SIGTERM; the server must exit 0. Returns what it logged."""
    assert srv.stop() == 0, srv.output()
    return srv.output()


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Poll ``check`` until true; returns the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic()


def body_of(i: int) -> bytes:
    return b"%06d" % i + b"b" * (BODY - 6)


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 2 MB tmpfs; the binlog goes to ``small_disk / "b"``."""
    require(os.geteuid() == 0, "root, to mount a small tmpfs for the full-disk tests")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    require(res.returncode == 0, f"mount -t tmpfs (refused: {res.stderr.strip()})")
    try:
        (mnt / "b").mkdir()
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(c: Conn, limit: int = 60) -> list[int]:
    """Put 60 KB jobs until the disk is full; returns the ids acknowledged INSERTED."""
    ids = []
    for i in range(limit):
        reply = c.put(body_of(i))
        if reply == b"OUT_OF_MEMORY":
            break
        assert reply.startswith(b"INSERTED "), reply
        ids.append(int(reply.split()[1]))
    else:
        pytest.fail(f"{limit} puts of {BODY} bytes all INSERTED on a 2 MB disk")
    assert len(ids) >= 20, "the disk filled up far too early"
    # Still full: more puts are refused, not acknowledged and dropped.
    for i in range(3):
        assert c.put(body_of(1000 + i)) == b"OUT_OF_MEMORY"
    return ids


def check_all_there(c: Conn, ids: list[int], first: int = 0) -> None:
    """Every job in ``ids`` (the ``first``-th put onwards) is there with its body."""
    for n, job_id in enumerate(ids, start=first):
        reply, body = c.cmd(b"peek %d" % job_id)
        assert reply == b"FOUND %d %d" % (job_id, BODY), f"acknowledged job {job_id}: {reply!r}"
        assert body == body_of(n)


def test_every_inserted_job_survives_kill9_on_a_full_disk(small_disk: Path) -> None:
    bdir = small_disk / "b"
    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            ids = fill(c)
    finally:
        kill9(srv)
    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            check_all_there(c, ids)
            assert c.stats()["current-jobs-ready"] == str(len(ids))
    finally:
        srv.stop()


def test_restart_on_a_full_disk_serves_the_jobs_and_puts_resume_after_deletes(
    small_disk: Path,
) -> None:
    bdir = small_disk / "b"
    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            ids = fill(c)
    finally:
        stop(srv)

    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            # replayed and serving: stats, peek, reserve, stats-job
            assert c.stats()["current-jobs-ready"] == str(len(ids))
            check_all_there(c, ids)
            reply, body = c.cmd(b"reserve-with-timeout 0")
            assert reply == b"RESERVED %d %d" % (ids[0], BODY) and body == body_of(0)
            assert c.stats_job(ids[0])["state"] == "reserved"
            # no room for a new segment: puts are refused, nothing is acknowledged
            assert c.put(body_of(2000)) == b"OUT_OF_MEMORY"
            # the room for deletes was reserved first
            deleted = ids[:8]
            for job_id in deleted:
                assert c.cmd(b"delete %d" % job_id)[0] == b"DELETED"
            # the deletes free whole segments: puts work again, without a restart
            inserted: list[bytes] = []

            def put_goes_in() -> bool:
                reply = c.put(body_of(3000))
                assert reply == b"OUT_OF_MEMORY" or reply.startswith(b"INSERTED "), reply
                if reply.startswith(b"INSERTED "):
                    inserted.append(reply)
                return bool(inserted)

            until(put_goes_in, "a put to succeed after deletes freed space")
            new_id = int(inserted[0].split()[1])
            assert new_id > ids[-1]
        log = stop(srv)
    finally:
        srv.stop()
    assert "Traceback" not in log
    assert log.count(DISK_FULL_LOG) == 1, log  # said once, not once per refused put

    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            for job_id in deleted:
                assert c.cmd(b"peek %d" % job_id)[0] == b"NOT_FOUND"
            check_all_there(c, ids[8:], first=8)
            assert c.cmd(b"peek %d" % new_id) == (b"FOUND %d %d" % (new_id, BODY), body_of(3000))
    finally:
        srv.stop()


def test_restart_with_a_filler_file_refuses_puts_until_it_is_removed(small_disk: Path) -> None:
    bdir = small_disk / "b"
    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            ids = [int(c.put(body_of(i)).split()[1]) for i in range(5)]
    finally:
        stop(srv)
    # Someone else takes the disk while the server is down, leaving less than a segment.
    filler = take_all_space(small_disk, leave=64 * 1024)

    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            assert c.stats()["current-jobs-ready"] == "5"
            assert c.put(b"x") == b"OUT_OF_MEMORY"
            assert c.cmd(b"delete %d" % ids[0])[0] == b"DELETED"
            assert c.put(b"x") == b"OUT_OF_MEMORY"  # one small segment freed nothing
            filler.unlink()
            until(lambda: c.put(b"back").startswith(b"INSERTED "), "puts after space returned")
            assert c.stats()["current-jobs-ready"] == "5"  # 4 left + the new one
        log = stop(srv)
    finally:
        srv.stop()
    assert "Traceback" not in log
    assert log.count(DISK_FULL_LOG) == 1, log


def test_not_one_free_block_at_restart_a_delete_stops_the_server_unacknowledged(
    small_disk: Path,
) -> None:
    bdir = small_disk / "b"
    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            ids = [int(c.put(b"job%d" % i).split()[1]) for i in range(3)]
    finally:
        stop(srv)
    filler = take_all_space(small_disk)
    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            assert c.cmd(b"peek %d" % ids[0]) == (b"FOUND %d 4" % ids[0], b"job0")
            assert c.stats()["current-jobs-ready"] == "3"
            assert c.put(b"x") == b"OUT_OF_MEMORY"
            # nowhere to log the delete: no DELETED may reach the client
            c.sock.sendall(b"delete %d\r\n" % ids[0])
            with pytest.raises(ConnectionError):
                c.line()
        assert srv.proc is not None and srv.proc.wait(10) == 1
    finally:
        srv.stop()
    filler.unlink()
    srv = start(bdir, "-s", str(SEGMENT))
    try:
        with Conn(srv.port) as c:
            assert c.cmd(b"peek %d" % ids[0])[0] == b"FOUND %d 4" % ids[0]
            assert c.cmd(b"delete %d" % ids[0])[0] == b"DELETED"
    finally:
        srv.stop()


def take_all_space(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with a file of its own, leaving about ``leave`` bytes free."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(st.f_bavail * st.f_frsize - leave, 4096))
    finally:
        os.close(fd)
    return filler


# --------------------------------------------------------------------------- start-up errors


@pytest.mark.skipif(os.geteuid() != 0, reason="a directory nobody may use needs -u (root)")
@pytest.mark.parametrize(
    ("owned_by_nobody", "mode"),
    [
        (True, 0o300),  # the lock file can be created, the directory not listed (replay)
        (False, 0o755),  # the lock file cannot be created (not "in use by another process")
    ],
)
def test_unusable_binlog_dir_exits_1_with_one_line_and_no_traceback(
    owned_by_nobody: bool, mode: int
) -> None:
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="bq-dur-"))  # not tmp_path: its parents are private
    try:
        top.chmod(0o755)
        bdir = top / "b"
        bdir.mkdir()
        if owned_by_nobody:
            os.chown(bdir, nobody.pw_uid, nobody.pw_gid)
        bdir.chmod(mode)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "beanstalk_py",
                "-l",
                "127.0.0.1",
                "-p",
                "0",
                "-u",
                "nobody",
                "-b",
                str(bdir),
            ],
            env=ours_env(),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        shutil.rmtree(top, ignore_errors=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bdir) in lines[0] and "Permission denied" in lines[0], out


# --------------------------------------------------------------------------- kick


def test_kicked_jobs_come_back_ready_after_kill9(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        with Conn(srv.port) as c:
            buried = [int(c.put(b"bury%d" % i).split()[1]) for i in range(2)]
            for job_id in buried:
                assert c.cmd(b"reserve-job %d" % job_id)[0].startswith(b"RESERVED ")
                assert c.cmd(b"bury %d 5" % job_id)[0] == b"BURIED"
            delayed = [int(c.put(b"later%d" % i, delay=3600).split()[1]) for i in range(2)]
            assert c.cmd(b"kick 1")[0] == b"KICKED 1"  # the first buried job
            assert c.cmd(b"kick-job %d" % buried[1])[0] == b"KICKED"
            assert c.cmd(b"kick 1")[0] == b"KICKED 1"  # no buried left: the first delayed
            assert c.cmd(b"kick-job %d" % delayed[1])[0] == b"KICKED"
            for job_id in buried + delayed:
                assert c.stats_job(job_id)["state"] == "ready"
    finally:
        kill9(srv)
    srv = start(tmp_path)
    try:
        with Conn(srv.port) as c:
            for job_id in buried + delayed:
                st = c.stats_job(job_id)
                assert (st["state"], st["kicks"]) == ("ready", "1"), (job_id, st)
            assert c.stats()["current-jobs-ready"] == "4"
    finally:
        srv.stop()


# --------------------------------------------------------------------------- fsync policy

_FSYNCS = re.compile(rb"\nbeanstalkd_binlog_fsync_duration_seconds_count (\S+)\n")


def fsyncs(port: int) -> int:
    """fsyncs the running server made since it started serving (its /metrics histogram)."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    m = _FSYNCS.search(body)
    assert m is not None, "no fsync histogram in /metrics"
    return int(float(m[1]))


def test_f_ms_fsyncs_an_idle_write_within_ms_and_at_most_once_per_ms(tmp_path: Path) -> None:
    # MS is large so that the second put surely lands inside the interval even on a busy
    # machine: then only the server's timer can sync it (nothing is written after it).
    ms = 1000
    srv = start(tmp_path, "-f", str(ms))
    try:
        with Conn(srv.port) as c:
            before = fsyncs(srv.port)
            sent = time.monotonic()
            assert c.put(b"one").startswith(b"INSERTED ")
            # the previous fsync (start-up) is long past: this write is synced at once
            until(lambda: fsyncs(srv.port) >= before + 1, "an fsync after the first put", 5)
            # a second write right after must wait for the interval, then be synced although
            # nothing else is written (no later write triggers it)
            assert c.put(b"two").startswith(b"INSERTED ")
            second = until(lambda: fsyncs(srv.port) >= before + 2, "the timed fsync", 5)
            # at most one fsync per MS, and the write waited about MS, not for a later write
            assert ms / 1000 - 0.05 <= second - sent <= ms / 1000 + 2.0, second - sent
            time.sleep(0.3)
            assert fsyncs(srv.port) == before + 2  # idle: nothing more to sync
    finally:
        srv.stop()


# A plain command line of beanstalkd's short flags is read by entry.py, anything with a long
# option by cli.py: -F must work on both paths, and after -f (the later flag wins).
@pytest.mark.parametrize(
    "flags",
    [("-F",), ("-f", "50", "-F"), ("--no-fsync",), ("-f", "50", "--no-fsync")],
    ids=["F", "f-then-F", "no-fsync", "f-then-no-fsync"],
)
def test_capital_f_never_fsyncs(tmp_path: Path, flags: tuple[str, ...]) -> None:
    srv = start(tmp_path, *flags)
    try:
        with Conn(srv.port) as c:
            for i in range(5):
                assert c.put(b"j%d" % i).startswith(b"INSERTED ")
                time.sleep(0.1)  # well past the default 50 ms interval each time
            time.sleep(0.3)
            assert fsyncs(srv.port) == 0
    finally:
        srv.stop()


def test_damage_in_the_binlog_is_reported_once_and_the_other_jobs_come_back(
    tmp_path: Path,
) -> None:
    srv = start(tmp_path)
    try:
        with Conn(srv.port) as c:
            ids = [int(c.put(b"job-%d-" % i + b"q" * 200).split()[1]) for i in range(3)]
    finally:
        kill9(srv)
    segment = next(p for p in tmp_path.glob("binlog.*") if b"job-0-" in p.read_bytes())
    data = bytearray(segment.read_bytes())
    hit = data.index(b"job-0-")
    data[hit] ^= 0xFF  # the first job's record fails its CRC; the others are intact
    segment.write_bytes(bytes(data))
    srv = start(tmp_path)
    try:
        with Conn(srv.port) as c:
            assert c.cmd(b"peek %d" % ids[0])[0] == b"NOT_FOUND"
            for job_id in ids[1:]:
                assert c.cmd(b"peek %d" % job_id)[0].startswith(b"FOUND")
    finally:
        srv.stop()
    warnings = [line for line in srv.output().splitlines() if "damage" in line.lower()]
    assert len(warnings) == 1, srv.output()
