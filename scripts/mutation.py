#!/usr/bin/env python3
"""Small AST-based mutation testing for beanstalk-py, run on demand (not in CI).

Why not mutmut 3 (tried, see docs/TESTING.md): it maps mutants to tests in-process, so code
reached only by the process tests (the CLI, start-up) counts as untested, and its re-run of
single tests by node id fails on this suite's parametrised ids (escaped bytes such as ``\\r\\n``).
This script runs the module's real test files, subprocess tests included:

* it copies the working tree (no ``.git``) into a temporary directory, one copy per worker;
* it enumerates mutants of the modules named on the command line by walking their AST:
  comparison operators (``==``/``!=``, ``<``/``<=``, ``in``/``not in``, ...), ``and``/``or``,
  removed ``not``, integer constants (n -> n + 1), ``True``/``False``, ``return X`` ->
  ``return None``, and dropped call statements and augmented assignments (a missing side
  effect: a journal write, a counter);
* each mutant is spliced into the source at the node's position (the rest of the file is kept
  byte for byte), applied alone, and the module's test subset runs with ``-x`` and a timeout;
  a failing (or timed-out) run kills the mutant, a green run means it survived;
* the unmutated tree must pass the same subsets first (the baseline), or nothing is reported.

Usage::

    python scripts/mutation.py                         # every mutant of every module (slow)
    python scripts/mutation.py --sample 150 --seed 1   # a random sample over all modules
    python scripts/mutation.py engine --jobs 2 --json out.json

The test subset per module is in ``MODULES`` below: unit tests plus the in-process integration
tests that exercise the module, so one mutant costs seconds, not the whole suite.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import dataclasses
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TRANSCRIPTS = "tests/integration/test_transcripts_*.py"

#: module group -> (source files to mutate, test files that guard them; globs allowed)
MODULES: dict[str, tuple[list[str], list[str]]] = {
    # The sans-IO core: what engine.py held before the split into beanstalk_py/core/.
    "engine": (
        [
            "beanstalk_py/core/engine.py",
            "beanstalk_py/core/restore.py",
            "beanstalk_py/core/timers.py",
            "beanstalk_py/core/tube.py",
            "beanstalk_py/core/stats.py",
            "beanstalk_py/core/journal.py",
        ],
        [
            "tests/unit/test_engine.py",
            "tests/unit/test_tube_queues.py",
            "tests/unit/test_binlog_restore.py",
            TRANSCRIPTS,
            "tests/integration/test_binlog_server.py",
            "tests/integration/test_restart_states.py",
        ],
    ),
    "protocol": (
        [
            "beanstalk_py/protocol/commands.py",
            "beanstalk_py/protocol/framing.py",
            "beanstalk_py/protocol/session.py",
            "beanstalk_py/protocol/arguments.py",
        ],
        ["tests/unit/test_parser.py", TRANSCRIPTS, "tests/integration/test_auth.py"],
    ),
    "binlog": (
        [
            "beanstalk_py/binlog/writer.py",
            "beanstalk_py/binlog/segments.py",
            "beanstalk_py/binlog/compaction.py",
            "beanstalk_py/binlog/sync.py",
            "beanstalk_py/binlog/replay.py",
            "beanstalk_py/binlog/format.py",
            "beanstalk_py/binlog/fileops.py",
        ],
        [
            "tests/unit/test_binlog_*.py",
            "tests/integration/test_binlog_server.py",
            "tests/integration/test_restart_states.py",
            "tests/integration/test_durability_process.py",
        ],
    ),
    "server": (
        [
            "beanstalk_py/shell/server.py",
            "beanstalk_py/shell/connection.py",
            "beanstalk_py/shell/commit.py",
        ],
        [
            TRANSCRIPTS,
            "tests/integration/test_binlog_server.py",
            "tests/integration/test_http.py",
            "tests/integration/test_metrics.py",
            "tests/integration/test_auth.py",
            "tests/integration/test_hardening.py",
            "tests/integration/test_durability_process.py",
            "tests/integration/test_process.py",
        ],
    ),
    "cli": (
        ["beanstalk_py/app/cli.py"],
        ["tests/unit/test_cli.py", "tests/integration/test_cli_flags_process.py"],
    ),
}

_SWAP_CMP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}

#: calls whose removal only changes log output or type checking (equivalent by construction)
_SKIP_CALL_PREFIXES = ("log.", "logger.", "logging.", "warnings.", "typing.", "click.echo")


@dataclasses.dataclass
class Mutant:
    path: str  # relative to the repository root
    line: int
    col: int
    end_line: int
    end_col: int
    replacement: str
    kind: str
    original: str = ""

    @property
    def label(self) -> str:
        return f"{self.path}:{self.line} {self.kind}: {self.original!r} -> {self.replacement!r}"


def _segment(lines: list[bytes], line: int, col: int, end_line: int, end_col: int) -> str:
    if line == end_line:
        return lines[line - 1][col:end_col].decode()
    parts = [lines[line - 1][col:]]
    parts.extend(lines[line : end_line - 1])
    parts.append(lines[end_line - 1][:end_col])
    return b"".join(parts).decode()


def apply(source: str, m: Mutant) -> str:
    """``source`` with the node at ``m``'s span replaced (AST columns are UTF-8 byte offsets)."""
    lines = source.encode().splitlines(keepends=True)
    head = b"".join(lines[: m.line - 1]) + lines[m.line - 1][: m.col]
    tail = lines[m.end_line - 1][m.end_col :] + b"".join(lines[m.end_line :])
    return (head + m.replacement.encode() + tail).decode()


class _Finder(ast.NodeVisitor):
    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.lines = source.encode().splitlines(keepends=True)
        self.found: list[Mutant] = []

    def _add(self, node: ast.AST, replacement: str, kind: str) -> None:
        line, col = node.lineno, node.col_offset  # type: ignore[attr-defined]
        end_line, end_col = node.end_lineno, node.end_col_offset  # type: ignore[attr-defined]
        original = _segment(self.lines, line, col, end_line, end_col)
        if replacement.strip() == original.strip():
            return
        self.found.append(
            Mutant(self.path, line, col, end_line, end_col, replacement, kind, original)
        )

    # Docstrings, annotations and `if TYPE_CHECKING:` blocks carry no behaviour.
    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant):
            return
        if isinstance(node.value, ast.Call | ast.Await):
            call = node.value.value if isinstance(node.value, ast.Await) else node.value
            text = ast.unparse(call.func) if isinstance(call, ast.Call) else ""
            if not text.startswith(_SKIP_CALL_PREFIXES):
                self._add(node, "pass", "drop call")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_arg(self, node: ast.arg) -> None:
        return

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for stmt in node.body:
            self.visit(stmt)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(default)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        if ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._add(node, "pass", "drop update")
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None
        ):
            self._add(node, "return None", "return None")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for i, op in enumerate(node.ops):
            swap = _SWAP_CMP.get(type(op))
            if swap is None:
                continue
            ops = list(node.ops)
            ops[i] = swap()
            mutated = ast.Compare(left=node.left, ops=ops, comparators=node.comparators)
            self._add(node, f"({ast.unparse(mutated)})", "compare")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._add(node, f"({ast.unparse(ast.BoolOp(op=other, values=node.values))})", "bool op")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self._add(node, f"({ast.unparse(node.operand)})", "drop not")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self._add(node, str(not value), "constant")
        elif isinstance(value, int):
            self._add(node, str(value + 1), "constant")


def find_mutants(root: Path, rel: str) -> list[Mutant]:
    source = (root / rel).read_text()
    finder = _Finder(rel, source)
    finder.visit(ast.parse(source))
    valid = []
    for m in finder.found:
        try:
            compile(apply(source, m), rel, "exec")
        except SyntaxError:
            continue
        valid.append(m)
    return valid


# --- running tests in copies of the tree ----------------------------------------------------


def copy_tree(dest: Path) -> Path:
    """A copy of the working tree (sources and tests, no VCS data or caches) at ``dest``."""
    ignore = shutil.ignore_patterns(
        ".git",
        "mutants",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
        ".benchmarks",
        "*.so",
    )
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


def test_env() -> dict[str, str]:
    env = dict(os.environ)
    # The copy's own package must be the one under test, pure Python, fresh bytecode.
    for name in ("PYTHONPATH", "BEANSTALK_PY_TEST_PYTHONPATH", "BEANSTALK_PY_EXPECT_COMPILED"):
        env.pop(name, None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def expand(root: Path, patterns: list[str]) -> list[str]:
    out: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(root / pattern)))
        if not matches:
            raise SystemExit(f"no test file matches {pattern}")
        out.extend(os.path.relpath(m, root) for m in matches)
    return out


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """Run ``tests`` in ``root``: ("passed" | "failed" | "timeout", seconds, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.monotonic()
    try:
        run = subprocess.run(
            cmd,
            cwd=root,
            env=test_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return "timeout", time.monotonic() - t0, out[-2000:]
    outcome = "passed" if run.returncode == 0 else "failed"
    return outcome, time.monotonic() - t0, (run.stdout + run.stderr)[-2000:]


def _key(r: dict[str, object]) -> tuple[object, ...]:
    return (r["group"], r["path"], r["line"], r["kind"], r["original"], r["replacement"])


def _survivors(path: Path, groups: list[str]) -> list[tuple[str, Mutant]]:
    out = []
    fields = {f.name for f in dataclasses.fields(Mutant)}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["status"] != "survived" or r["group"] not in groups:
            continue
        m = Mutant(**{k: v for k, v in r.items() if k in fields})
        lines = (REPO / m.path).read_text().encode().splitlines(keepends=True)
        try:
            here = _segment(lines, m.line, m.col, m.end_line, m.end_col)
        except IndexError:
            here = None
        if here != m.original:
            print(f"moved, left out: {m.label}", flush=True)
            continue
        out.append((str(r["group"]), m))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"any of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--sample", type=int, default=0, help="random sample of N mutants")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument(
        "--results",
        type=Path,
        help="append each result to this JSON-lines file as it comes; mutants already "
        "recorded there are not run again (resume an interrupted run)",
    )
    parser.add_argument(
        "--survivors-of",
        type=Path,
        help="run only the mutants recorded as survived in this JSON-lines file (a --results "
        "file of an earlier run) against today's tests; a mutant whose source text moved is "
        "reported and left out",
    )
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    args = parser.parse_args()
    groups = args.modules or list(MODULES)
    unknown = set(groups) - set(MODULES)
    if unknown:
        parser.error(f"unknown module group(s): {', '.join(sorted(unknown))}")

    candidates: list[tuple[str, Mutant]] = []
    for group in groups:
        for rel in MODULES[group][0]:
            candidates.extend((group, m) for m in find_mutants(REPO, rel))
    print(f"{len(candidates)} mutants in {', '.join(groups)}", flush=True)
    if args.survivors_of:
        candidates = _survivors(args.survivors_of, groups)
        print(f"{len(candidates)} survivors of {args.survivors_of}", flush=True)
    elif args.sample and args.sample < len(candidates):
        # In sampled order, so an interrupted run is still a uniform sample.
        candidates = random.Random(args.seed).sample(candidates, args.sample)
        print(f"random sample of {len(candidates)} (seed {args.seed})", flush=True)
    done: dict[tuple[object, ...], dict[str, object]] = {}
    if args.results and args.results.exists():
        for line in args.results.read_text().splitlines():
            r = json.loads(line)
            done[_key(r)] = r
    if args.list:
        for group, m in candidates:
            print(f"[{group}] {m.label}")
        return 0

    with tempfile.TemporaryDirectory(prefix="bspy-mut-") as tmp:
        roots = [copy_tree(Path(tmp) / f"w{i}") for i in range(max(1, args.jobs))]
        timeouts: dict[str, float] = {}
        for group in groups:
            tests = expand(roots[0], MODULES[group][1])
            outcome, secs, tail = run_tests(roots[0], tests, timeout=600)
            if outcome != "passed":
                print(f"baseline for {group} does not pass; fix that first:\n{tail}")
                return 2
            timeouts[group] = secs * 3 + 30
            print(f"baseline {group}: {secs:.1f} s", flush=True)

        free = list(roots)
        results: list[dict[str, object]] = []
        todo = []
        for g, m in candidates:
            prior = done.get(_key({"group": g, **dataclasses.asdict(m)}))
            if prior is not None:
                results.append(prior)
            else:
                todo.append((g, m))
        if results:
            print(f"{len(results)} results taken from {args.results}", flush=True)

        def one(group: str, m: Mutant) -> dict[str, object]:
            root = free.pop()
            try:
                target = root / m.path
                original = target.read_text()
                target.write_text(apply(original, m))
                try:
                    outcome, secs, _ = run_tests(
                        root, expand(root, MODULES[group][1]), timeouts[group]
                    )
                finally:
                    target.write_text(original)
            finally:
                free.append(root)
            status = "survived" if outcome == "passed" else "killed"
            return {
                "group": group,
                **dataclasses.asdict(m),
                "status": status,
                "outcome": outcome,
                "seconds": round(secs, 1),
            }

        with concurrent.futures.ThreadPoolExecutor(len(roots)) as pool:
            futures = [pool.submit(one, g, m) for g, m in todo]
            for n, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                r = fut.result()
                results.append(r)
                if args.results:
                    with args.results.open("a") as f:
                        f.write(json.dumps(r) + "\n")
                print(
                    f"[{n}/{len(futures)}] {r['status']:8} {r['path']}:{r['line']} "
                    f"{r['kind']}: {r['original']!r} -> {r['replacement']!r}",
                    flush=True,
                )

    print("\nmodule   mutants  killed  survived  score")
    for group in groups:
        rs = [r for r in results if r["group"] == group]
        if rs:
            killed = sum(r["status"] == "killed" for r in rs)
            print(
                f"{group:8} {len(rs):7}  {killed:6}  {len(rs) - killed:8}  "
                f"{100 * killed / len(rs):4.0f}%"
            )
    killed = sum(r["status"] == "killed" for r in results)
    if results:
        print(
            f"{'total':8} {len(results):7}  {killed:6}  {len(results) - killed:8}  "
            f"{100 * killed / len(results):4.0f}%"
        )
    print("\nsurvivors:")
    for r in sorted(results, key=lambda r: (str(r["path"]), int(r["line"]))):  # type: ignore[call-overload]
        if r["status"] == "survived":
            print(
                f"  {r['path']}:{r['line']} {r['kind']}: {r['original']!r} -> {r['replacement']!r}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
