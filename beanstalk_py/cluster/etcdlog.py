"""The replicated log: one etcd key per batch, written only under the current epoch.

Keys under ``/PREFIX/``:

* ``log/<seq:020d>`` -- batch ``seq`` (1, 2, 3, ...). The value is ``b"BQL1"``, the epoch of
  the leader that wrote it (8 bytes, big endian) and the batch bytes, which this layer treats as
  opaque (the engine puts its binlog-framed records there).
* ``meta/first`` -- the lowest seq still kept (decimal); absent means 1. Written by compaction.
* ``leader`` -- the leader key (leadership.py); its create revision is the epoch.

Invariants, enforced by etcd in the one transaction that writes a batch:

* a batch is written only while ``leader``'s create revision equals the writer's epoch
  (fencing: a deposed leader's late write is refused, however late it arrives);
* ``log/<seq>`` is written at most once (create revision == 0), so a retry after a timeout
  cannot duplicate or overwrite; ``append`` recognises its own earlier success by the bytes;
* ``log/<seq-1>`` exists when ``seq`` > 1 is written, so the log has no holes above
  ``meta/first`` (compaction never deletes the newest key).

Readers get batches in seq order, each once: ``read_from`` pages through the keys at one
revision, ``watch_from`` follows a watch from a revision and re-establishes it from the last
seen revision when it breaks, and ``follow`` combines both and falls back to paging when etcd's
history was compacted under it. One append in flight at a time per writer: the caller batches
(concurrent transactions from one client commit in any order).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from beanstalk_py.cluster.client import (
    EtcdClient,
    EtcdRequestTooLarge,
    EtcdUnavailable,
    KeyValue,
    RevisionCompacted,
    WatchBroken,
    cmp_create_revision,
    cmp_exists,
    op_get,
    op_put,
)

MAGIC = b"BQL1"
_HEADER = struct.Struct(">4sQ")
# etcd's default --max-request-bytes is 1.5 MiB for the whole request (key, value, compares
# and framing); keep a margin for everything that is not the batch.
MAX_BATCH_BYTES = 1536 * 1024 - 4096
# A catch-up page of this many keys stays below the 64 MiB receive limit even when every batch
# is at MAX_BATCH_BYTES.
PAGE_KEYS = 32


class LogError(Exception):
    pass


class Fenced(LogError):
    """The write was refused because another leader's epoch is current (or wrote ``seq``)."""


class SequenceGap(LogError):
    """``seq - 1`` is not in the log: the writer's idea of the log end is wrong."""


class LogTruncated(LogError):
    """The batches asked for were removed by compaction; the reader must start over from a
    full copy (``first`` is the lowest seq still kept)."""

    def __init__(self, wanted: int, first: int) -> None:
        super().__init__(f"log batch {wanted} was compacted away; the log starts at {first}")
        self.wanted = wanted
        self.first = first


class BatchTooLarge(LogError):
    pass


@dataclass(frozen=True)
class LogEntry:
    seq: int
    epoch: int
    batch: bytes
    revision: int  # etcd mod revision of the key (resume point for watches)


def encode_value(epoch: int, batch: bytes) -> bytes:
    return _HEADER.pack(MAGIC, epoch) + batch


def decode_value(value: bytes) -> tuple[int, bytes]:
    if len(value) < _HEADER.size:
        raise LogError("log value shorter than its header")
    magic, epoch = _HEADER.unpack_from(value)
    if magic != MAGIC:
        raise LogError(f"log value has unknown format {magic!r}")
    return int(epoch), value[_HEADER.size :]


class EtcdLog:
    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.root = f"/{prefix}/".encode()
        self.log_prefix = self.root + b"log/"
        self.log_end = self.root + b"log0"  # '0' follows '/': the end of the log/ range
        self.first_key = self.root + b"meta/first"
        self.leader_key = self.root + b"leader"
        self.last_read_revision = 0
        self.watch_restarts = 0  # broken watches re-established (observability, tests)

    def key(self, seq: int) -> bytes:
        return self.log_prefix + b"%020d" % seq

    def seq_of(self, key: bytes) -> int:
        return int(key[len(self.log_prefix) :])

    def _entry(self, kv: KeyValue) -> LogEntry:
        epoch, batch = decode_value(kv.value)
        return LogEntry(self.seq_of(kv.key), epoch, batch, kv.mod_revision)

    # ---- writing -----------------------------------------------------------------------------

    async def append(self, seq: int, batch: bytes, epoch: int, *, budget: float = 5.0) -> int:
        """Write batch ``seq`` under ``epoch``; return its etcd revision once committed.

        Raises ``Fenced`` (another epoch rules, or ``seq`` holds other bytes),
        ``SequenceGap``, ``BatchTooLarge``, or ``EtcdUnavailable`` (the outcome is unknown:
        do not acknowledge; the next leader reads whatever was committed).
        """
        if seq < 1:
            raise ValueError("log sequence numbers start at 1")
        value = encode_value(epoch, batch)
        if len(batch) > MAX_BATCH_BYTES:
            raise BatchTooLarge(f"batch of {len(batch)} bytes exceeds {MAX_BATCH_BYTES}")
        key = self.key(seq)
        compare = [cmp_create_revision(self.leader_key, epoch), cmp_create_revision(key, 0)]
        if seq > 1:
            compare.append(cmp_exists(self.key(seq - 1)))
        failure = [op_get(self.leader_key), op_get(key), op_get(self.key(seq - 1))]
        try:
            result = await self.client.txn(compare, [op_put(key, value)], failure, budget=budget)
        except EtcdRequestTooLarge as e:
            raise BatchTooLarge(str(e)) from e
        if result.succeeded:
            return result.revision
        leader, existing, prev = result.gets
        if existing:
            if existing[0].value == value:
                # An earlier attempt whose reply was lost: it committed under our epoch.
                return existing[0].mod_revision
            raise Fenced(f"log batch {seq} was written by another leader")
        if not leader or leader[0].create_revision != epoch:
            current = leader[0].create_revision if leader else None
            raise Fenced(f"epoch {epoch} is no longer current (leader epoch {current})")
        if seq > 1 and not prev:
            raise SequenceGap(f"log batch {seq - 1} is missing; cannot append {seq}")
        raise LogError("append refused for an unknown reason")  # pragma: no cover

    # ---- reading -----------------------------------------------------------------------------

    async def first_seq(self) -> int:
        kv, _ = await self.client.get(self.first_key)
        return int(kv.value) if kv is not None else 1

    async def last_seq(self) -> int:
        """The highest seq written (0 for an empty log).

        The log's keys are contiguous (an append needs its predecessor, compaction deletes a
        prefix), so the last is the first plus the count less one: an index count, cheap at
        any log size, where a descending read decodes every batch (client.range)."""
        first, count = await self.client.first_and_count(self.log_prefix, self.log_end)
        return self.seq_of(first) + count - 1 if first is not None else 0

    async def read_page(
        self, seq: int, *, limit: int = PAGE_KEYS, revision: int = 0
    ) -> tuple[list[LogEntry], bool, int]:
        """Up to ``limit`` batches from ``seq`` on: (entries, more, revision read at)."""
        kvs, more, rev = await self.client.range(
            self.key(seq), self.log_end, limit=limit, revision=revision, timeout=5.0
        )
        return [self._entry(kv) for kv in kvs], more, rev

    async def read_from(
        self, seq: int, *, limit: int = PAGE_KEYS
    ) -> AsyncGenerator[LogEntry, None]:
        """Every batch from ``seq`` to the end, in pages, consistent at one revision.

        The revision the pages were read at is left in ``self.last_read_revision`` (watch
        from +1).
        Raises ``LogTruncated`` if ``seq`` was compacted away.
        """
        first = await self.first_seq()
        if seq < first:
            raise LogTruncated(seq, first)
        revision = 0
        nxt = seq
        while True:
            try:
                entries, more, rev = await self.read_page(nxt, limit=limit, revision=revision)
            except RevisionCompacted:
                # The pinned revision was compacted between pages: carry on at the newest one
                # (compaction only removes keys below ``first``, which is checked again).
                first = await self.first_seq()
                if nxt < first:
                    raise LogTruncated(nxt, first) from None
                revision = 0
                continue
            revision = rev
            for e in entries:
                if e.seq != nxt:
                    first = await self.first_seq()
                    if nxt < first:
                        raise LogTruncated(nxt, first)
                    raise LogError(f"log hole: expected batch {nxt}, found {e.seq}")
                yield e
                nxt += 1
            if not more:
                self.last_read_revision = revision
                return

    async def watch_from(self, revision: int, next_seq: int) -> AsyncGenerator[LogEntry, None]:
        """Batches ``next_seq``, ``next_seq + 1``, ... as they are committed, watching from
        ``revision``. Re-establishes a broken watch from the last seen revision + 1; raises
        ``RevisionCompacted`` when that history is gone (``follow`` handles it)."""
        start = revision
        breaks = 0  # consecutive broken watches without a batch in between
        while True:
            try:
                async with contextlib.aclosing(
                    self.client.watch(self.log_prefix, self.log_end, start)
                ) as stream:
                    async for _, events in stream:
                        for ev in events:
                            if ev.deleted:
                                continue  # compaction of old batches
                            entry = self._entry(ev.kv)
                            if entry.seq < next_seq:
                                continue  # seen before the watch was re-established
                            if entry.seq != next_seq:
                                raise LogError(
                                    f"log hole: expected batch {next_seq}, got {entry.seq}"
                                )
                            yield entry
                            breaks = 0
                            next_seq += 1
                            start = entry.revision + 1
            except (WatchBroken, EtcdUnavailable):
                self.watch_restarts += 1
                breaks += 1
                if breaks % 3 == 0:
                    # A member cut off from the raft leader cancels every watch at once
                    # (hasleader) while its socket stays healthy: try the next member.
                    self.client.rotate()
                await asyncio.sleep(0.02 if breaks < 3 else 0.1)

    async def follow(self, after_seq: int, *, revision: int = 0) -> AsyncGenerator[LogEntry, None]:
        """Every batch after ``after_seq``, in order, forever.

        With ``revision`` (the etcd revision after which batch ``after_seq`` was seen, e.g.
        kept by a restarted follower) it watches from there first; otherwise, and whenever
        etcd's history no longer reaches the watch's position, it reads the log in pages and
        then watches from the revision of the last page. Raises ``LogTruncated`` when batch
        ``after_seq + 1`` was compacted away.
        """
        nxt = after_seq + 1
        watch_from = revision
        while True:
            try:
                if not watch_from:
                    async with contextlib.aclosing(self.read_from(nxt)) as pages:
                        async for e in pages:
                            yield e
                            nxt = e.seq + 1
                    watch_from = self.last_read_revision + 1
                async with contextlib.aclosing(self.watch_from(watch_from, nxt)) as live:
                    async for e in live:
                        yield e
                        nxt = e.seq + 1
            except (RevisionCompacted, EtcdUnavailable):
                watch_from = 0
                await asyncio.sleep(0.05)
