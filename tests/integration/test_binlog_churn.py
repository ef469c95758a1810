"""Bounded binlog directory under churn around long-lived jobs (issue 10, item 2).

Long-lived jobs (ready, delayed an hour, buried, reserved by a connection that stays open)
sit in the binlog while megabytes of jobs are put and deleted through another tube. The
directory must stay within a few segments at every point (README, "Bounded disk"), and after
kill -9 and a restart every long-lived job must be there with its body, tube, state and
priority (the reserved one ready). The scenario itself lives in ``benchmarks/binlog_churn.py``,
which also prints the sizes for the issue's figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.binlog_churn import run

SMALL = 65536


@pytest.mark.parametrize("shape", ["ready", "delayed", "buried", "reserved"])
def test_directory_stays_bounded_with_one_shape_of_long_lived_job(
    tmp_path: Path, shape: str
) -> None:
    shapes = (shape, shape)  # two such jobs, in two tubes
    # 3 MB of churn (about 45 segments) in rounds of 6 puts then 6 deletes: half a segment a
    # round, like the issue's 100 x 5,000 bytes in 1 MiB segments.
    res = run(SMALL, 3.0, shapes=shapes, round_jobs=6, limit=4 * SMALL, bdir=tmp_path)
    assert res.problems == []


@pytest.mark.slow
def test_issue_scenario_40mb_through_1mib_segments(tmp_path: Path) -> None:
    """The issue's numbers: -s 1 MiB, 40 MB of churn, every shape at once, under 4 MB."""
    res = run(1048576, 40.0, report_mb=10.0, limit=4_000_000, bdir=tmp_path)
    assert res.problems == []
    assert [mb for mb, _ in res.sizes] == [10.0, 20.0, 30.0, 40.0]
