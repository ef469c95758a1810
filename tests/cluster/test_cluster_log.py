"""The replicated log against 3 real etcd members: append, read back, fencing, compaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from support.etcd import ClientFactory, EtcdCluster

from beanstalk_py.cluster.client import EtcdClient, RevisionCompacted, op_delete_range
from beanstalk_py.cluster.compaction import compact_log
from beanstalk_py.cluster.etcdlog import (
    MAX_BATCH_BYTES,
    BatchTooLarge,
    EtcdLog,
    Fenced,
    LogEntry,
    LogError,
    LogTruncated,
    SequenceGap,
)
from beanstalk_py.cluster.leadership import Election, Leadership

pytestmark = pytest.mark.timeout(60)


async def leader(client: EtcdClient, prefix: str, node: str = "a", **kw: Any) -> Leadership:
    return await Election(client, prefix, node, f"{node}:11300", **kw).campaign()


async def test_append_and_read_back_in_order(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    client = await etcd_client(etcd_shared)
    log = EtcdLog(client, prefix)
    term = await leader(client, prefix)
    assert await log.last_seq() == 0
    batches = [bytes([i % 256]) * (i * 37) + b"|%d" % i for i in range(1, 61)]
    for seq, batch in enumerate(batches, 1):
        await term.append(log, seq, batch)
    assert await log.last_seq() == 60
    # Small pages so the paging itself is exercised (60 keys, pages of 7).
    got = [e async for e in log.read_from(1, limit=7)]
    assert [e.seq for e in got] == list(range(1, 61))
    assert [e.batch for e in got] == batches
    assert {e.epoch for e in got} == {term.epoch}
    # A reader that already has 40 batches gets the rest only.
    assert [e.seq async for e in log.read_from(41, limit=7)] == list(range(41, 61))
    await term.resign()


async def test_catch_up_in_pages_while_the_leader_appends_then_watch_without_a_hole(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    """A follower that starts under load reads the log in pages while batches keep coming:
    every page is read at the first page's revision, and the watch starts right after it,
    so the batches appended meanwhile come through the watch, none missed."""
    client = await etcd_client(etcd_shared)
    log = EtcdLog(client, prefix)
    term = await leader(client, prefix)
    for seq in range(1, 21):
        await term.append(log, seq, b"b%d" % seq)
    got = []
    async with contextlib.aclosing(log.read_from(1, limit=7)) as pages:
        async for e in pages:
            got.append(e.seq)
            if e.seq in (3, 10):  # between pages: the leader goes on appending
                for _ in range(3):
                    seq += 1
                    await term.append(log, seq, b"b%d" % seq)
    assert got == list(range(1, 21))  # the log as it was at the first page
    assert seq == 26
    watched = await collect(log.watch_from(log.last_read_revision + 1, 21), 6, timeout=5)
    assert [e.seq for e in watched] == list(range(21, 27))
    # The same through follow(), which a restarted follower runs.
    for _ in range(3):
        seq += 1
        await term.append(log, seq, b"b%d" % seq)
    assert [e.seq for e in await collect(log.follow(0), seq)] == list(range(1, seq + 1))
    await term.resign()


async def test_retry_of_a_committed_append_is_idempotent(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    client = await etcd_client(etcd_shared)
    log = EtcdLog(client, prefix)
    term = await leader(client, prefix)
    rev1 = await log.append(1, b"first", term.epoch)
    rev2 = await log.append(2, b"second", term.epoch)
    # The same call again (as after a timeout whose reply was lost): success, same revision,
    # nothing written twice.
    assert await log.append(2, b"second", term.epoch) == rev2
    assert await log.append(1, b"first", term.epoch) == rev1
    # Other bytes at a written seq are another writer's batch: never overwritten.
    with pytest.raises(Fenced):
        await log.append(2, b"different", term.epoch)
    # No holes: batch 4 cannot precede batch 3.
    with pytest.raises(SequenceGap):
        await log.append(4, b"fourth", term.epoch)
    got = [(e.seq, e.batch) async for e in log.read_from(1)]
    assert got == [(1, b"first"), (2, b"second")]
    await term.resign()


async def test_append_with_an_old_epoch_is_refused(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    a = await etcd_client(etcd_shared)
    b = await etcd_client(etcd_shared, order=[1, 2, 0])
    log_a, log_b = EtcdLog(a, prefix), EtcdLog(b, prefix)
    # A long lease so A's own keepalive keeps succeeding: only the fence can stop it.
    term_a = await leader(a, prefix, "a", ttl=5)
    await term_a.append(log_a, 1, b"a1")
    # The leader key disappears (operator, or expiry seen by everyone but A) and B campaigns.
    await a.txn([], [op_delete_range(log_a.leader_key, log_a.leader_key + b"\0")])
    term_b = await leader(b, prefix, "b")
    assert term_b.epoch > term_a.epoch
    assert term_a.is_leader()  # A cannot know yet
    with pytest.raises(Fenced):
        await term_a.append(log_a, 2, b"a2")
    assert not term_a.is_leader(), "a fenced append must end the term at once"
    assert term_a.lost_reason == "append fenced by a newer epoch"
    # Even bypassing the local check, etcd refuses the old epoch.
    with pytest.raises(Fenced):
        await log_a.append(2, b"a2", term_a.epoch)
    await term_b.append(log_b, 2, b"b2")
    got = [(e.seq, e.batch, e.epoch) async for e in log_b.read_from(1)]
    assert got == [(1, b"a1", term_a.epoch), (2, b"b2", term_b.epoch)]
    await term_a.close()
    await term_b.resign()


async def test_batch_size_limit_and_large_catch_up_pages(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    client = await etcd_client(etcd_shared)
    log = EtcdLog(client, prefix)
    term = await leader(client, prefix)
    with pytest.raises(BatchTooLarge):
        await term.append(log, 1, b"x" * (MAX_BATCH_BYTES + 1))
    # The largest batch allowed fits in etcd's 1.5 MiB request limit.
    big = [bytes([65 + i]) * MAX_BATCH_BYTES for i in range(6)]
    for seq, batch in enumerate(big, 1):
        await term.append(log, seq, batch)
    # One page of 6 x 1.5 MiB = 9 MiB: over gRPC's default 4 MiB receive limit.
    entries, more, _ = await log.read_page(1, limit=6)
    assert not more
    assert [e.batch for e in entries] == big
    await term.resign()


async def collect(
    agen: AsyncGenerator[LogEntry, None], n: int, timeout: float = 10.0
) -> list[LogEntry]:
    out: list[LogEntry] = []
    async with contextlib.aclosing(agen) as it:
        async with asyncio.timeout(timeout):
            async for e in it:
                out.append(e)
                if len(out) == n:
                    return out
    return out


async def test_compaction_and_catch_up_after_it(
    etcd_fresh: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    client = await etcd_client(etcd_fresh)
    log = EtcdLog(client, prefix)
    term = await leader(client, prefix)
    revisions = {}
    for seq in range(1, 101):
        revisions[seq] = await term.append(log, seq, b"b%d" % seq)

    with pytest.raises(LogError):
        await compact_log(log, 100, term.epoch)  # never the newest batch
    rev = await compact_log(log, 60, term.epoch)
    assert rev > revisions[100]
    assert await log.first_seq() == 61
    assert await log.last_seq() == 100  # counted from the first kept batch
    assert await compact_log(log, 60, term.epoch) == 0  # again: nothing to do

    # A reader that stopped at 30 cannot continue: it must start from a full copy.
    with pytest.raises(LogTruncated) as info:
        [e async for e in log.read_from(31)]
    assert info.value.first == 61
    # A watch from before the compaction is refused by etcd (history is gone) ...
    with pytest.raises(RevisionCompacted):
        await collect(log.watch_from(revisions[30] + 1, 31), 1, timeout=5)
    # ... and so is a restarted follower's watch from where it stopped; follow() falls back
    # to reading the log in pages: LogTruncated for the follower at 30, the kept batches for
    # the one at 69, and then new batches through a watch.
    with pytest.raises(LogTruncated):
        await collect(log.follow(30, revision=revisions[30] + 1), 1, timeout=5)
    follower = asyncio.ensure_future(collect(log.follow(69, revision=revisions[69] + 1), 36))
    await asyncio.sleep(0.2)
    for seq in range(101, 106):
        await term.append(log, seq, b"b%d" % seq)
    got = await follower
    assert [e.seq for e in got] == list(range(70, 106))
    assert [e.batch for e in got] == [b"b%d" % s for s in range(70, 106)]

    # A deposed leader cannot compact.
    other = await etcd_client(etcd_fresh)
    await term.resign()
    term2 = await leader(other, prefix, "b")
    with pytest.raises(Fenced):
        await compact_log(log, 80, term.epoch)
    assert await log.first_seq() == 61
    await term2.resign()
