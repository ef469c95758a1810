"""The package's layers depend one way: app -> shell -> protocol -> core, binlog -> core.

Read from the source (ast), so a new import that breaks the direction, reaches into another
module's private names or closes an import cycle fails here, before review. The layers are
described in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "beanstalk_py"

# The layer each layer may import (besides itself and the standard library / dependencies).
# "root" is beanstalk_py/__init__.py (__version__); "system" is beanstalk_py/system.py, the
# real clock and host facts behind the core's seams (a leaf: stdlib only).
MAY_IMPORT: dict[str, set[str]] = {
    "root": set(),
    "system": set(),
    "core": set(),
    "protocol": {"core"},
    "binlog": {"core"},
    # the web console's pages and API: it sees the server only through its ConsoleBackend
    # protocol, which shell/console_backend.py implements
    "console": set(),
    # the etcd replicated log and leadership (docs/CLUSTER.md): batches are opaque bytes
    "cluster": set(),
    # the cluster's engine side: batches of journal records, applying them, the leader's
    # journal that ships them through the etcd log (cluster)
    "replica": {"core", "binlog", "cluster"},
    "shell": {"root", "system", "core", "protocol", "binlog", "console"},
    "app": {
        "root",
        "system",
        "core",
        "protocol",
        "binlog",
        "shell",
        "console",
        "cluster",
        "replica",
    },
}

# Justified exceptions, (importer, imported module): keep this list short and explained.
LAYER_EXCEPTIONS = {
    # The beanstalkd importer makes its own SystemClock for the Binlog it writes; it should
    # be handed the clock by app/importer_cli.py (binlog/ is another change's area).
    ("beanstalk_py.binlog.beanstalkd_import", "beanstalk_py.system"),
}

# The sans-IO layers: time, sockets, files and the loop come through seams.
NO_IO = {"core", "protocol"}
IO_MODULES = {"asyncio", "socket", "os", "time", "selectors"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in ("__main__", "healthcheck"):
        return "app"  # the `python -m` entry points
    if parts[1] == "system":
        return "system"
    return parts[1]


class Import:
    def __init__(self, target: str, names: list[str], type_only: bool, line: int) -> None:
        self.target = target  # a stdlib/third-party name or a module of ours
        self.names = names  # the names taken with `from target import ...`
        self.type_only = type_only  # under `if TYPE_CHECKING:`
        self.line = line


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str) -> Iterator[Import]:
    """Every import of ``module``, at any depth (lazy imports in functions count)."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))

    def walk(node: ast.AST, type_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk_stmt(stmt, True)
                for stmt in child.orelse:
                    yield from walk_stmt(stmt, type_only)
            else:
                yield from walk_stmt(child, type_only)

    def walk_stmt(node: ast.AST, type_only: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, [], type_only, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}:{node.lineno}: use absolute imports"
            assert node.module is not None
            names = [a.name for a in node.names]
            ours = [n for n in names if f"{node.module}.{n}" in MODULES]
            for n in ours:  # `from beanstalk_py.shell import listeners`: the module itself
                yield Import(f"{node.module}.{n}", [], type_only, node.lineno)
            rest = [n for n in names if n not in ours]
            if rest or not ours:
                yield Import(node.module, rest, type_only, node.lineno)
        else:
            yield from walk(node, type_only)

    yield from walk(tree, False)


def ours(target: str) -> bool:
    return target == "beanstalk_py" or target.startswith("beanstalk_py.")


def test_the_package_has_the_layers() -> None:
    assert {layer(m) for m in MODULES} == set(MAY_IMPORT)
    # nothing else left flat at the top: the version, `python -m` entry points, the real clock
    top = {m for m, p in MODULES.items() if m.count(".") == 1 and p.name != "__init__.py"}
    assert top == {"beanstalk_py.__main__", "beanstalk_py.healthcheck", "beanstalk_py.system"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module: str) -> None:
    mine = layer(module)
    wrong = []
    for imp in imports(module):
        if not ours(imp.target):
            if mine in NO_IO and imp.target.split(".")[0] in IO_MODULES:
                wrong.append(f"line {imp.line}: {imp.target} in the sans-IO {mine} layer")
            continue
        theirs = layer(imp.target)
        if theirs == mine or theirs in MAY_IMPORT[mine]:
            continue
        if (module, imp.target) not in LAYER_EXCEPTIONS:
            wrong.append(f"line {imp.line}: {mine} imports {imp.target} ({theirs})")
    assert wrong == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_of_another_module(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    wrong = []
    for imp in imports(module):
        if ours(imp.target) and imp.target != module:
            wrong += [f"{imp.target}.{n}" for n in imp.names if _private(n)]
    # `mod._name` where `mod` is one of our modules bound by an import
    bound = {
        alias.asname or alias.name: f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and ours(node.module)
        for alias in node.names
        if f"{node.module}.{alias.name}" in MODULES
    }
    bound |= {
        alias.asname: alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.asname and alias.name in MODULES
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and _private(node.attr)
        ):
            wrong.append(f"{bound[node.value.id]}.{node.attr}")
    assert sorted(wrong) == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_import_cycle() -> None:
    """Imports at run time (not ``if TYPE_CHECKING:``) form no cycle between our modules."""
    graph = {
        m: sorted({i.target for i in imports(m) if ours(i.target) and not i.type_only} - {m})
        for m in MODULES
    }
    for targets in graph.values():
        assert set(targets) <= set(MODULES), targets
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                cycles.append([*path[path.index(n) :], n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)
    assert cycles == []


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The walker finds lazy, type-only and `from package import module` imports."""
    found = {(i.target, i.type_only) for i in imports("beanstalk_py.shell.server")}
    assert ("beanstalk_py.core.engine", False) in found
    assert ("beanstalk_py.shell.listeners", False) in found  # from beanstalk_py.shell import
    assert ("beanstalk_py.binlog", True) in found  # under TYPE_CHECKING
    lazy = {i.target for i in imports("beanstalk_py.shell.connection")}
    assert "beanstalk_py.shell.httpd" in lazy  # imported inside a method
