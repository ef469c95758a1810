"""The leader's Shipper against 3 real etcd members: a busy shipper waits for the clients its
last commit released, so that their next records share one etcd append (replica/journal.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.etcd import ClientFactory, EtcdCluster

from beanstalk_py.cluster.etcdlog import EtcdLog
from beanstalk_py.cluster.leadership import Election, Leadership
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.engine import Engine
from beanstalk_py.protocol.session import Session
from beanstalk_py.replica.batch import BatchRecorder, decode
from beanstalk_py.replica.journal import LINGER_MIN_RECORDS, Shipper

pytestmark = pytest.mark.timeout(60)


class Leader:
    """An engine journaling to a BatchRecorder, its Shipper, and one session per client."""

    def __init__(self, log: EtcdLog, term: Leadership, linger_max: float) -> None:
        clock = ManualClock()
        self.recorder = BatchRecorder(clock)
        self.engine = Engine(clock, self.recorder, max_job_size=1000)
        self.shipper = Shipper(
            self.recorder, log, term, 1, lambda: self.engine.next_id, linger_max=linger_max
        )
        self.turn = 0

    def puts(self, n: int) -> None:
        """One loop turn in which ``n`` clients each put a job."""
        for _ in range(n):
            s = Session(self.engine)
            s.feed(b"put 0 0 60 3\r\nabc\r\n")
            assert s.take_output().startswith(b"INSERTED")
        self.turn += 1
        self.shipper.written(self.turn)

    async def committed(self, timeout: float = 10.0) -> float:
        """Wait until every turn so far is in etcd; the time it landed."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.shipper.when_committed(self.turn, fut)
        await asyncio.wait_for(fut, timeout)
        return time.monotonic()


async def start(
    cluster: EtcdCluster, etcd_client: ClientFactory, prefix: str, linger_max: float
) -> tuple[EtcdLog, Leader]:
    client = await etcd_client(cluster)
    log = EtcdLog(client, prefix)
    term = await Election(client, prefix, "a", "a:11300").campaign()
    leader = Leader(log, term, linger_max)
    leader.shipper.start()
    return log, leader


async def batch_sizes(log: EtcdLog) -> list[int]:
    return [len(decode(e.batch)[1]) async for e in log.read_from(1)]


async def test_released_clients_share_the_next_append(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    log, leader = await start(etcd_shared, etcd_client, prefix, linger_max=10.0)
    try:
        leader.puts(10)
        await leader.committed()
        # The 10 clients that commit released come back one by one, 20 ms apart: all of
        # their puts go into one append, which leaves as soon as the last one is in.
        for _ in range(10):
            await asyncio.sleep(0.02)
            leader.puts(1)
        last_in = time.monotonic()
        landed = await leader.committed()
        assert landed - last_in < 2.0  # not linger_max (10 s)
        assert await batch_sizes(log) == [10, 10]
        assert (leader.shipper.lingers, leader.shipper.linger_cut) == (1, 0)
    finally:
        await leader.shipper.close()


async def test_the_wait_for_released_clients_is_bounded(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    log, leader = await start(etcd_shared, etcd_client, prefix, linger_max=0.3)
    try:
        leader.puts(10)
        await leader.committed()
        t0 = time.monotonic()
        leader.puts(3)  # 7 of the 10 released clients never come back
        landed = await leader.committed()
        assert 0.25 <= landed - t0 < 5.0
        assert await batch_sizes(log) == [10, 3]
        assert (leader.shipper.lingers, leader.shipper.linger_cut) == (1, 1)
    finally:
        await leader.shipper.close()


async def test_a_quiet_shipper_does_not_linger(
    etcd_shared: EtcdCluster, etcd_client: ClientFactory, prefix: str
) -> None:
    log, leader = await start(etcd_shared, etcd_client, prefix, linger_max=10.0)
    try:
        for _ in range(3):
            t0 = time.monotonic()
            leader.puts(LINGER_MIN_RECORDS - 1)
            assert await leader.committed() - t0 < 2.0
        assert await batch_sizes(log) == [LINGER_MIN_RECORDS - 1] * 3
        assert leader.shipper.lingers == 0
    finally:
        await leader.shipper.close()
