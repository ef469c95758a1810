"""A small typed etcd v3 client: the calls the cluster layer needs, with short deadlines.

Built on aetcd's generated gRPC stubs (``aetcd.rpc``) over our own ``grpc.aio`` channel
rather than on ``aetcd.Client``, because that client joins ``host:port`` into one target, gives
every call the same timeout and cannot set a range limit or read revision. What this module
guarantees:

* One channel to all members: the gRPC multi-address target ``ipv4:h:p,h:p,h:p`` (pick_first)
  moves to the next member when the connected one refuses or resets the connection. A member
  that hangs (SIGSTOP, partition) keeps its TCP connection open; after ``rotate_after``
  consecutive deadline failures the channel is rebuilt with the address list rotated by one,
  so a hung member cannot stall the client forever.
* Every unary call has a short deadline (``call_timeout``, 0.1-0.5 s) and is retried on
  UNAVAILABLE / DEADLINE_EXCEEDED until ``retry_budget`` seconds have passed, then raises
  ``EtcdUnavailable``. A timed-out call may still have been applied: callers write their
  transactions so that a retry recognises its own earlier effect (see etcdlog, leadership).
* Receive limit ``max_receive_bytes`` (64 MiB): a page of log keys or a watch response of
  catch-up events can be far larger than gRPC's 4 MiB default.
* Reconnect backoff is capped at 1 s (gRPC's default grows to 120 s).
* ``connect(..., prefer_leader=True)`` (the nodes) puts etcd's raft leader member first, so
  appends are not forwarded between members (``raft_leader_first``).

Hosts given as DNS names are resolved once when the channel is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

try:
    import grpc
    import grpc.aio
    from aetcd import rpc
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "cluster mode needs the etcd client: pip install 'beanstalk-py[cluster]'"
    ) from exc

from beanstalk_py.cluster.config import Endpoint

MiB = 1024 * 1024
CALL_TIMEOUT = 0.3  # seconds: the default deadline of one call (retried within the budget)
T = TypeVar("T")

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,  # a channel rotated under the call
    }
)

# etcd's "require leader" metadata: a member cut off from the raft leader cancels the watch
# instead of leaving it silent, so the watcher moves on.
_REQUIRE_LEADER = (("hasleader", "true"),)
_STALLED = object()


class EtcdError(Exception):
    """etcd refused a request (not a transient failure)."""


class EtcdUnavailable(EtcdError):
    """No member answered within the retry budget."""


class EtcdRequestTooLarge(EtcdError):
    """The request exceeds etcd's --max-request-bytes (1.5 MiB by default)."""


class RevisionCompacted(EtcdError):
    """A read or watch asked for history older than etcd's compaction revision."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd history compacted up to revision {compact_revision}")
        self.compact_revision = compact_revision


class WatchBroken(EtcdError):
    """A watch stream ended, stalled or was cancelled by etcd; re-establish it."""


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    deleted: bool
    kv: KeyValue


def _kv(m: Any) -> KeyValue:
    return KeyValue(
        key=bytes(m.key),
        value=bytes(m.value),
        create_revision=int(m.create_revision),
        mod_revision=int(m.mod_revision),
        version=int(m.version),
        lease=int(m.lease),
    )


# ---- transaction building blocks (typed wrappers over the protobuf messages) ----------------


def cmp_create_revision(key: bytes, revision: int) -> Any:
    """Compare: ``key``'s create revision equals ``revision`` (0 = the key does not exist)."""
    return rpc.Compare(
        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=revision
    )


def cmp_exists(key: bytes) -> Any:
    """Compare: ``key`` exists (its create revision is above 0)."""
    return rpc.Compare(
        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.GREATER, create_revision=0
    )


def cmp_mod_revision(key: bytes, revision: int) -> Any:
    """Compare: ``key``'s mod revision equals ``revision`` (0 = the key does not exist)."""
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision
    )


def op_put(key: bytes, value: bytes, lease: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def op_get(key: bytes) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def op_delete_range(start: bytes, end: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=start, range_end=end))


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    # One entry per op of the branch that ran; the kvs of each get (empty for puts/deletes).
    gets: tuple[tuple[KeyValue, ...], ...]


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


async def _resolve(endpoints: Sequence[Endpoint]) -> list[tuple[int, str, int]]:
    loop = asyncio.get_running_loop()
    out: list[tuple[int, str, int]] = []
    for e in endpoints:
        version = e.ip_version
        if version is not None:
            out.append((version, e.host, e.port))
            continue
        infos = await loop.getaddrinfo(e.host, e.port, type=socket.SOCK_STREAM)
        if not infos:
            raise EtcdError(f"cannot resolve etcd host {e.host!r}")
        addr = str(infos[0][4][0])
        out.append((ipaddress.ip_address(addr).version, addr, e.port))
    return out


def grpc_target(addresses: Sequence[tuple[int, str, int]]) -> str:
    """``ipv4:a:p,b:p`` (or ``ipv6:[a]:p,...``): gRPC's multi-address form, one family."""
    families = {v for v, _, _ in addresses}
    if len(families) != 1:
        raise EtcdError("etcd endpoints must all be IPv4 or all IPv6 (after name resolution)")
    if families == {6}:
        return "ipv6:" + ",".join(f"[{h}]:{p}" for _, h, p in addresses)
    return "ipv4:" + ",".join(f"{h}:{p}" for _, h, p in addresses)


async def raft_leader_first(
    addresses: Sequence[tuple[int, str, int]], timeout: float
) -> list[tuple[int, str, int]]:
    """``addresses`` with the member that is etcd's raft leader moved to the front.

    A write sent to a follower member is forwarded to the leader, and its commit comes back
    with the leader's next message: two more hops on every append. Measured with the 3-node
    put50 benchmark (benchmarks/cluster_target.sh), about 14 % more puts per second with the
    leader first. Each member is asked for its status at once, with ``timeout``; a member that
    does not answer (dead, hung) is left where it is, and if none says it leads (an election
    in progress) the order stays as given. Only the starting order: pick_first moves on from a
    member that fails, and a later change of raft leader is not followed."""
    out = list(addresses)

    async def leads(address: tuple[int, str, int]) -> bool:
        channel = grpc.aio.insecure_channel(grpc_target([address]))
        try:
            status = await rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=timeout)
            return bool(status.leader) and status.leader == status.header.member_id
        except grpc.aio.AioRpcError:
            return False
        finally:
            await channel.close()

    flags = await asyncio.gather(*(leads(a) for a in out))
    if True in flags:
        out.insert(0, out.pop(flags.index(True)))
    return out


class EtcdClient:
    """See the module docstring. Create with ``await EtcdClient.connect(endpoints)``."""

    def __init__(
        self,
        addresses: Sequence[tuple[int, str, int]],
        *,
        call_timeout: float = CALL_TIMEOUT,
        retry_budget: float = 10.0,
        max_receive_bytes: int = 64 * MiB,
        rotate_after: int = 3,
    ) -> None:
        self._addresses = list(addresses)
        self.call_timeout = call_timeout
        self.retry_budget = retry_budget
        self.max_receive_bytes = max_receive_bytes
        self.rotate_after = rotate_after
        self._deadline_failures = 0
        self._rotated_at = -1e9
        self._closing: set[asyncio.Task[None]] = set()
        self._open_channel()

    @classmethod
    async def connect(
        cls, endpoints: Sequence[Endpoint], *, prefer_leader: bool = False, **kwargs: Any
    ) -> EtcdClient:
        """A client on ``endpoints``, in their order; with ``prefer_leader``, etcd's raft
        leader member first (``raft_leader_first``)."""
        addresses = await _resolve(endpoints)
        if prefer_leader:
            addresses = await raft_leader_first(addresses, kwargs.get("call_timeout", CALL_TIMEOUT))
        return cls(addresses, **kwargs)

    # ---- channel -----------------------------------------------------------------------------

    @property
    def target(self) -> str:
        return grpc_target(self._addresses)

    def _open_channel(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.max_receive_bytes),
            ("grpc.max_send_message_length", 16 * MiB),
            ("grpc.lb_policy_name", "pick_first"),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # etcd's server refuses pings more often than every 5 s (too_many_pings).
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 3_000),
        ]
        self._channel = grpc.aio.insecure_channel(self.target, options=options)
        self.kv = rpc.KVStub(self._channel)
        self.lease_stub = rpc.LeaseStub(self._channel)
        self.watch_stub = rpc.WatchStub(self._channel)
        self.maintenance = rpc.MaintenanceStub(self._channel)

    def rotate(self) -> None:
        """Rebuild the channel with the next member first (a hung member keeps its socket).

        At most once a second: several callers noticing the same hung member must not rotate
        past the live ones and back to it."""
        now = time.monotonic()
        if now - self._rotated_at < 1.0:
            return
        self._rotated_at = now
        self._addresses = self._addresses[1:] + self._addresses[:1]
        old = self._channel
        self._open_channel()
        self._deadline_failures = 0
        task = asyncio.ensure_future(old.close(grace=1.0))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        await self._channel.close()
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task

    # ---- unary calls with deadline and retry -----------------------------------------------

    async def call(
        self,
        fn: Callable[[Any], Callable[..., Awaitable[T]]],
        request: Any,
        *,
        timeout: float | None = None,
        budget: float | None = None,
    ) -> T:
        """``fn(self)`` picks the stub method (evaluated per attempt: the channel may rotate)."""
        deadline = time.monotonic() + (self.retry_budget if budget is None else budget)
        per_call = self.call_timeout if timeout is None else timeout
        pause = 0.02
        while True:
            try:
                result = await fn(self)(request, timeout=per_call)
                self._deadline_failures = 0
                return result
            except grpc.aio.AioRpcError as e:
                code, details = e.code(), e.details() or ""
                if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
                    raise RevisionCompacted(0) from e
                if code == grpc.StatusCode.INVALID_ARGUMENT and "too large" in details:
                    raise EtcdRequestTooLarge(details) from e
                timed_out = code == grpc.StatusCode.DEADLINE_EXCEEDED or (
                    # etcd answering with our own deadline's expiry ("context deadline
                    # exceeded", code UNKNOWN) when the call outlived it server-side.
                    code == grpc.StatusCode.UNKNOWN and "deadline exceeded" in details
                )
                overloaded = code == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many" in details
                if code not in _RETRYABLE and not timed_out and not overloaded:
                    raise EtcdError(f"{code.name}: {details}") from e
                if timed_out:
                    self._deadline_failures += 1
                    if self._deadline_failures >= self.rotate_after:
                        self.rotate()
                if time.monotonic() + pause >= deadline:
                    raise EtcdUnavailable(f"etcd unavailable ({code.name}: {details})") from e
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key (or None) and the store revision the read saw."""
        resp = await self.call(lambda c: c.kv.Range, rpc.RangeRequest(key=key))
        kv = _kv(resp.kvs[0]) if resp.kvs else None
        return kv, int(resp.header.revision)

    async def range(
        self,
        start: bytes,
        end: bytes,
        *,
        limit: int = 0,
        revision: int = 0,
        timeout: float | None = None,
    ) -> tuple[list[KeyValue], bool, int]:
        """Keys in [start, end) in key order (at ``revision`` when given): (kvs, more, the
        revision read at).

        The revision is ``revision`` itself when one was given: etcd's reply header carries
        the store's current revision even for a read at an older one, and a reader that went
        on from that one (the next page, a watch) skipped what was committed in between.
        Deliberately no sort option: etcd ignores the limit of a sorted range and reads and
        decodes every value in it (a descending "last key" read of the log cost a full read
        of the log)."""
        req = rpc.RangeRequest(key=start, range_end=end, limit=limit, revision=revision)
        resp = await self.call(lambda c: c.kv.Range, req, timeout=timeout)
        return [_kv(m) for m in resp.kvs], bool(resp.more), revision or int(resp.header.revision)

    async def first_and_count(self, start: bytes, end: bytes) -> tuple[bytes | None, int]:
        """The first key in [start, end) (None if empty) and how many keys the range holds.

        etcd counts from its in-memory index and reads one value, whatever the range's size."""
        req = rpc.RangeRequest(key=start, range_end=end, limit=1, keys_only=True)
        resp = await self.call(lambda c: c.kv.Range, req)
        return (bytes(resp.kvs[0].key) if resp.kvs else None), int(resp.count)

    async def txn(
        self,
        compare: Sequence[Any],
        success: Sequence[Any],
        failure: Sequence[Any] = (),
        *,
        budget: float | None = None,
    ) -> TxnResult:
        req = rpc.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        resp = await self.call(lambda c: c.kv.Txn, req, budget=budget)
        gets: list[tuple[KeyValue, ...]] = []
        for r in resp.responses:
            if r.WhichOneof("response") == "response_range":
                gets.append(tuple(_kv(m) for m in r.response_range.kvs))
            else:
                gets.append(())
        return TxnResult(bool(resp.succeeded), int(resp.header.revision), tuple(gets))

    async def compact(self, revision: int) -> None:
        """Drop etcd's history before ``revision`` (keys alive at it stay readable)."""
        # Already compacted at or beyond it: the goal holds.
        with contextlib.suppress(RevisionCompacted):
            await self.call(lambda c: c.kv.Compact, rpc.CompactionRequest(revision=revision))

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted ttl); etcd raises short TTLs to its minimum."""
        resp = await self.call(lambda c: c.lease_stub.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl))
        if resp.error:
            raise EtcdError(f"lease grant refused: {resp.error}")
        return int(resp.ID), int(resp.TTL)

    async def lease_revoke(self, lease_id: int, *, budget: float | None = None) -> None:
        with contextlib.suppress(EtcdError):  # NOT_FOUND: already expired
            await self.call(
                lambda c: c.lease_stub.LeaseRevoke,
                rpc.LeaseRevokeRequest(ID=lease_id),
                budget=budget,
            )

    # ---- streams -----------------------------------------------------------------------------

    def keepalive_stream(self) -> Any:
        """A raw LeaseKeepAlive bidi call (``write``/``read``/``cancel``); see leadership."""
        return self.lease_stub.LeaseKeepAlive()

    async def watch(
        self,
        start: bytes,
        end: bytes,
        start_revision: int,
        *,
        stall_timeout: float = 1.0,
    ) -> AsyncGenerator[tuple[int, list[WatchEvent]], None]:
        """Yield (response revision, events) for keys in [start, end) from ``start_revision``.

        Raises ``RevisionCompacted`` when that revision is gone, ``WatchBroken`` when the
        stream ends, errors, or stays silent for ``stall_timeout`` even after a progress
        request (a hung member). One stream per call; the caller re-establishes.
        """
        call = self.watch_stub.Watch(metadata=_REQUIRE_LEADER)
        # The stream's reads and writes run as tasks that are never cancelled mid-way: gRPC
        # cancels the whole call when one of its operations is cancelled (a timed-out
        # ``wait_for``), and later operations on it raise CancelledError.
        pending: set[asyncio.Future[Any]] = set()

        async def within(op: Awaitable[Any], what: str) -> Any:
            fut = asyncio.ensure_future(op)
            pending.add(fut)
            done, _ = await asyncio.wait({fut}, timeout=stall_timeout)
            if not done:
                return _STALLED
            pending.discard(fut)
            try:
                return fut.result()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, asyncio.CancelledError) as e:
                code = e.code() if isinstance(e, grpc.aio.AioRpcError) else None
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise WatchBroken("watch response over the receive limit") from e
                raise WatchBroken(f"watch {what} failed: {code.name if code else e!r}") from e

        try:
            create = rpc.WatchCreateRequest(key=start, range_end=end, start_revision=start_revision)
            if (
                await within(call.write(rpc.WatchRequest(create_request=create)), "create")
                is _STALLED
            ):
                self.rotate()
                raise WatchBroken("watch create stalled")
            read: asyncio.Future[Any] | None = None
            asked_progress = False
            while True:
                if read is None:
                    read = asyncio.ensure_future(call.read())
                    pending.add(read)
                done, _ = await asyncio.wait({read}, timeout=stall_timeout)
                if not done:
                    if asked_progress:
                        self.rotate()  # a hung member keeps its socket open
                        raise WatchBroken("watch stream stalled")
                    # Silence is normal on an idle log; a progress request tells a live member
                    # from a hung one (the member answers it on this stream).
                    asked_progress = True
                    progress = rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
                    await within(call.write(progress), "progress request")
                    continue
                pending.discard(read)
                finished, read = read, None
                resp = await within(finished, "read")
                asked_progress = False
                if resp is grpc.aio.EOF:
                    raise WatchBroken("watch stream closed")
                if resp.compact_revision:
                    raise RevisionCompacted(int(resp.compact_revision))
                if resp.canceled:
                    raise WatchBroken(f"watch cancelled: {resp.cancel_reason}")
                if resp.events:
                    events = [
                        WatchEvent(deleted=ev.type == rpc.Event.DELETE, kv=_kv(ev.kv))
                        for ev in resp.events
                    ]
                    yield int(resp.header.revision), events
        finally:
            call.cancel()
            for fut in pending:
                fut.cancel()
