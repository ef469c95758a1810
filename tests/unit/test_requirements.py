"""A missing external component skips locally and fails under CI=true (support/requirements.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]

PROBE = """
from support.requirements import require_binary

def test_needs_a_missing_tool():
    require_binary("no-such-tool-bspy", "a probe (Debian: none)")

def test_needs_a_present_tool():
    assert require_binary("sh", "a shell").endswith("/sh")
"""


def run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_probe.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_component_skips_outside_ci(tmp_path: Path) -> None:
    run = run_probe(tmp_path, None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout
    assert "not installed: no-such-tool-bspy: a probe (Debian: none)" in run.stdout


def test_missing_component_fails_under_ci(tmp_path: Path) -> None:
    run = run_probe(tmp_path, "true")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout
    assert "required component missing under CI=true: no-such-tool-bspy" in run.stdout
