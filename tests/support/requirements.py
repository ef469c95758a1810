"""External components the suite needs (beanstalkd, ruby + beaneater, systemd tools, ...).

Locally a missing component skips the test that needs it, with the Debian package to install.
Under ``CI=true`` (``.ci/run`` installs every component) the same test fails instead, so a
broken install can never turn into a green run with silent skips.

Deliberate skips (a reference quirk, 1.12 vs 1.13 behaviour) do not go through here.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require(available: bool, what: str) -> None:
    """Skip (locally) or fail (under CI=true) unless ``available``; ``what`` names it."""
    if available:
        return
    if in_ci():
        pytest.fail(f"required component missing under CI=true: {what}", pytrace=False)
    pytest.skip(f"not installed: {what}")


def require_binary(name: str, reason: str) -> str:
    """The path of executable ``name`` (a bare name or an absolute path).

    ``reason`` says what needs it and which package provides it, e.g.
    ``"the reference server (Debian: beanstalkd)"``.
    """
    path = shutil.which(name)
    require(path is not None, f"{name}: {reason}")
    assert path is not None
    return path
