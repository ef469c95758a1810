"""Which protocol core this process runs: the mypyc-compiled one or the pure-Python one.

A regular ``pip install .`` compiles the core with mypyc (hatch_build.py); editable installs and
``BEANSTALK_PY_PURE=1`` stay pure Python. The engine module is part of the compiled set, so its
file tells which one was imported.
"""

from __future__ import annotations

import importlib.machinery


def core_kind() -> str:
    """``"mypyc"`` if ``beanstalk_py.engine`` is an extension module, else ``"pure"``."""
    from beanstalk_py import engine

    path = getattr(engine, "__file__", None) or ""
    if path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return "mypyc"
    return "pure"
