"""The cluster tests need the optional etcd client; this says so instead of silently
collecting nothing (skip locally, fail under CI=true)."""

import importlib.util

from support.requirements import require


def test_etcd_client_installed() -> None:
    have = all(importlib.util.find_spec(m) is not None for m in ("aetcd", "grpc"))
    require(have, "aetcd + grpcio: pip install 'beanstalk-py[cluster]' (or '.[test]')")
