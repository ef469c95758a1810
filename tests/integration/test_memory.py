"""Memory per job of the build under test (issue 12: <= 1.1x beanstalkd's 299 bytes per
100-byte job for the compiled build), measured by ``benchmarks/memjob.py`` in a child process
(tracemalloc: every allocation, not the allocator's slack)."""

from __future__ import annotations

import re
import subprocess
import sys

from support.servers import REPO_ROOT, ours_process

# Bytes per 100-byte job traced by memjob.py: 1.1x beanstalkd's 299 for the compiled build;
# the pure-Python one boxes two more fields (pri, created).
LIMIT = {"compiled": 329.0, "pure": 400.0}


def test_bytes_per_queued_job() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "memjob.py"), "--jobs", "30000"],
        capture_output=True,
        timeout=120,
        check=True,
        **ours_process(),
    ).stdout.decode()
    kind = re.search(r"\((compiled|pure)\)", out)
    traced = re.search(r"traced memory growth: ([\d.]+) bytes/job", out)
    assert kind and traced, out
    assert float(traced.group(1)) <= LIMIT[kind.group(1)], out
