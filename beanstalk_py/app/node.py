"""Cluster mode (``--cluster``): one node's life as follower, then perhaps leader.

A node starts as a follower: it applies the etcd log's batches to its own live engine
(``replica.apply.Applier``; the local binlog, with ``-b``, journals them too, so the directory
is always a complete single-node image), relays its clients' connections to the leader
(``Server.set_relay``), and campaigns for the leader key meanwhile. When it wins, it reads the
rest of the log (the previous leader's epoch is fenced out from the moment the key is ours),
raises the next job id above every id in the log, drops nothing (a follower holds no
reservations: reserved jobs are ready, as after a restart), closes the relayed connections and
serves clients itself, journaling through ``replica.journal.ReplicatedJournal``.

Invariants:
- The etcd log is the truth: at start the local binlog's previous segments are moved to
  ``DIR/previous/`` (kept for inspection, never read) and the engine is rebuilt from the log.
- A leader answers only while ``Leadership.is_leader()`` (``Server.fence``, checked before any
  reply leaves) and acknowledges a change only once it is committed in etcd under its epoch.
- Losing leadership (lease lapsed, append fenced, etcd unreachable) is final for the process:
  it stops serving and ``run`` returns ``RESTART``; lifecycle.py then starts the process again
  as a fresh follower (as a restart of beanstalkd closes its clients' connections).
- A follower that finds its next batch compacted away restarts too (its engine may hold jobs
  whose deletes it never saw); a fresh follower starts at the log's first kept batch, which
  holds every live job (compaction re-appends them first, docs/CLUSTER.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from beanstalk_py.cluster.client import EtcdClient, EtcdError
from beanstalk_py.cluster.config import parse_cluster_url
from beanstalk_py.cluster.etcdlog import EtcdLog, LogEntry, LogTruncated
from beanstalk_py.cluster.leadership import Election, LeaderInfo, Leadership
from beanstalk_py.replica.apply import Applier
from beanstalk_py.replica.batch import BatchRecorder
from beanstalk_py.replica.journal import ReplicatedJournal, Shipper
from beanstalk_py.shell.cluster_status import ClusterStatus

if TYPE_CHECKING:
    from beanstalk_py.binlog import Binlog
    from beanstalk_py.shell.config import Config
    from beanstalk_py.shell.server import Server

log = logging.getLogger("beanstalk_py.cluster")

RESTART = -1  # run()'s result: start this process again as a follower
LAG_POLL = 1.0  # seconds between reads of the log's end (replication lag on followers)
COMPACT_CHECK = 1.0  # seconds between checks of the etcd log's size on the leader
LIVE_RECORD_OVERHEAD = 120  # record framing, tube name: bytes per live job beyond its body


def set_aside_previous_segments(directory: Path) -> int:
    """Move ``binlog.N`` files of an earlier run to ``DIR/previous/`` (replacing its content).

    Called with the directory locked, before the (then empty) replay."""
    names = [n for n in os.listdir(directory) if n.startswith("binlog.")]
    if not names:
        return 0
    previous = directory / "previous"
    previous.mkdir(exist_ok=True)
    for old in os.listdir(previous):
        (previous / old).unlink()
    for name in names:
        os.replace(directory / name, previous / name)
    return len(names)


class Node:
    def __init__(self, server: Server, config: Config, binlog: Binlog | None) -> None:
        assert config.cluster is not None and config.node_id and config.advertise
        self.server = server
        self.config = config
        self.binlog = binlog
        self.cluster = parse_cluster_url(config.cluster)
        self.status = server.cluster = ClusterStatus(config.node_id)
        self.applier = Applier(server.engine, server.clock)
        self.applied_seq = 0
        self.client: EtcdClient | None = None
        self.term: Leadership | None = None
        self.shipper: Shipper | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._relay_epoch = 0  # the term relayed connections belong to

    async def run(self, stop: asyncio.Event) -> int:
        """Serve as this node until ``stop`` is set (0) or leadership is lost (RESTART)."""
        client = self.client = await EtcdClient.connect(self.cluster.endpoints, prefer_leader=True)
        cfg = self.config
        assert cfg.node_id is not None and cfg.advertise is not None
        elog = EtcdLog(client, self.cluster.prefix)
        election = Election(
            client, self.cluster.prefix, cfg.node_id, cfg.advertise, ttl=cfg.lease_ttl
        )
        status = self.status
        tasks: list[asyncio.Task[object]] = []
        try:
            first = await elog.first_seq()
            self.applied_seq = first - 1
            follower = asyncio.ensure_future(self._follow(elog))
            watcher = asyncio.ensure_future(self._watch_leader(election))
            lag = asyncio.ensure_future(self._poll_lag(elog))
            campaign = asyncio.ensure_future(election.campaign())
            stopped = asyncio.ensure_future(stop.wait())
            tasks = [follower, watcher, lag, campaign, stopped]
            done, _ = await asyncio.wait(
                [follower, campaign, stopped], return_when=asyncio.FIRST_COMPLETED
            )
            if stopped in done:
                return 0
            if follower in done:
                return RESTART  # the log was compacted past us, or reading it failed (logged)
            term = self.term = campaign.result()
            follower.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            if not await self._promote(elog, term):
                return RESTART
            lost = asyncio.ensure_future(term.lost.wait())
            failed = asyncio.ensure_future(self._server_failed())
            tasks += [lost, failed]
            await asyncio.wait([lost, stopped, failed], return_when=asyncio.FIRST_COMPLETED)
            if stopped.done():
                return 0
            log.error(
                "cluster: leadership of epoch %d lost (%s); restarting as a follower",
                term.epoch,
                term.lost_reason or "the journal failed",
            )
            status.role = "stepped-down"
            return RESTART
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if self._compactor is not None:
                self._compactor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._compactor
            if self.shipper is not None:
                await self.shipper.close()
            if self.term is not None:
                if stop.is_set() and self.term.is_leader():
                    with contextlib.suppress(Exception):
                        await self.term.resign()  # a successor need not wait for the TTL
                await self.term.close()
            await client.close()

    async def _compact_when_due(self, shipper: Shipper, recorder: BatchRecorder) -> None:
        """Compact the etcd log once it holds more than twice the live data (and at least
        ``--cluster-compact-bytes`` since the last compaction), as the binlog compacts."""
        engine = self.server.engine
        floor = self.config.cluster_compact_bytes

        def record_live_jobs() -> None:
            recorder.record_live_jobs(engine)  # buried jobs last, in bury order

        while True:
            await asyncio.sleep(COMPACT_CHECK)
            live = engine.body_bytes + LIVE_RECORD_OVERHEAD * len(engine.jobs)
            if shipper.bytes_since_snapshot > max(floor, 2 * live):
                shipper.request_snapshot(record_live_jobs)

    async def _server_failed(self) -> None:
        stopped = self.server.stopped
        assert stopped is not None
        await stopped.wait()

    # ---- follower --------------------------------------------------------------------

    def _apply(self, entry: LogEntry) -> None:
        self.applier.apply(entry.batch)
        self.applied_seq = entry.seq
        st = self.status
        st.applied_seq = entry.seq
        st.applied_at = time.time()
        st.local_refusals = self.applier.journal_refusals
        st.epoch = max(st.epoch, entry.epoch)
        if st.log_end < entry.seq:
            st.log_end = entry.seq
        self.server.after_input()  # the local binlog writes the applied records

    async def _follow(self, elog: EtcdLog) -> None:
        try:
            async with contextlib.aclosing(elog.follow(self.applied_seq)) as entries:
                async for entry in entries:
                    self._apply(entry)
        except LogTruncated as exc:
            log.error("cluster: %s; restarting to rebuild from the log", exc)
        except Exception as exc:
            log.error("cluster: following the log failed (%r); restarting", exc)
            raise

    async def _watch_leader(self, election: Election) -> None:
        async with contextlib.aclosing(election.watch_leader()) as changes:
            async for info in changes:
                self._leader_changed(info)

    def _leader_changed(self, info: LeaderInfo | None) -> None:
        st = self.status
        if info is None:
            st.leader = ""
            self.server.set_relay(None)
            return
        st.leader = info.node_id
        if info.epoch != self._relay_epoch:
            # A new term closes relayed connections even at the same address (a leader that
            # restarted and won again), as a restart of beanstalkd would.
            self._relay_epoch = info.epoch
            self.server.set_relay(None)
        st.epoch = max(st.epoch, info.epoch)
        if info.node_id == self.config.node_id:
            return  # our own (stale) key, or this node is about to promote itself
        host, _, port = info.advertise.rpartition(":")
        if host and port.isdigit():
            self.server.set_relay((host.strip("[]"), int(port)))
        else:
            log.warning("cluster: leader %s advertises no usable address", info.node_id)
            self.server.set_relay(None)

    async def _poll_lag(self, elog: EtcdLog) -> None:
        while True:
            with contextlib.suppress(EtcdError):
                self.status.log_end = max(self.status.log_end, await elog.last_seq())
            await asyncio.sleep(LAG_POLL)

    # ---- leader ----------------------------------------------------------------------

    async def _promote(self, elog: EtcdLog, term: Leadership) -> bool:
        server = self.server
        engine = server.engine
        st = self.status
        st.role = "promoting"
        try:
            async with contextlib.aclosing(elog.read_from(self.applied_seq + 1)) as rest:
                async for entry in rest:
                    self._apply(entry)
        except LogTruncated as exc:
            log.error("cluster: won epoch %d but %s; resigning", term.epoch, exc)
            return False
        engine.raise_next_id(self.applier.next_id)
        server.flush()  # the local binlog writes what was applied, under the old journal
        commit = server.group_commit
        recorder = BatchRecorder(server.clock)
        shipper = self.shipper = Shipper(
            recorder,
            elog,
            term,
            self.applied_seq + 1,
            lambda: engine.next_id,
            # above every turn number the old journal used (its fsync may still be running)
            start_turn=max(commit.written_seq, commit.durable_seq),
        )
        journal = ReplicatedJournal(self.binlog, recorder, shipper, server.clock)
        engine.journal = journal
        server.group_commit.attach(journal, 0)  # every acknowledgement waits for etcd
        server.fence = term.is_leader
        shipper.start()
        server.set_relay(None)
        server.set_ready()  # connections that waited for a role are served here now
        st.role = "leader"
        st.leader = term.info.node_id
        st.epoch = term.epoch
        st.failovers += 1
        st.shipper = shipper
        self._compactor = asyncio.ensure_future(self._compact_when_due(shipper, recorder))
        log.info(
            "cluster: leader of epoch %d from batch %d, next job id %d",
            term.epoch,
            self.applied_seq + 1,
            engine.next_id,
        )
        return True
