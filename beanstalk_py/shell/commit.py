"""Group commit: one binlog write per loop turn, one fsync for many batches, held replies.

Invariants:
- A reply that reports a journaled change leaves only after its record was written (``commit``
  runs before any reply of the same flush is handed to the transport).
- With ``-f 0`` (``always_sync``) such a reply also waits for an fsync covering it: it is
  held here with the binlog sequence number it follows, and released in order once
  ``durable_seq`` reaches that number. Later replies of the same connection queue behind it.
- One fsync runs at a time, on a worker thread; the loop keeps reading meanwhile, and the
  batches written in the meantime share the next fsync.
- A failed write or fsync stops the server (``on_fail``): no reply may claim success.

The replies are the shell's state, not the protocol's: a held reply is bytes the session
already produced, waiting for the disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from beanstalk_py.core.clock import Clock
    from beanstalk_py.protocol.session import Session
    from beanstalk_py.shell.connection import Connection


class DurableJournal(Protocol):
    """What group commit needs of a journal beyond ``core.journal.Journal`` (``binlog.Binlog``)."""

    @property
    def pending(self) -> bool: ...  # records are buffered, not yet written

    def write_pending(self) -> int: ...  # write them; the batch's sequence number

    def sync_deadline(self) -> float | None: ...  # when the next fsync is due (-f N)

    def fsync(self) -> int: ...  # on a worker thread; the sequence number now durable

    @property
    def gc_due(self) -> bool: ...  # segments wait for an fsync to be removed


class GroupCommit:
    """The binlog side of ``Server.flush``: write, fsync, hold and release replies."""

    def __init__(
        self,
        clock: Clock,
        loop: Callable[[], Any],
        on_fail: Callable[[BaseException], None],
        connection_of: Callable[[Session], Connection | None],
    ) -> None:
        self.clock = clock
        self.connection_of = connection_of  # None once the connection is gone
        self._loop = loop  # returns the server's current loop (it moves off the early loop)
        self._on_fail = on_fail
        self.binlog: DurableJournal | None = None
        self.always_sync = False  # -f 0: every reply waits for its fsync
        self.written_seq = 0
        self.durable_seq = 0
        # -f 0: replies waiting for an fsync, per session: (binlog seq they follow, bytes)
        self.held: dict[Session, list[tuple[int, bytes]]] = {}
        self.syncing = False
        self._sync_timer: Any = None  # a TimerHandle (asyncio's, uvloop's or the early loop's)
        self._sync_future: Any = None  # the fsync running on a worker thread, if any
        self.failed = False
        self._sync_async: Callable[[], Any] | None = None

    def attach(self, binlog: DurableJournal | None, fsync_ms: int | None) -> None:
        self.binlog = binlog
        self.always_sync = binlog is not None and fsync_ms == 0
        # A journal whose durability arrives on the loop (cluster mode: the etcd commit)
        # offers ``sync_async()``, a future of the durable sequence number: no worker thread.
        self._sync_async = getattr(binlog, "sync_async", None)

    @property
    def pending(self) -> bool:
        """Records are waiting to be written (the flush is deferred to share one write)."""
        return self.binlog is not None and self.binlog.pending

    def unsynced(self) -> bool:
        """With -f 0: records written but not yet covered by an fsync."""
        return self.always_sync and self.written_seq > self.durable_seq

    def holds(self, sess: Session) -> bool:
        return sess in self.held

    def hold(self, sess: Session, data: bytes) -> None:
        self.held.setdefault(sess, []).append((self.written_seq, data))

    def forget(self, sess: Session) -> None:
        self.held.pop(sess, None)

    def commit(self) -> bool:
        """Write the binlog batch; on failure stop serving (no reply may claim success)."""
        binlog = self.binlog
        assert binlog is not None
        try:
            self.written_seq = binlog.write_pending()
        except OSError as exc:
            self._fail(exc)
            return False
        if binlog.sync_deadline() is not None and not self.always_sync:
            self.schedule_sync()
        return True

    def after_flush(self) -> None:
        if self.held and not self.syncing:
            self.start_fsync()

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        self._on_fail(exc)

    def schedule_sync(self) -> None:
        binlog = self.binlog
        if binlog is None:
            return
        deadline = binlog.sync_deadline()
        if deadline is None or self.syncing:
            return
        delay = deadline - self.clock.now()
        if delay <= 0:
            self.start_fsync()
        elif self._sync_timer is None:
            self._sync_timer = self._loop().call_later(delay, self._sync_timer_fired)

    def _sync_timer_fired(self) -> None:
        self._sync_timer = None
        self.schedule_sync()

    def cancel_timer(self) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None

    def start_fsync(self) -> None:
        assert self.binlog is not None
        self.syncing = True
        sync_async = self._sync_async
        if sync_async is not None:
            fut = sync_async()
        else:
            fut = self._loop().run_in_executor(None, self.binlog.fsync)
        fut.add_done_callback(self._fsync_done)
        self._sync_future = fut

    async def release_held(self) -> None:
        """At stop, -f 0 replies held for an fsync are in flight: sync, then send them."""
        import asyncio

        while self.held and not self.failed:
            if not self.syncing:
                self.start_fsync()
            # _fsync_done was added first, so it has run (and released) when this wakes up.
            await asyncio.wait([self._sync_future])

    def _fsync_done(self, fut: Any) -> None:
        self.syncing = False
        exc = fut.exception()
        if exc is not None:
            self._fail(exc)
            return
        self.durable_seq = max(self.durable_seq, fut.result())
        durable = self.durable_seq
        for sess, held in list(self.held.items()):
            conn = self.connection_of(sess)
            i = 0
            while i < len(held) and held[i][0] <= durable:
                i += 1
            if i and conn is not None and conn.transport is not None:
                conn.write(b"".join(chunk for _, chunk in held[:i]))
            del held[:i]
            if not held:
                del self.held[sess]
                if conn is not None:
                    conn.maybe_close()
        binlog = self.binlog
        assert binlog is not None
        if binlog.gc_due and not self.commit():
            return  # segment removal waited for this fsync; don't wait for the next put
        if self.held or (binlog.pending or self.written_seq > durable):
            if self.always_sync and self.held:
                self.start_fsync()
            else:
                self.schedule_sync()
