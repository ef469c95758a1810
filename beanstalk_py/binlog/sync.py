"""Fsync policy and the one piece of the binlog shared with a worker thread.

Everything in the binlog runs on the event-loop thread except ``SyncTracker.sync()``, which the
server may run in a worker thread (``-f MS``) while the loop keeps buffering and writing the
next batch. The two share only what ``lock`` guards: the set of files written but not synced,
the written/synced batch numbers, the directory-change generations, and the decision to close
a file's fd (a file being fsynced is never closed under the syncer's feet).

Policy (``fsync_ms``): ``None`` (``-F``) never syncs; otherwise written data is synced at once
if the previous fsync is at least MS old, else when it becomes MS old, so there is at most one
fsync per MS and no write waits much more than MS (``-f 0`` syncs every batch: the server then
holds the replies until ``sync()`` covered their batch).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

    from beanstalk_py.binlog.fileops import FileOps
    from beanstalk_py.core.clock import Clock

log = logging.getLogger("beanstalk_py.binlog")


class SyncedFile(Protocol):
    """A segment as the tracker sees it (``segments.Segment``)."""

    path: Path
    fd: int | None
    busy: int  # fsyncs in progress on fd
    close_pending: bool
    unlinked: bool


class SyncTracker:
    """Which writes are durable: batch numbers, unsynced files, directory generations."""

    def __init__(self, directory: Path, fsync_ms: int | None, clock: Clock, files: FileOps) -> None:
        self.directory = directory
        self.fsync_ms = fsync_ms
        self.clock = clock
        self.files = files
        self.lock = threading.Lock()
        self._idle = threading.Condition(self.lock)  # notified when a sync() ends
        self.written_seq = 0
        self.synced_seq = 0
        self.head_seq = 0  # the last write batch that wrote a segment header
        self.unsynced: set[SyncedFile] = set()
        self.first_unsynced: float | None = None
        self.last_sync = float("-inf")
        self.syncing = 0
        self.dir_gen = 0
        self.dir_synced_gen = 0
        self.fsync_count = 0

    def durable_seq(self) -> int:
        """The last batch that survives a power loss (every written one under ``-F``)."""
        return self.synced_seq if self.fsync_ms is not None else self.written_seq

    def durable_dir_gen(self) -> int:
        """The last directory change (create, unlink) that survives a power loss."""
        return self.dir_synced_gen if self.fsync_ms is not None else self.dir_gen

    def written(self, files: Iterable[SyncedFile], wrote_header: bool) -> int:
        """A batch reached the files: returns its number."""
        with self.lock:
            seq = self.written_seq = self.written_seq + 1
            if wrote_header:
                self.head_seq = seq
            if self.fsync_ms is not None:
                self.unsynced.update(files)
                if self.first_unsynced is None:
                    self.first_unsynced = self.clock.now()
        return seq

    def dir_changed(self) -> None:
        """A file was created or removed: the next sync covers the directory too."""
        with self.lock:
            self.dir_gen += 1
            if self.fsync_ms is not None and self.first_unsynced is None:
                self.first_unsynced = self.clock.now()

    def deadline(self, backlog: bool) -> float | None:
        """Monotonic time by which ``sync()`` should run, or None (nothing unsynced, or -F).

        ``backlog``: dead segments wait for a new header's floor to be durable; sync at once."""
        if self.fsync_ms is None:
            return None
        first = self.first_unsynced
        if first is None:
            return None
        if backlog and self.head_seq > self.synced_seq:
            return first
        return max(first, self.last_sync + self.fsync_ms / 1000.0)

    def sync(self) -> tuple[int, int]:
        """fsync every file written since the last call, and the directory if it changed.

        Returns ``(synced batch, synced directory generation or 0)``; raises ``OSError``
        after the bookkeeping (the caller decides what a failure means)."""
        with self.lock:
            files = list(self.unsynced)
            self.unsynced.clear()
            for f in files:
                f.busy += 1
            seq = self.written_seq
            dir_gen = self.dir_gen if self.dir_gen > self.dir_synced_gen else 0
            self.first_unsynced = None
            self.last_sync = self.clock.now()
            self.syncing += 1
        ok = False
        try:
            for f in files:
                if f.fd is not None and not f.unlinked:
                    self.files.fsync(f.fd)
            if dir_gen:
                self.files.fsync_dir(self.directory)
            ok = True
        finally:
            with self.lock:
                self.syncing -= 1
                self._idle.notify_all()
                for f in files:
                    f.busy -= 1
                    self._maybe_close_locked(f)
                if ok:
                    self.synced_seq = max(self.synced_seq, seq)
                    self.dir_synced_gen = max(self.dir_synced_gen, dir_gen)
                    self.fsync_count += 1
                synced = self.synced_seq
        return synced, dir_gen

    def wait_idle(self) -> None:
        """Block until no ``sync()`` runs (the loop thread syncing on the spot)."""
        with self.lock:
            while self.syncing:
                self._idle.wait()

    def close_when_idle(self, f: SyncedFile) -> None:
        """Close ``f``'s fd now, or once the syncs that cover it are done."""
        with self.lock:
            f.close_pending = True
            self._maybe_close_locked(f)

    def _maybe_close_locked(self, f: SyncedFile) -> None:
        if f.close_pending and f.busy == 0 and f.fd is not None:
            if f in self.unsynced and not f.unlinked:
                return  # the next sync() still has to cover it
            self.unsynced.discard(f)
            fd = f.fd
            f.fd = None
            try:
                self.files.close(fd)
            except OSError as e:
                log.warning("cannot close %s: %s", f.path, e)
