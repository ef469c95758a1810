"""The leader's journal in cluster mode: the local binlog AND the etcd log, replies held for both.

``ReplicatedJournal`` sits on the engine's journal seam (core/journal.py) and on group commit's
``DurableJournal`` (shell/commit.py), in place of the local ``Binlog``:

* ``put``/``update``/``delete`` go to the local binlog first (with ``-b``; its refusal, a full
  disk, is the engine's ``OUT_OF_MEMORY`` as in single-node mode), then to a ``BatchRecorder``
  that keeps the same records in memory for etcd.
* ``write_pending`` (once per loop turn, before any reply of the turn leaves) writes the local
  records and numbers the turn (``written_seq``); it wakes the ``Shipper``.
* ``sync_async`` (group commit calls it instead of running ``fsync`` on a worker thread; in
  cluster mode *every* reply that follows a journaled change is held for it, as ``-f 0`` holds
  them) returns a future that resolves once the ``Shipper`` has committed every record of the
  turns written so far to etcd, after a local fsync when the ``-f`` policy says one is due;
  its result, that turn number, releases the replies. ``fsync`` is the same, blocking.

Invariants:
- No reply that acknowledges a change leaves before its records are written locally and
  committed in etcd under this leader's epoch (the append's compare on the leader key fences a
  deposed leader, and ``Leadership.append`` refuses once the lease may have lapsed).
- One etcd append in flight; the records of every turn written meanwhile share the next one
  (split at record boundaries into batches below etcd's request limit).
- Compaction (``request_snapshot``) happens at a round boundary: batches up to ``next_seq - 1``
  are committed, the live jobs are recorded again after everything recorded so far, and those
  batches are deleted only after the copies are committed, in one fenced transaction.
- Any append failure (fenced, not leader, etcd unreachable beyond the lease) is final for this
  journal: ``fsync`` raises from then on, group commit stops the server, and nothing after the
  failure is acknowledged (the node restarts as a follower, app/node.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from beanstalk_py.cluster.compaction import compact_log
from beanstalk_py.cluster.etcdlog import MAX_BATCH_BYTES
from beanstalk_py.core.journal import NULL_STATS, JournalStats
from beanstalk_py.replica.batch import BatchRecorder

if TYPE_CHECKING:
    from beanstalk_py.binlog import Binlog
    from beanstalk_py.cluster.etcdlog import EtcdLog
    from beanstalk_py.cluster.leadership import Leadership
    from beanstalk_py.core.clock import Clock
    from beanstalk_py.core.job import Job

log = logging.getLogger("beanstalk_py.cluster")

# A worker thread waiting for etcd gives up after this long: the lease (at most 60 s) has long
# lapsed by then, so the append can no longer be acknowledged anyway.
COMMIT_WAIT_LIMIT = 90.0
LINGER_MAX = 0.002  # seconds a busy shipper waits at most before taking the next batch
LINGER_MIN_RECORDS = 8  # "busy": the last append carried at least this many records


class ReplicationFailed(OSError):
    """The etcd log refused or lost an append: this node must not acknowledge any more."""


class Shipper:
    """Appends the recorded batches to the etcd log, one append in flight, on the loop."""

    def __init__(
        self,
        recorder: BatchRecorder,
        log_: EtcdLog,
        term: Leadership,
        next_seq: int,
        next_id: Callable[[], int],
        start_turn: int = 0,
        *,
        linger_max: float = LINGER_MAX,
    ) -> None:
        self.recorder = recorder
        self.linger_max = linger_max
        self.log = log_
        self.term = term
        self.next_seq = next_seq  # the etcd log's next batch number
        self.next_id = next_id  # the engine's next job id, carried in every batch header
        self.written_seq = start_turn  # the last loop turn whose records were handed over
        self.committed_seq = start_turn  # the last loop turn whose records are in etcd
        self.failed: BaseException | None = None
        self.appends = 0
        self.append_seconds = 0.0  # total time in etcd appends (/metrics)
        self.last_append_seconds = 0.0
        self.bytes_since_snapshot = 0  # batch bytes appended since the last compaction
        self._last_round = 0  # records the last append round carried
        self._taken = 0  # recorder.records when the last round took its batches
        self._released_at = 0  # recorder.records when the last round's commit landed
        # A lingering round: (records to wait for, the future that ends the wait)
        self._linger: tuple[int, asyncio.Future[None]] | None = None
        self.lingers = 0  # rounds that waited (tests, observability)
        self.linger_cut = 0  # of those, rounds that linger_max ended before all were back
        self.compactions = 0
        # compaction (``request_snapshot``): records FULL of every live job
        self._snapshot: Callable[[], None] | None = None
        self._cond = threading.Condition()
        # futures waiting on the loop for a turn to be committed: (turn, future)
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task  # its failure, if any, is already recorded

    def request_snapshot(self, record_live_jobs: Callable[[], None]) -> None:
        """Compact the etcd log: at the next round, ``record_live_jobs`` re-appends every
        live job after the records already taken, and once those batches are committed
        every batch before them is deleted (cluster/compaction.py)."""
        self._snapshot = record_live_jobs
        self._wake.set()

    def written(self, seq: int) -> None:
        """Loop thread: the records of turns up to ``seq`` are recorded; ship them."""
        self.written_seq = seq
        self._wake.set()
        linger = self._linger
        if linger is not None and self.recorder.records >= linger[0] and not linger[1].done():
            linger[1].set_result(None)

    async def _linger_for(self, records: int) -> None:
        """Wait until the recorder holds ``records`` records in all, or ``linger_max``."""
        if self.recorder.records >= records:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._linger = (records, fut)
        timer = loop.call_later(self.linger_max, _end_linger, fut)
        self.lingers += 1
        try:
            await fut
        finally:
            timer.cancel()
            self._linger = None
        if self.recorder.records < records:
            self.linger_cut += 1

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                if self._last_round >= LINGER_MIN_RECORDS:
                    # Busy: the clients released by the last commit are sending their next
                    # requests; waiting until as many records as that commit carried have
                    # come in (at most ``linger_max``) lets them share this append: fewer etcd
                    # calls per put, the CPU that bounds throughput here.
                    await self._linger_for(self._released_at + self._last_round)
                self._wake.clear()
                target = self.written_seq
                compact_upto = 0
                snapshot = self._snapshot
                if snapshot is not None:
                    # Every batch up to here is committed; the live jobs' copies follow
                    # whatever is recorded now, so nothing below them is needed any more.
                    self._snapshot = None
                    compact_upto = self.next_seq - 1
                    snapshot()
                    self.bytes_since_snapshot = 0
                batches = self.recorder.take_all(self.next_id(), MAX_BATCH_BYTES)
                carried = self.recorder.records - self._taken
                self._taken = self.recorder.records
                for batch in batches:
                    t0 = time.perf_counter()
                    await self.term.append(self.log, self.next_seq, batch)
                    self.last_append_seconds = time.perf_counter() - t0
                    self.append_seconds += self.last_append_seconds
                    self.appends += 1
                    self.next_seq += 1
                    self.bytes_since_snapshot += len(batch)
                self._last_round = carried
                # The clients this commit releases send their next requests from now on.
                self._released_at = self.recorder.records
                with self._cond:
                    self.committed_seq = max(self.committed_seq, target)
                    self._cond.notify_all()
                self._wake_waiters()
                if compact_upto > 0 and self.next_seq - 1 > compact_upto:
                    await compact_log(self.log, compact_upto, self.term.epoch)
                    self.compactions += 1
                    log.info("cluster: etcd log compacted through batch %d", compact_upto)
                if self.written_seq > target or self.recorder.pending:
                    self._wake.set()
        except asyncio.CancelledError:
            self._set_failed(ReplicationFailed("replication stopped"))
            raise
        except BaseException as exc:  # every failure ends acknowledgements
            log.error("cluster: etcd append failed, no longer acknowledging: %s", exc)
            self._set_failed(exc)

    def _set_failed(self, exc: BaseException) -> None:
        with self._cond:
            if self.failed is None:
                self.failed = exc
            self._cond.notify_all()
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        committed = self.committed_seq
        failed = self.failed
        keep = []
        for turn, fut in self._waiters:
            if fut.done():
                continue
            if failed is not None:
                fut.set_exception(ReplicationFailed(f"etcd log append failed: {failed}"))
            elif turn <= committed:
                fut.set_result(committed)
            else:
                keep.append((turn, fut))
        self._waiters = keep

    def when_committed(self, turn: int, fut: asyncio.Future[int]) -> None:
        """Loop thread: resolve ``fut`` with the committed turn once ``turn`` is committed
        (at once if it is), or fail it if appends failed."""
        self._waiters.append((turn, fut))
        self._wake_waiters()

    def wait_committed(self, seq: int) -> int:
        """Worker thread: block until turn ``seq`` is committed; raise if it never will be."""
        deadline = time.monotonic() + COMMIT_WAIT_LIMIT
        with self._cond:
            while self.committed_seq < seq:
                if self.failed is not None:
                    raise ReplicationFailed(f"etcd log append failed: {self.failed}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReplicationFailed("etcd log append did not complete in time")
                self._cond.wait(left)
            return self.committed_seq


def _end_linger(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ReplicatedJournal:
    """Journal + DurableJournal of a cluster leader; see the module docstring."""

    def __init__(
        self, local: Binlog | None, recorder: BatchRecorder, shipper: Shipper, clock: Clock
    ) -> None:
        self.local = local
        self.recorder = recorder
        self.shipper = shipper
        self.clock = clock
        # Turns are numbered on from group commit's numbering under the journal this one
        # replaces (``Shipper(start_turn=...)``): replies held for a new turn must never be
        # released by a number that belonged to the old journal's fsyncs.
        self.written_seq = shipper.written_seq

    # ---- core.journal.Journal --------------------------------------------------------

    def put(self, job: Job) -> bool:
        if self.local is not None and not self.local.put(job):
            return False
        return self.recorder.put(job)

    def update(self, job: Job) -> bool:
        if self.local is not None and not self.local.update(job):
            return False
        return self.recorder.update(job)

    def delete(self, job: Job) -> None:
        if self.local is not None:
            self.local.delete(job)
        self.recorder.delete(job)

    def stats(self) -> JournalStats:
        return self.local.stats() if self.local is not None else NULL_STATS

    # ---- shell.commit.DurableJournal ------------------------------------------------

    @property
    def pending(self) -> bool:
        return self.recorder.pending or (self.local is not None and self.local.pending)

    def write_pending(self) -> int:
        if self.local is not None:
            self.local.write_pending()
        self.written_seq += 1
        self.shipper.written(self.written_seq)
        return self.written_seq

    def sync_deadline(self) -> float | None:
        if self.shipper.committed_seq < self.written_seq:
            return self.clock.now()
        return self.local.sync_deadline() if self.local is not None else None

    def fsync(self) -> int:
        target = self.written_seq
        local = self.local
        if local is not None:
            due = local.sync_deadline()
            if due is not None and due <= self.clock.now():
                local.fsync()
        return self.shipper.wait_committed(target)

    def sync_async(self) -> asyncio.Future[int]:
        """Loop thread (group commit's ``start_fsync``): a future of the turn now durable.

        The local fsync runs on a worker thread only when the ``-f`` policy says it is due;
        otherwise nothing leaves the loop: the future resolves when the etcd commit lands."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        target = self.written_seq
        local = self.local
        due = local.sync_deadline() if local is not None else None
        if local is None or due is None or due > self.clock.now():
            self.shipper.when_committed(target, fut)
            return fut

        def local_done(synced: asyncio.Future[int]) -> None:
            exc = synced.exception()
            if exc is not None:
                fut.set_exception(exc)
            else:
                self.shipper.when_committed(target, fut)

        loop.run_in_executor(None, local.fsync).add_done_callback(local_done)
        return fut

    @property
    def gc_due(self) -> bool:
        return self.local is not None and bool(self.local.gc_due)
