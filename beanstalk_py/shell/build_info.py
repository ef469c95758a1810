"""Which build of the protocol core is running: mypyc-compiled or pure Python.

A regular ``pip install .`` compiles the core modules (hatch_build.py ``CORE``) with mypyc;
editable installs and ``BEANSTALK_PY_PURE=1`` stay pure. ``core_kind()`` tells them apart by the
engine module's loader, without importing the engine if it is not loaded yet.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util


def core_kind() -> str:
    """``"mypyc"`` if ``beanstalk_py.core.engine`` is an extension module, else ``"pure"``."""
    spec = importlib.util.find_spec("beanstalk_py.core.engine")
    if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
        return "mypyc"
    return "pure"
