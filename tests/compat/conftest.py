"""Skips for compat tests: the reference binary and a runnable ``python -m beanstalk_py``."""

from __future__ import annotations

import pytest
from support.harness import our_module_exists
from support.servers import reference_available

from .differential import ours_kind


@pytest.fixture
def need_reference() -> None:
    if not reference_available():
        pytest.skip("/usr/bin/beanstalkd is not installed")


@pytest.fixture
def need_ours() -> None:
    if ours_kind() == "ours" and not (
        our_module_exists("beanstalk_py.cli") and our_module_exists("beanstalk_py.server")
    ):
        pytest.skip("beanstalk_py.cli / beanstalk_py.server not available yet")
