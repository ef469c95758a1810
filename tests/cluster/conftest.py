"""Fixtures for the cluster tests: real etcd members (support.etcd) and etcd clients.

``etcd_shared`` is one 3-member cluster for the whole session (tests keep apart by key
prefix); ``etcd_fresh`` is a cluster of the test's own, for tests that kill or stop members or
compact etcd's history. Without aetcd (``beanstalk-py[cluster]``) only
test_cluster_requirements.py is collected; it skips locally and fails under CI=true.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from support.etcd import ClientFactory, EtcdCluster


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


if not (installed("aetcd") and installed("grpc")):
    collect_ignore_glob = ["test_cluster_[!r]*.py"]


@pytest.fixture(scope="session")
def etcd_shared() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def etcd_fresh() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def prefix() -> str:
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture
async def etcd_client() -> AsyncIterator[ClientFactory]:
    """``await etcd_client(cluster, order=None, **kw)`` -> a connected EtcdClient; ``order``
    lists member indexes in the order of the gRPC target (pick_first uses the first)."""
    from beanstalk_py.cluster.client import EtcdClient
    from beanstalk_py.cluster.config import parse_cluster_url

    made: list[EtcdClient] = []

    async def make(
        cluster: EtcdCluster, order: Sequence[int] | None = None, **kw: Any
    ) -> EtcdClient:
        endpoints = parse_cluster_url(cluster.url).endpoints
        if order is not None:
            endpoints = tuple(endpoints[i] for i in order)
        client = await EtcdClient.connect(endpoints, **kw)
        made.append(client)
        return client

    yield make
    for c in made:
        await c.close()
