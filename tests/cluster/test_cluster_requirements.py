"""The cluster tests need the optional etcd client; this says so instead of silently
collecting nothing (skip locally, fail under CI=true)."""

import importlib.util

from support.requirements import require


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def test_etcd_client_installed() -> None:
    have = installed("aetcd") and installed("grpc")
    require(have, "aetcd + grpcio: pip install 'beanstalk-py[cluster]' (or '.[test]')")
