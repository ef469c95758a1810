"""The lazy per-tube queues against a plain sorted model (beanstalkd's testheap.c idea)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from beanstalk_py.core.job import DELETED, READY, Job
from beanstalk_py.core.jobtable import JobTable
from beanstalk_py.core.tube import Tube

ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 5)),
        st.tuples(st.just("take"), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, 50)),
        st.tuples(st.just("repri"), st.integers(0, 50)),
        st.tuples(st.just("back"), st.integers(0, 50)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_ready_queue_always_yields_lowest_pri_then_id(steps: list[tuple[str, int]]) -> None:
    tube = Tube("t")
    jobs = JobTable()
    model: dict[int, int] = {}  # id -> pri of ready jobs
    next_id = 1

    def unready(job_id: int) -> None:
        jobs[job_id].state = DELETED
        tube.ready_ct -= 1
        del model[job_id]

    for op, arg in steps:
        if op == "put":
            job = Job(next_id, tube, arg, 0, 1, b"\r\n", 0.0)
            jobs[next_id] = job
            model[next_id] = arg
            tube.push_ready(job, jobs)
            tube.ready_ct += 1
            next_id += 1
        elif op == "take" and model:
            head = tube.peek_ready(jobs)
            assert head is not None
            assert (head.pri, head.id) == min((p, i) for i, p in model.items())
            unready(head.id)
        elif op == "drop" and arg in model:
            unready(arg)
        elif op == "back" and arg in model:
            # leave the queue and come back with the same priority behind newer ids
            job = jobs[arg]
            unready(arg)
            job.state = READY
            model[arg] = job.pri
            tube.push_ready(job, jobs)
            tube.ready_ct += 1
        elif op == "repri" and arg in model:
            # leave the queue and come back with another priority (release with a new pri)
            job = jobs[arg]
            unready(arg)
            job.state = READY
            job.pri = (job.pri + 3) % 7
            model[arg] = job.pri
            tube.push_ready(job, jobs)
            tube.ready_ct += 1
        head = tube.peek_ready(jobs)
        expected = min(((p, i) for i, p in model.items()), default=None)
        assert (None if head is None else (head.pri, head.id)) == expected
        assert tube.ready_entries <= 2 * len(model) + 65
