"""The packed fields of ``Job``: ttr and delay in one int, the rare counters on demand."""

from __future__ import annotations

import pytest

from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import Job

U32 = 0xFFFFFFFF
TUBE = Engine(ManualClock()).default


@pytest.mark.parametrize(("delay", "ttr"), [(0, 1), (U32, 1), (0, U32), (U32, U32), (7, 9)])
def test_ttr_and_delay_keep_their_full_range(delay: int, ttr: int) -> None:
    job = Job(1, TUBE, 0, delay, ttr, b"\r\n", 0.0)
    assert (job.delay, job.ttr) == (delay, ttr)
    job.delay = U32 - delay
    assert (job.delay, job.ttr) == (U32 - delay, ttr)
    job.ttr = U32 + 1 - ttr
    assert (job.delay, job.ttr) == (U32 - delay, U32 + 1 - ttr)
    with pytest.raises(ValueError):
        job.ttr = U32 + 1
    with pytest.raises(ValueError):
        Job(1, TUBE, 0, 0, U32 + 1, b"\r\n", 0.0)


def test_rare_counters_cost_nothing_until_they_move() -> None:
    job = Job(1, TUBE, 0, 0, 1, b"\r\n", 0.0)
    job.timeouts = job.releases = job.buries = job.kicks = 0  # as replay writes them
    assert job.counters is None
    assert (job.timeouts, job.releases, job.buries, job.kicks) == (0, 0, 0, 0)
    job.releases += 1
    job.kicks = 3
    assert job.counters is not None
    assert (job.timeouts, job.releases, job.buries, job.kicks) == (0, 1, 0, 3)
    job.releases -= 1
    job.buries = 2**40
    job.timeouts = 5
    assert (job.timeouts, job.releases, job.buries, job.kicks) == (5, 0, 2**40, 3)
