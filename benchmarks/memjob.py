"""Bytes per job in the engine, and what they consist of (no sockets).

    PYTHONPATH=. python benchmarks/memjob.py          # this checkout, pure Python
    PYTHONPATH=/tmp/pf python benchmarks/memjob.py    # a compiled build (pip install --target)

Puts ``--jobs`` 100-byte jobs through a real ``Session`` into a real ``Engine`` (the path a
client's put takes, minus the socket) and reports the growth of traced memory (tracemalloc)
and of VmRSS per job, then the per-job parts measured with ``sys.getsizeof``: the ``Job``
record, the body, the boxed fields it points to, the ``jobs`` table and the tube's ready
structure. tracemalloc sees every object allocation, compiled (mypyc) or not; RSS also
includes allocator slack.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from typing import Any


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def deep_container(obj: Any, seen: set[int]) -> int:
    """Size of a container and the containers and arrays inside it (not the jobs)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        for v in obj.values():
            if isinstance(v, (list, dict, tuple)) or type(v).__name__ in ("array", "Level"):
                size += deep_container(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            if isinstance(v, (list, dict, tuple)) or type(v).__name__ in ("array", "Level"):
                size += deep_container(v, seen)
    elif type(obj).__name__ == "Level":
        # by name: a compiled (mypyc) class has no __slots__ to enumerate
        for name in ("fifo", "heap"):
            v = getattr(obj, name, None)
            if v is not None:
                size += deep_container(v, seen)
    return size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--body", type=int, default=100)
    a = ap.parse_args()

    import beanstalk_py.core.engine as engine_mod
    from beanstalk_py.core.engine import Engine
    from beanstalk_py.protocol.session import Pending, Session
    from beanstalk_py.system import SystemClock

    compiled = engine_mod.__file__.endswith(".so")
    eng = Engine(SystemClock())
    pending = Pending()
    sess = Session(eng, pending)
    sess.feed(b"use bench\r\n")
    sess.take_output()
    pending.dirty.clear()
    body = b"x" * a.body
    put = b"put 1024 0 60 %d\r\n%b\r\n" % (a.body, body)
    batch = put * 1000

    gc.collect()
    gc.disable()
    tracemalloc.start()
    t0 = tracemalloc.get_traced_memory()[0]
    r0 = rss_kib()
    done = 0
    while done < a.jobs:
        n = min(1000, a.jobs - done)
        sess.feed(batch if n == 1000 else put * n)
        out = sess.take_output()
        pending.dirty.clear()
        assert out.count(b"INSERTED") == n, out[:200]
        done += n
    t1 = tracemalloc.get_traced_memory()[0]
    r1 = rss_kib()
    tracemalloc.stop()
    gc.enable()
    n = len(eng.jobs)
    assert n == a.jobs

    jobs = list(eng.jobs.values())
    job = jobs[n // 2]
    tube = job.tube
    print(f"beanstalk_py from {engine_mod.__file__} ({'compiled' if compiled else 'pure'})")
    print(f"{n:,} jobs of {a.body} bytes, one tube, put through a Session")
    print(f"traced memory growth: {(t1 - t0) / n:.1f} bytes/job")
    print(f"VmRSS growth:         {(r1 - r0) * 1024 / n:.1f} bytes/job (tracemalloc's own")
    print("                      bookkeeping included: compare with run.py's mem scenario)")
    print()
    parts: list[tuple[str, float]] = []
    parts.append(("Job record (sys.getsizeof)", sys.getsizeof(job)))
    parts.append((f"body bytes object ({a.body} + CRLF)", sys.getsizeof(job.body)))
    # boxed values the record points to: only objects not shared between jobs count
    boxed = 0.0
    names = []
    for name in type(job).__slots__ if hasattr(type(job), "__slots__") else ():
        if name in ("body", "tube", "reserver"):
            continue
        v1, v2 = getattr(jobs[1], name), getattr(jobs[2], name)
        if isinstance(v1, (int, float)) and v1 is not v2 and v1 is getattr(jobs[1], name):
            # an attribute that returns the same object twice is stored boxed
            sz = sys.getsizeof(v1)
            if not (isinstance(v1, int) and -5 <= v1 <= 256):
                boxed += sz
                names.append(f"{name} {sz}")
    parts.append(("boxed fields held by the record: " + (", ".join(names) or "none"), boxed))
    table = eng.jobs
    if isinstance(table, dict):  # before the JobTable: a dict with an int object per key
        key = next(iter(table))
        parts.append(("id as the jobs dict key (int object)", sys.getsizeof(key + 10**6)))
        parts.append(("jobs dict slots (getsizeof(dict) / jobs)", sys.getsizeof(table) / n))
    else:
        size = sys.getsizeof(table) + sys.getsizeof(table.pages) + sys.getsizeof(table.spill)
        for page in table.pages.values():
            size += sys.getsizeof(page) + sys.getsizeof(page.slots)
        parts.append(("jobs table: pages of ids, spill dict (all / jobs)", size / n))
    ready = deep_container(tube.ready, set())
    parts.append(("tube ready structure / jobs", ready / n))
    total = sum(v for _, v in parts)
    for k, v in parts:
        print(f"  {v:8.1f}  {k}")
    print(f"  {total:8.1f}  sum of the parts (traced growth above: {(t1 - t0) / n:.1f})")
    print()
    if hasattr(type(job), "__slots__"):
        print(f"Job fields ({len(type(job).__slots__)}): {', '.join(type(job).__slots__)}")


if __name__ == "__main__":
    main()
