"""Leader election on one etcd key bound to a lease; the key's create revision is the epoch.

``Election.campaign()`` creates ``/PREFIX/leader`` (only if absent) attached to a fresh lease
and holding ``{"node": ..., "advertise": ...}``; the transaction's revision, which is the key's
create revision, becomes the epoch. Epochs grow with every new leader and are the fencing token
of every log append (etcdlog). Losers watch the key and try again as soon as it is deleted (the
holder resigned or its lease expired).

Self-fencing invariant: ``Leadership.is_leader()`` turns false before etcd can have expired the
lease. The lease is renewed over a keepalive stream, one request at a time; a renewal answered
with TTL t proves the lease lives until at least (time the request was *sent*) + t, so validity
is ``sent + t - margin`` on the monotonic clock. A leader that stalls (GC pause, SIGSTOP,
network) therefore finds itself deposed by its own clock, before any successor can have been
elected, and never acknowledges after that. Stepping down is final for a ``Leadership``: a
node that wants to lead again campaigns for a new epoch. An append refused on the epoch compare
steps down at once. On step-down the lease is revoked (best effort) so a successor need not wait
for the TTL.

etcd raises short TTLs to its minimum (1 s with ``--heartbeat-interval 100
--election-timeout 500``, 2 s with the defaults); the granted TTL is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import grpc.aio
from aetcd import rpc

from beanstalk_py.cluster.client import (
    EtcdClient,
    EtcdError,
    KeyValue,
    RevisionCompacted,
    WatchBroken,
    cmp_create_revision,
    op_get,
    op_put,
)
from beanstalk_py.cluster.etcdlog import EtcdLog, Fenced

Clock = Callable[[], float]
_STREAM_ERRORS = (TimeoutError, grpc.aio.AioRpcError, WatchBroken, asyncio.InvalidStateError)


class NotLeader(Exception):
    """This node does not (or no longer) hold leadership; do not acknowledge."""


@dataclass(frozen=True)
class LeaderInfo:
    node_id: str
    advertise: str  # host:port clients of followers are relayed to
    epoch: int


def _leader_info(kv: KeyValue) -> LeaderInfo:
    try:
        data = json.loads(kv.value)
        return LeaderInfo(str(data["node"]), str(data["advertise"]), kv.create_revision)
    except (ValueError, KeyError, TypeError):
        return LeaderInfo("?", "", kv.create_revision)


class Leadership:
    """One won term. ``is_leader()`` is the check to make before every acknowledgement."""

    def __init__(
        self,
        client: EtcdClient,
        info: LeaderInfo,
        lease_id: int,
        ttl: int,
        valid_until: float,
        margin: float,
        clock: Clock,
    ) -> None:
        self.client = client
        self.info = info
        self.epoch = info.epoch
        self.lease_id = lease_id
        self.ttl = ttl
        self.margin = margin
        self._clock = clock
        self._valid_until = valid_until
        self.won_at = clock()
        self.lost = asyncio.Event()
        self.lost_reason: str | None = None
        self.lost_at: float | None = None  # monotonic time it stopped being leader
        self.renewals = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._revoke: asyncio.Task[None] | None = None

    @property
    def valid_until(self) -> float:
        return self._valid_until

    def is_leader(self) -> bool:
        if self.lost.is_set():
            return False
        if self._clock() >= self._valid_until:
            self.step_down("lease not renewed in time", at=self._valid_until)
            return False
        return True

    def start(self) -> None:
        self._tasks = [
            asyncio.ensure_future(self._keepalive()),
            asyncio.ensure_future(self._watchdog()),
        ]

    def step_down(self, reason: str, *, at: float | None = None) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost_at = self._clock() if at is None else min(at, self._clock())
        self.lost.set()
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()
        # Let a successor in now rather than after the TTL.
        self._revoke = asyncio.ensure_future(
            self.client.lease_revoke(self.lease_id, budget=self.ttl)
        )

    async def resign(self) -> None:
        self.step_down("resigned")
        await self.close()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._revoke is not None:
            with contextlib.suppress(Exception):
                await self._revoke

    async def append(self, log: EtcdLog, seq: int, batch: bytes) -> int:
        """Append under this epoch; a fenced append ends the term at once."""
        if not self.is_leader():
            raise NotLeader(self.lost_reason or "not leader")
        try:
            return await log.append(seq, batch, self.epoch)
        except Fenced:
            self.step_down("append fenced by a newer epoch")
            raise

    def _extend(self, until: float) -> None:
        if not self.is_leader():
            return  # final: a late renewal never revives a term that lapsed locally
        self._valid_until = max(self._valid_until, until)
        self.renewals += 1

    async def _watchdog(self) -> None:
        while not self.lost.is_set():
            delay = self._valid_until - self._clock()
            if delay <= 0:
                self.is_leader()  # steps down
                return
            await asyncio.sleep(delay)

    async def _keepalive(self) -> None:
        interval = self.ttl / 4
        timeout = self.client.call_timeout
        stream: Any = None
        failures = 0
        try:
            while self.is_leader():
                try:
                    if stream is None:
                        stream = self.client.keepalive_stream()
                    sent = self._clock()
                    await asyncio.wait_for(
                        stream.write(rpc.LeaseKeepAliveRequest(ID=self.lease_id)), timeout
                    )
                    resp = await asyncio.wait_for(stream.read(), timeout)
                    if resp is grpc.aio.EOF:
                        raise WatchBroken("keepalive stream closed")
                    if resp.TTL <= 0:
                        self.step_down("lease expired in etcd")
                        return
                    self._extend(sent + int(resp.TTL) - self.margin)
                    failures = 0
                    await asyncio.sleep(interval)
                except (*_STREAM_ERRORS, asyncio.CancelledError):
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # our own cancellation (step-down, close)
                    # Otherwise gRPC cancelled the call (the channel rotated): a new stream.
                    if stream is not None:
                        stream.cancel()
                    stream = None
                    failures += 1
                    if failures >= 2:
                        self.client.rotate()  # the member may be hung, not just slow
                        failures = 0
                    await asyncio.sleep(0.02)
        finally:
            if stream is not None:
                stream.cancel()


class Election:
    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        node_id: str,
        advertise: str,
        *,
        ttl: int = 1,
        margin: float | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.client = client
        self.log = EtcdLog(client, prefix)
        self.leader_key = self.log.leader_key
        self.node_id = node_id
        self.advertise = advertise
        self.ttl = ttl
        self.margin = margin
        self._clock = clock

    def _value(self) -> bytes:
        return json.dumps({"node": self.node_id, "advertise": self.advertise}).encode()

    async def observe(self) -> LeaderInfo | None:
        kv, _ = await self.client.get(self.leader_key)
        return _leader_info(kv) if kv is not None else None

    async def try_acquire(self) -> Leadership | None:
        """One attempt: the new term, or None when another node holds the key."""
        sent = self._clock()
        lease_id, ttl = await self.client.lease_grant(self.ttl)
        margin = self.margin if self.margin is not None else max(0.1, 0.2 * ttl)
        try:
            res = await self.client.txn(
                [cmp_create_revision(self.leader_key, 0)],
                [op_put(self.leader_key, self._value(), lease_id)],
                [op_get(self.leader_key)],
            )
        except BaseException:
            await self.client.lease_revoke(lease_id, budget=0.5)
            raise
        if res.succeeded:
            epoch = res.revision
        else:
            holder = res.gets[0][0] if res.gets and res.gets[0] else None
            if holder is None or holder.lease != lease_id:
                await self.client.lease_revoke(lease_id, budget=0.5)
                return None
            epoch = holder.create_revision  # our own earlier attempt committed
        info = LeaderInfo(self.node_id, self.advertise, epoch)
        term = Leadership(
            self.client, info, lease_id, ttl, sent + ttl - margin, margin, self._clock
        )
        term.start()
        return term

    async def campaign(self) -> Leadership:
        """Wait until this node leads; returns the term (check ``is_leader()`` before acks)."""
        while True:
            try:
                term = await self.try_acquire()
            except EtcdError:
                await asyncio.sleep(0.05)
                continue
            if term is not None:
                if term.is_leader():
                    return term
                await term.close()  # won too slowly to be sure of the lease: try again
                continue
            await self._wait_vacant()

    async def _wait_vacant(self) -> None:
        """Return once the leader key is (probably) gone; bounded so a missed event is
        harmless."""
        try:
            kv, rev = await self.client.get(self.leader_key)
        except EtcdError:
            await asyncio.sleep(0.05)
            return
        if kv is None:
            return
        with contextlib.suppress(EtcdError, asyncio.TimeoutError):
            async with (
                asyncio.timeout(2 * self.ttl + 1),
                contextlib.aclosing(
                    self.client.watch(self.leader_key, self.leader_key + b"\0", rev + 1)
                ) as stream,
            ):
                async for _, events in stream:
                    if any(ev.deleted for ev in events):
                        return

    async def watch_leader(self) -> AsyncGenerator[LeaderInfo | None, None]:
        """The current leader (None while vacant), then every change, forever."""
        last: LeaderInfo | bool | None = False  # False: nothing yielded yet
        while True:
            try:
                kv, rev = await self.client.get(self.leader_key)
            except EtcdError:
                await asyncio.sleep(0.05)
                continue
            info = _leader_info(kv) if kv is not None else None
            if info != last:
                last = info
                yield info
            with contextlib.suppress(WatchBroken, RevisionCompacted, EtcdError):
                async with contextlib.aclosing(
                    self.client.watch(self.leader_key, self.leader_key + b"\0", rev + 1)
                ) as stream:
                    async for _ in stream:
                        break  # re-read the key: one code path for put and delete
