"""``JobTable`` (the engine's id -> job map in pages) against a plain dict model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import Job
from beanstalk_py.core.jobtable import PAGE_SIZE, SPARSE, JobTable

TUBE = Engine(ManualClock()).default


def job(job_id: int) -> Job:
    return Job(job_id, TUBE, 0, 0, 1, b"\r\n", 0.0)


def check(table: JobTable, model: dict[int, Job]) -> None:
    assert len(table) == len(model)
    assert bool(table) == bool(model)
    assert table.keys() == sorted(model)
    assert list(table) == sorted(model)
    assert [j.id for j in table.values()] == sorted(model)
    assert table.items() == sorted(model.items())
    for job_id, j in model.items():
        assert table.get(job_id) is j
        assert table[job_id] is j
        assert job_id in table


ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 3 * PAGE_SIZE)),  # next ids, a run of them
        st.tuples(st.just("add"), st.integers(1, 12 * PAGE_SIZE)),  # any unused id
        st.tuples(st.just("pop"), st.integers(0, 12 * PAGE_SIZE)),
        st.tuples(st.just("drain"), st.integers(0, 12 * PAGE_SIZE)),  # pop a run from there
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_table_behaves_as_a_dict_in_id_order(steps: list[tuple[str, int]]) -> None:
    table = JobTable()
    model: dict[int, Job] = {}
    next_id = 1
    for op, arg in steps:
        if op == "put":
            for _ in range(arg):
                table[next_id] = model[next_id] = job(next_id)
                next_id += 1
        elif op == "add" and arg not in model:
            table[arg] = model[arg] = job(arg)
        elif op == "pop":
            assert table.pop(arg) is model.pop(arg, None)
        elif op == "drain":
            for job_id in range(arg, arg + 2 * PAGE_SIZE):
                assert table.pop(job_id) is model.pop(job_id, None)
        check(table, model)
        assert table.get(10**9) is None
        assert 0 not in table


def test_missing_ids() -> None:
    table = JobTable()
    table[7] = j = job(7)
    assert table.get(8) is None and table.get(0) is None and table.get(2**70) is None
    with pytest.raises(KeyError):
        table[8]
    with pytest.raises(KeyError):
        del table[8]
    del table[7]
    assert table.pop(7) is None and len(table) == 0 and not table
    table[7] = j
    table.clear()
    assert len(table) == 0 and table.values() == [] and table.get(7) is None


def test_an_old_sparse_page_spills_into_the_dict() -> None:
    """A few long-lived jobs among deleted ones do not keep a page (8 KiB) each."""
    table = JobTable()
    for i in range(1, 4 * PAGE_SIZE + 1):
        table[i] = job(i)
    assert len(table.pages) == 5  # ids 1..4096: pages 0..4 (page 4 holds id 4096)
    keep = set(range(PAGE_SIZE, 2 * PAGE_SIZE, PAGE_SIZE // SPARSE * 2))  # page 1, sparse
    for i in range(PAGE_SIZE, 2 * PAGE_SIZE):
        if i not in keep:
            table.pop(i)
    assert 1 not in table.pages and len(table.spill) == len(keep)
    assert all(table.get(i) is not None for i in keep)
    assert table.keys() == sorted([*range(1, PAGE_SIZE), *keep, *range(2 * PAGE_SIZE, 4097)])
    # a job that comes back into the spilled page (a replica adopting it) joins the spill
    table[PAGE_SIZE + 1] = job(PAGE_SIZE + 1)
    assert PAGE_SIZE + 1 in table.spill and 1 not in table.pages
    # the newest two pages never spill: that is where the puts go
    for i in range(3 * PAGE_SIZE, 4 * PAGE_SIZE - 1):
        table.pop(i)
    assert 3 in table.pages and table.pages[3].live == 1


def test_bulk_update_any_order() -> None:
    table = JobTable()
    ids = [5000, 3, 70_000, 4, 2048, *range(10_000, 12_000)]
    table.update({i: job(i) for i in ids})
    assert table.keys() == sorted(ids)
    assert len(table) == len(ids)
    # the lone old ids spilled (no page of 8 KiB for one job); the run is in pages
    assert 0 not in table.pages and 3 in table.spill
    assert all(table.get(i) is not None for i in ids)


def test_one_job_in_flight_reuses_the_top_page() -> None:
    """A queue that empties after every job (put, reserve, delete) keeps its one page instead
    of making and freeing 1,024 slots per job; the page goes once puts move to a newer one."""
    table = JobTable()
    table[1] = job(1)
    page = table.pages[0]
    for i in range(1, 50):
        assert table.pop(i) is not None
        assert len(table) == 0 and table.values() == []
        table[i + 1] = job(i + 1)
        assert table.pages[0] is page
    table.pop(50)
    table[PAGE_SIZE] = job(PAGE_SIZE)  # page 1: the emptied page 0 is dropped now
    assert list(table.pages) == [1] and table.keys() == [PAGE_SIZE]
