"""Shared fixtures for the black-box transcript tests.

``server`` yields a running server and a small handle (``ServerHandle``):

* ``.host``, ``.port`` (0 for a UNIX-socket server), ``.unix_path`` (None unless asked),
  ``.pid``, ``.max_job_size``, ``.reference`` (True when talking to /usr/bin/beanstalkd)
* ``await .connect()`` -> ``RawClient`` (over the UNIX socket when the server has one)
* ``await .advance(seconds)`` moves server time forward
* ``await .set_drain()`` turns drain mode on (SIGUSR1 for the reference)
* ``.quoted`` is the set of YAML keys whose string values are quoted (1.12 vs 1.13)

Target selection: ``BEANSTALK_TEST_TARGET=reference`` runs ``/usr/bin/beanstalkd`` as a
subprocess and ``advance`` really sleeps. Otherwise beanstalk-py's in-process ``Server`` runs on
a ``ManualClock`` and ``advance`` is instant.

Options: ``@pytest.mark.server_args(max_job_size=10, drain=True, unix=True)``.
For several servers in one test use the ``server_factory`` fixture.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.harness import (
    ServerFactory,
    ServerHandle,
    our_server,
    reference_server,
    target_is_reference,
)
from support.servers import ours_env, reference_version, remove_unix_dir, short_unix_path

__all__ = ["ServerHandle"]

# The in-process target imports beanstalk_py from this working tree even when not installed.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)


def pytest_configure(config: pytest.Config) -> None:
    # Every child that imports beanstalk_py (`python -m beanstalk_py`, `-c` snippets) finds the
    # build under test first, whatever its cwd: this tree, or the compiled one under
    # .ci/test-compiled (BEANSTALK_PY_TEST_PYTHONPATH), never an unrelated installed copy.
    os.environ["PYTHONPATH"] = ours_env()["PYTHONPATH"]
    config.addinivalue_line(
        "markers",
        "server_args(max_job_size=N, drain=bool, unix=bool): options for the `server` fixture",
    )
    config.addinivalue_line(
        "markers", "ours_only(reason): skip under BEANSTALK_TEST_TARGET=reference"
    )
    config.addinivalue_line(
        "markers",
        "needs_1_13(reason): 1.13 behaviour; skipped when the reference binary is older",
    )
    config.addinivalue_line(
        "markers",
        "reference_only(reason): a reference quirk beanstalk-py deliberately does not copy",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not target_is_reference():
        for item in items:
            marker = item.get_closest_marker("reference_only")
            if marker is not None:
                reason = marker.args[0] if marker.args else "reference behaviour only"
                item.add_marker(pytest.mark.skip(reason=reason))
        return
    old_reference = reference_version() < (1, 13)
    for item in items:
        if old_reference and (marker := item.get_closest_marker("needs_1_13")) is not None:
            reason = marker.args[0] if marker.args else "1.13 behaviour"
            item.add_marker(
                pytest.mark.skip(reason=f"reference is {reference_version()}: {reason}")
            )
        marker = item.get_closest_marker("ours_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "beanstalk-py behaviour only"
            item.add_marker(pytest.mark.skip(reason=f"reference differs: {reason}"))


@pytest.fixture
def server_factory() -> ServerFactory:
    """``async with server_factory(max_job_size=10, drain=False, unix_path=None) as srv:``."""

    def factory(
        *, max_job_size: int | None = None, drain: bool = False, unix_path: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[ServerHandle]:
        if target_is_reference():
            return reference_server(max_job_size, drain, unix_path)
        return our_server(max_job_size, drain, unix_path)

    return factory


@pytest.fixture
async def server(
    request: pytest.FixtureRequest, server_factory: ServerFactory
) -> AsyncIterator[ServerHandle]:
    marker = request.node.get_closest_marker("server_args")
    opts: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    unknown = set(opts) - {"max_job_size", "drain", "unix"}
    assert not unknown, f"unknown server_args: {unknown}"
    unix_path = short_unix_path() if opts.get("unix") else None
    try:
        async with server_factory(
            max_job_size=opts.get("max_job_size"),
            drain=bool(opts.get("drain")),
            unix_path=unix_path,
        ) as handle:
            yield handle
    finally:
        remove_unix_dir(unix_path)
