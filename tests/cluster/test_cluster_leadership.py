"""Leader election against 3 real etcd members: one leader at a time, takeover after a kill,
self-fencing of a stalled leader. Contenders that get killed or stopped run in their own
process (contender.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.etcd import ClientFactory, EtcdCluster

from beanstalk_py.cluster.etcdlog import EtcdLog
from beanstalk_py.cluster.leadership import Election, LeaderInfo

pytestmark = pytest.mark.timeout(90)

CONTENDER = Path(__file__).with_name("contender.py")


class Contender:
    """contender.py in a subprocess; JSON events from its stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, cluster: EtcdCluster, prefix: str, node: str) -> Contender:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(CONTENDER), ",".join(cluster.endpoints), prefix, node,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        return cls(proc)

    async def event(self, timeout: float = 15.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert line, f"contender exited (rc={self.proc.returncode})"
        return dict(json.loads(line))

    async def expect(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        ev = await self.event(timeout)
        assert ev["event"] == kind, ev
        return ev

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.event()

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


async def test_one_leader_at_a_time_across_three_contenders(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    terms_per_node = 4
    records: list[tuple[str, int, float, float]] = []  # node, epoch, won_at, lost_at
    log_reader = EtcdLog(await etcd_client(etcd_shared), prefix)

    async def node(name: str, order: list[int]) -> None:
        client = await etcd_client(etcd_shared, order=order)
        election = Election(client, prefix, name, f"{name}:11300")
        log = EtcdLog(client, prefix)
        for _ in range(terms_per_node):
            term = await election.campaign()
            # While it leads, nobody else may: the log shows 3 consecutive batches per term.
            first = await log.last_seq() + 1
            for seq in range(first, first + 3):
                await term.append(log, seq, f"{name}:{term.epoch}:{seq}".encode())
                await asyncio.sleep(0.005)
            assert term.is_leader()
            end = time.monotonic()
            await term.resign()
            records.append((name, term.epoch, term.won_at, end))

    await asyncio.gather(node("a", [0, 1, 2]), node("b", [1, 2, 0]), node("c", [2, 0, 1]))
    assert len(records) == 3 * terms_per_node
    epochs = [r[1] for r in records]
    assert len(set(epochs)) == len(epochs), "an epoch was handed out twice"
    # Terms never overlap in time (same clock: one process).
    spans = sorted((won, lost) for _, _, won, lost in records)
    for (_, lost), (won_next, _) in itertools.pairwise(spans):
        assert lost <= won_next, spans
    # The log is 3-batch blocks, one per term, epochs increasing with seq.
    entries = [e async for e in log_reader.read_from(1)]
    assert [e.seq for e in entries] == list(range(1, 3 * len(records) + 1))
    blocks = [entries[i : i + 3] for i in range(0, len(entries), 3)]
    assert [b[0].epoch for b in blocks] == sorted(epochs)
    by_epoch = {epoch: name for name, epoch, _, _ in records}
    for block in blocks:
        assert len({e.epoch for e in block}) == 1
        assert all(e.batch.startswith(by_epoch[e.epoch].encode() + b":") for e in block)


async def test_kill_9_of_the_leader_hands_over_quickly(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    """Takeover time after SIGKILL of the lease holder, over several runs (printed with -s)."""
    runs = 5
    takeovers = []
    for run in range(runs):
        p = f"{prefix}-{run}"
        holder = await Contender.start(etcd_shared, p, "a")
        try:
            await holder.expect("started")
            await holder.expect("leader")
            waiting = []
            for name, order in (("b", [1, 2, 0]), ("c", [2, 0, 1])):
                client = await etcd_client(etcd_shared, order=order)
                waiting.append(
                    asyncio.ensure_future(Election(client, p, name, f"{name}:1").campaign())
                )
            await asyncio.sleep(0.3)
            assert not any(t.done() for t in waiting), "someone led beside the live holder"
            killed_at = time.monotonic()
            holder.signal(signal.SIGKILL)
            done, pending = await asyncio.wait(
                waiting, timeout=10, return_when=asyncio.FIRST_COMPLETED
            )
            assert done, "nobody took over within 10 s"
            term = done.pop().result()
            takeovers.append(term.won_at - killed_at)
            await asyncio.sleep(0.2)
            assert all(not t.done() for t in pending), "two leaders after the takeover"
            for t in pending:
                t.cancel()
            await term.resign()
        finally:
            await holder.close()
    print(
        f"\ntakeover after kill -9 of the leader ({runs} runs, lease TTL 1 s): "
        f"min {min(takeovers):.3f} s, median {statistics.median(takeovers):.3f} s, "
        f"max {max(takeovers):.3f} s: {[round(t, 3) for t in takeovers]}"
    )
    # TTL 1 s + etcd's 0.5 s expiry sweep + notification; a missed watch would add ~3 s.
    assert max(takeovers) < 2.5, takeovers


async def test_stalled_leader_fences_itself_and_is_refused(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    old = await Contender.start(etcd_shared, prefix, "old")
    try:
        await old.expect("started")
        won = await old.expect("leader")
        assert (await old.ask("append 1"))["result"] == "ok"
        old.signal(signal.SIGSTOP)  # a GC pause / VM freeze longer than the lease
        stopped_at = time.monotonic()
        client = await etcd_client(etcd_shared, order=[2, 1, 0])
        term = await Election(client, prefix, "new", "new:1").campaign()
        assert term.epoch > won["epoch"]
        log = EtcdLog(client, prefix)
        await term.append(log, 2, b"new-2")
        first_append_at = time.monotonic()
        await asyncio.sleep(0.3)
        old.signal(signal.SIGCONT)
        status = await old.ask("status")
        # The first thing it checks after waking: not leader, and it knew so (by its own
        # clock) before the new leader could have taken over.
        assert status["is_leader"] is False, status
        assert status["lost_at"] is not None
        assert stopped_at - 1.0 < status["lost_at"] < term.won_at < first_append_at, (
            status, term.won_at)  # fmt: skip
        assert (await old.ask("guarded 3"))["result"] == "not-leader"
        # Bypassing its own check, etcd still refuses its epoch.
        assert (await old.ask("append 3"))["result"] == "fenced"
        entries = [(e.seq, e.batch) async for e in log.read_from(1)]
        assert entries == [(1, b"old-1"), (2, b"new-2")]
        await term.resign()
    finally:
        with contextlib.suppress(ProcessLookupError):
            old.signal(signal.SIGCONT)
        await old.close()


async def test_followers_see_the_leader_and_its_changes(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    """observe()/watch_leader(): what a follower relays its clients to."""
    watcher = Election(await etcd_client(etcd_shared), prefix, "f", "f:11300")
    assert await watcher.observe() is None
    seen: list[LeaderInfo | None] = []
    changed = asyncio.Event()

    async def watch() -> None:
        async with contextlib.aclosing(watcher.watch_leader()) as it:
            async for info in it:
                seen.append(info)
                changed.set()

    async def next_change() -> LeaderInfo | None:
        await asyncio.wait_for(changed.wait(), 10)
        changed.clear()
        return seen[-1]

    task = asyncio.ensure_future(watch())
    try:
        assert await next_change() is None  # vacant at first
        a = await Election(await etcd_client(etcd_shared), prefix, "a", "10.0.0.1:11300").campaign()
        info = await next_change()
        assert info is not None
        assert (info.node_id, info.advertise, info.epoch) == ("a", "10.0.0.1:11300", a.epoch)
        assert await watcher.observe() == info
        await a.resign()
        assert await next_change() is None
        b = await Election(await etcd_client(etcd_shared), prefix, "b", "10.0.0.2:11300").campaign()
        info = await next_change()
        assert info is not None
        assert (info.node_id, info.advertise, info.epoch) == ("b", "10.0.0.2:11300", b.epoch)
        assert b.epoch > a.epoch
        await b.resign()
        assert await next_change() is None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
