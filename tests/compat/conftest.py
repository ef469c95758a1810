"""Fixtures for compat tests: the reference binary (required under CI=true) and our package."""

from __future__ import annotations

import importlib

import pytest
from support.requirements import require
from support.servers import reference_available

from .differential import ours_kind


@pytest.fixture
def need_reference() -> None:
    require(reference_available(), "/usr/bin/beanstalkd: the reference server (Debian: beanstalkd)")


@pytest.fixture
def need_ours() -> None:
    if ours_kind() == "ours":
        # Not importable is an error, never a skip.
        importlib.import_module("beanstalk_py.app.cli")
        importlib.import_module("beanstalk_py.shell.server")
