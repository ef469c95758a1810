"""Helpers for the binlog unit tests: fake tubes/jobs, a fault-injecting FileOps."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from beanstalk_py.binlog import Binlog, OsFileOps
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.job import Job
from beanstalk_py.core.tube import Tube

TUBES: dict[str, Tube] = {}


def make_job(
    job_id: int,
    body: bytes = b"hello",
    *,
    tube: str = "default",
    pri: int = 10,
    delay: int = 0,
    ttr: int = 60,
    clock: ManualClock | None = None,
) -> Job:
    t = TUBES.setdefault(tube, Tube(tube))
    created = clock.wall() if clock is not None else 1_700_000_000.0
    return Job(job_id, t, pri, delay, ttr, body + b"\r\n", created)


class FaultyOps(OsFileOps):
    """Real files, with switches that make one kind of call fail."""

    __slots__ = (
        "calls",
        "fail_create",
        "fail_fsync",
        "fail_prealloc",
        "fail_prealloc_from",
        "fail_write",
        "writes",
    )

    def __init__(self) -> None:
        self.fail_prealloc: int | None = None  # errno
        self.fail_prealloc_from = 0  # only preallocations of at least this many bytes fail
        self.fail_create: int | None = None
        self.fail_write: int | None = None
        self.fail_fsync: int | None = None
        self.writes = 0
        self.calls: list[str] = []

    def create(self, path: Path) -> int:
        if self.fail_create is not None:
            raise OSError(self.fail_create, os.strerror(self.fail_create))
        return super().create(path)

    def preallocate(self, fd: int, length: int) -> None:
        if self.fail_prealloc is not None and length >= self.fail_prealloc_from:
            raise OSError(self.fail_prealloc, os.strerror(self.fail_prealloc))
        super().preallocate(fd, length)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        self.writes += 1
        if self.fail_write is not None:
            raise OSError(self.fail_write, os.strerror(self.fail_write))
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self.calls.append("fsync")
        if self.fail_fsync is not None:
            raise OSError(self.fail_fsync, os.strerror(self.fail_fsync))
        super().fsync(fd)


ENOSPC = errno.ENOSPC
EIO = errno.EIO


def open_binlog(
    d: Path,
    clock: ManualClock | None = None,
    *,
    file_size: int = 64 * 1024,
    fsync_ms: int | None = 50,
    max_job_size: int = 65535,
    files: OsFileOps | None = None,
) -> tuple[Binlog, Any]:
    """Open and replay; returns (binlog, replay result)."""
    bl = Binlog.open(
        d,
        file_size=file_size,
        fsync_ms=fsync_ms,
        clock=clock or ManualClock(),
        max_job_size=max_job_size,
        files=files,
    )
    return bl, bl.replay()


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.name.startswith("binlog."))


def segment_files(d: Path) -> list[Path]:
    out = [p for p in d.iterdir() if p.name.startswith("binlog.") and p.name[7:].isdigit()]
    return sorted(out, key=lambda p: int(p.name[7:]))
