"""A beanstalkd queue moved to beanstalk-py with the real processes: beanstalkd writes it,
``beanstalk-py import-beanstalkd-binlog`` converts it, ``beanstalk-py -b`` serves it. Times are
wall-clock epoch values in both binlogs, so a delayed job keeps its time left and a job its age
only if the server reads the system's wall clock where it must (``system.SystemClock``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import greenstalk
from support.requirements import require
from support.servers import ours_argv, ours_process, reference_argv, running

BEANSTALKD = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"


def test_an_imported_queue_keeps_its_delays_and_ages(tmp_path: Path) -> None:
    require(os.path.exists(BEANSTALKD), f"{BEANSTALKD}: the reference server (Debian: beanstalkd)")
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    with running(reference_argv("-b", str(src))) as ref:
        c = greenstalk.Client((ref.host, ref.port))
        ready_id = c.put("now", ttr=60)
        delayed_id = c.put("later", delay=100, ttr=60)
        c.close()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "beanstalk_py",
            "import-beanstalkd-binlog",
            str(src),
            "-b",
            str(dst),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **ours_process(),
    )
    assert done.returncode == 0, done.stderr
    assert "imported 2 jobs (1 ready, 1 delayed, 0 buried)" in done.stdout
    with running(ours_argv("-b", str(dst))) as srv:
        c = greenstalk.Client((srv.host, srv.port))
        delayed = c.stats_job(delayed_id)
        ready = c.stats_job(ready_id)
        c.close()
    assert delayed["state"] == "delayed"
    assert 80 <= int(delayed["time-left"]) <= 100, delayed
    assert 0 <= int(ready["age"]) <= 20, ready
    assert ready["state"] == "ready"
