"""The file-system seam of the binlog.

Every system call the binlog makes goes through a ``FileOps`` object, so tests can make any one
of them fail (``ENOSPC`` from ``preallocate``, ``EIO`` from ``fsync``, a short ``pwrite``)
without a real full disk. ``OsFileOps`` is the production implementation.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Protocol


class FileOps(Protocol):
    def lock(self, path: Path) -> int:
        """Open/create ``path`` and take an exclusive non-blocking lock; return the fd.

        Raises ``BlockingIOError`` (only) when another process holds it; any other
        ``OSError`` means the file could not be opened."""
        ...

    def listdir(self, path: Path) -> list[str]: ...

    def read_file(self, path: Path) -> bytes: ...

    def read_head(self, path: Path, length: int) -> bytes:
        """The first ``length`` bytes of ``path`` (fewer if it is shorter)."""
        ...

    def write_file(self, path: Path, data: bytes) -> None:
        """Create/replace ``path`` with ``data`` and fsync it (for ``.broken`` copies)."""
        ...

    def truncate(self, path: Path, length: int) -> None: ...

    def create(self, path: Path) -> int:
        """Create a new segment file (must not exist), opened for writing; return the fd."""
        ...

    def preallocate(self, fd: int, length: int) -> None:
        """Reserve ``length`` bytes of disk for the file; raises OSError(ENOSPC) on a full disk."""
        ...

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int: ...

    def ftruncate(self, fd: int, length: int) -> None: ...

    def fsync(self, fd: int) -> None: ...

    def fsync_dir(self, path: Path) -> None: ...

    def close(self, fd: int) -> None: ...

    def unlink(self, path: Path) -> None: ...

    def rename(self, src: Path, dst: Path) -> None: ...


class OsFileOps:
    """Real files. ``preallocate`` uses ``posix_fallocate`` (glibc falls back to writing zeros
    where the file system has no native support), so ``ENOSPC`` shows up here, not later."""

    __slots__ = ()

    def lock(self, path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except PermissionError as e:
            # lockf reports a held lock as EACCES or EAGAIN; an unopenable file raised above
            os.close(fd)
            raise BlockingIOError(e.errno, e.strerror) from e
        except BaseException:
            os.close(fd)
            raise
        return fd

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def read_file(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def read_head(self, path: Path, length: int) -> bytes:
        with open(path, "rb") as f:
            return f.read(length)

    def write_file(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, path: Path, length: int) -> None:
        os.truncate(path, length)

    def create(self, path: Path) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def preallocate(self, fd: int, length: int) -> None:
        os.posix_fallocate(fd, 0, length)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)
