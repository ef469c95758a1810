"""Fixtures shared by the integration tests that start the real server process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.servers import ServerProcess, ours_argv, ours_env

ServerProcessFactory = Callable[..., ServerProcess]


@pytest.fixture
def start_ours() -> Iterator[ServerProcessFactory]:
    """``start_ours(*flags)``: a running ``python -m beanstalk_py`` (the build under test) with
    those flags; every process started is stopped after the test."""
    procs: list[ServerProcess] = []

    def factory(*extra: str) -> ServerProcess:
        proc = ServerProcess(ours_argv(*extra), env=ours_env())
        procs.append(proc)
        return proc.start()

    yield factory
    for proc in procs:
        proc.stop()
