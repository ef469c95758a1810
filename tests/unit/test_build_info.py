"""core_kind() names the protocol core this process imported: mypyc-compiled or pure Python.

The suite runs twice in CI (.ci/run): over the source tree (pure) and over a regular
``pip install .`` (.ci/test-compiled, compiled), so both answers are exercised.
"""

from __future__ import annotations

import importlib.machinery

from beanstalk_py.core import engine
from beanstalk_py.shell.build_info import core_kind


def test_core_kind_follows_how_the_engine_was_loaded() -> None:
    # The import system's own record (the loader), not the file name core_kind() looks at.
    compiled = isinstance(engine.__spec__.loader, importlib.machinery.ExtensionFileLoader)
    assert core_kind() == ("mypyc" if compiled else "pure")
