"""The binlog package's modules depend one way and keep their private names to themselves.

``replay`` returns what it read and ``writer`` adopts it (``Binlog.adopt``); the importer uses
public ``Binlog`` methods. These checks read the source, so a regression fails here before it
shows up as a cycle at import time."""

from __future__ import annotations

import ast
from pathlib import Path

import beanstalk_py.binlog

PACKAGE = Path(beanstalk_py.binlog.__file__).parent
MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py")

# Which binlog modules each one may import (the etcd wal shape: format at the bottom, the
# writer on top); ``__init__`` re-exports the public names.
ALLOWED = {
    "errors": set(),
    "fileops": set(),
    "format": set(),
    "sync": {"fileops"},
    "segments": {"format", "fileops", "sync"},
    "compaction": {"format", "segments", "fileops", "sync"},
    "replay": {"format", "segments", "fileops"},
    "writer": {"format", "segments", "compaction", "sync", "replay", "errors", "fileops"},
    "beanstalkd_import": {"errors", "fileops", "writer"},
}


def _binlog_imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "beanstalk_py.binlog":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("beanstalk_py.binlog."):
                found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("beanstalk_py.binlog."):
                    found.add(alias.name.rsplit(".", 1)[1])
    return found


def test_every_binlog_module_is_listed() -> None:
    assert {p.stem for p in MODULES} == set(ALLOWED)


def test_binlog_modules_import_one_way() -> None:
    for path in MODULES:
        imports = _binlog_imports(ast.parse(path.read_text()))
        extra = imports - ALLOWED[path.stem]
        assert not extra, f"binlog/{path.name} imports {sorted(extra)}"


def test_no_private_names_of_other_objects_or_modules() -> None:
    """``x._name`` only on ``self``/``cls``; no ``from m import _name``."""
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"binlog/{path.name}:{node.lineno} imports {private}"
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                if node.attr.startswith("__") and node.attr.endswith("__"):
                    continue
                owner = node.value
                ok = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                assert ok, f"binlog/{path.name}:{node.lineno} reads {ast.unparse(node)}"
