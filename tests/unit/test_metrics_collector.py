"""Unit tests for beanstalk_py.shell.metrics: the collector, the tube cap and the fast tube writer.

State is built by feeding real protocol bytes to real ``Session`` objects over a ``Server``
that is never started (the collector only reads ``server.engine``, ``.binlog``, ``.config``).
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from beanstalk_py.core import stats
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.protocol.session import Session
from beanstalk_py.shell.build_info import core_kind
from beanstalk_py.shell.config import Config
from beanstalk_py.shell.metrics import (
    BATCH_BUCKETS,
    FSYNC_BUCKETS,
    OTHER_TUBE,
    EngineCollector,
    Exporter,
    LatencyHistogram,
    tube_rows,
    tube_text,
)
from beanstalk_py.shell.server import Server


def make_server(max_tubes: int = 1000) -> Server:
    return Server(
        Config(host="127.0.0.1", port=0, metrics_max_tubes=max_tubes), clock=ManualClock()
    )


def session(srv: Server, data: bytes) -> Session:
    sess = Session(srv.engine)
    sess.feed(data)
    sess.take_output()
    return sess


def puts(tube: str, n: int) -> bytes:
    return b"use %s\r\n" % tube.encode() + b"put 0 0 60 1\r\nx\r\n" * n


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_latency_histogram_buckets_are_le() -> None:
    h = LatencyHistogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 3.0):
        h.observe(v)
    assert h.counts == [2, 2, 1]  # le=0.1 holds 0.1 itself; +Inf holds 3.0
    assert h.count == 5
    assert math.isclose(h.total, 4.65)
    assert FSYNC_BUCKETS[0] == 0.001 and FSYNC_BUCKETS[-1] == 0.001 * 2**13
    assert len(FSYNC_BUCKETS) == 14 and list(BATCH_BUCKETS) == sorted(BATCH_BUCKETS)


def test_global_names_follow_stats_keys() -> None:
    srv = make_server()
    session(srv, puts("a", 3) + b"watch a\r\nignore default\r\nreserve\r\n")
    reg = CollectorRegistry()
    reg.register(EngineCollector(srv))
    got = samples(generate_latest(reg).decode())
    assert got[("beanstalkd_cmd_put_total", ())] == 3
    assert got[("beanstalkd_cmd_reserve_total", ())] == 1
    assert got[("beanstalkd_cmd_reserve_with_timeout_total", ())] == 0
    assert got[("beanstalkd_cmd_list_tubes_watched_total", ())] == 0
    assert got[("beanstalkd_current_jobs_ready", ())] == 2
    assert got[("beanstalkd_current_jobs_reserved", ())] == 1
    assert got[("beanstalkd_total_jobs", ())] == 3
    assert got[("beanstalkd_job_timeouts_total", ())] == 0
    assert got[("beanstalkd_total_connections_total", ())] == 1
    assert got[("beanstalkd_current_connections", ())] == 1
    assert got[("beanstalkd_max_job_size_bytes", ())] == 65535
    assert got[("beanstalkd_binlog_max_size_bytes", ())] == 10 * 1024 * 1024
    assert got[("beanstalkd_binlog_records_written_total", ())] == 0
    assert got[("beanstalkd_draining", ())] == 0
    assert got[("beanstalkd_up", ())] == 1
    assert got[("beanstalkd_connections_rejected_total", ())] == 0
    info = [k for k in got if k[0] == "beanstalkd_instance_info"]
    assert dict(info[0][1])["id"] == srv.engine.instance_id
    build = dict(next(k for k in got if k[0] == "beanstalkd_build_info")[1])
    assert build["implementation"] == "beanstalk-py" and build["protocol"] == stats.VERSION
    assert build["core"] == core_kind()
    assert got[("beanstalkd_tube_current_jobs_ready", (("tube", "a"),))] == 2
    assert got[("beanstalkd_tube_current_jobs_reserved", (("tube", "a"),))] == 1
    assert got[("beanstalkd_tube_current_watching", (("tube", "a"),))] == 1
    assert got[("beanstalkd_tube_current_jobs_reserved", (("tube", "default"),))] == 0
    # Every integer stats field is exported (and nothing else is made up under its name).
    for key, value in stats.server_counts(srv.engine):
        base = "beanstalkd_" + key.replace("-", "_")
        matches = [v for (n, _), v in got.items() if n.startswith(base)]
        assert value in matches, key


def test_histograms_are_exported_cumulatively() -> None:
    srv = make_server()
    srv.fsync_latency.observe(0.0015)
    srv.fsync_latency.observe(20.0)
    reg = CollectorRegistry()
    reg.register(EngineCollector(srv))
    got = samples(generate_latest(reg).decode())
    name = "beanstalkd_binlog_fsync_duration_seconds"
    assert got[(name + "_bucket", (("le", "0.001"),))] == 0
    assert got[(name + "_bucket", (("le", "0.002"),))] == 1
    assert got[(name + "_bucket", (("le", "8.192"),))] == 1
    assert got[(name + "_bucket", (("le", "+Inf"),))] == 2
    assert got[(name + "_count", ())] == 2
    assert math.isclose(got[(name + "_sum", ())], 20.0015)
    assert got[("beanstalkd_read_batch_duration_seconds_count", ())] == 0


def test_tube_cap_keeps_busiest_and_folds_the_rest() -> None:
    srv = make_server(max_tubes=2)
    session(srv, puts("a", 1))
    session(srv, puts("b", 3))
    session(srv, puts("c", 2) + b"pause-tube c 30\r\n")
    session(srv, puts(OTHER_TUBE, 5))  # a real tube with the aggregate's name
    rows, folded = tube_rows(srv.engine, 2)
    labels = [label for label, _ in rows]
    # The two busiest real tubes, then the aggregate: "_other" itself, "a", "default".
    assert labels == ["b", "c", OTHER_TUBE]
    assert folded == 3
    other = dict(zip(stats.TUBE_KEYS, rows[-1][1], strict=True))
    assert other["current-jobs-ready"] == 5 + 1 + 0
    assert other["total-jobs"] == 6
    c = dict(zip(stats.TUBE_KEYS, rows[1][1], strict=True))
    assert c["pause"] == 30 and c["pause-time-left"] == 30
    # Deterministic: the same state gives the same rows; ties are broken by name.
    assert tube_rows(srv.engine, 2) == (rows, folded)
    session(srv, puts("a", 1))  # a: 2 jobs, ties with c; c < a? no: "a" < "c"
    labels = [label for label, _ in tube_rows(srv.engine, 2)[0]]
    assert labels == ["b", "a", OTHER_TUBE]


def test_no_folding_under_the_cap() -> None:
    srv = make_server(max_tubes=5)
    session(srv, puts("a", 1))
    rows, folded = tube_rows(srv.engine, 5)
    assert folded == 0 and sorted(label for label, _ in rows) == ["a", "default"]
    assert all(label != OTHER_TUBE for label, _ in rows)


def test_zero_cap_exports_only_the_aggregate() -> None:
    srv = make_server(max_tubes=0)
    session(srv, puts("a", 2))
    rows, folded = tube_rows(srv.engine, 0)
    assert [label for label, _ in rows] == [OTHER_TUBE] and folded == 2


def test_pause_folds_as_maximum() -> None:
    srv = make_server(max_tubes=0)
    session(srv, puts("a", 1) + b"pause-tube a 10\r\n")
    session(srv, puts("b", 1) + b"pause-tube b 40\r\n")
    other = dict(zip(stats.TUBE_KEYS, tube_rows(srv.engine, 0)[0][0][1], strict=True))
    assert other["pause"] == 40 and other["cmd-pause-tube"] == 2


def test_fast_tube_text_equals_collector_output() -> None:
    srv = make_server(max_tubes=3)
    for i in range(6):
        name = f"t-{i}(x);$.+/"
        session(srv, puts(name, i) + b"watch %s\r\nreserve-with-timeout 0\r\n" % name.encode())
    reg = CollectorRegistry()
    reg.register(EngineCollector(srv))
    slow = {
        k: v
        for k, v in samples(generate_latest(reg).decode()).items()
        if k[0].startswith("beanstalkd_tube_")
    }
    fast = samples(tube_text(tube_rows(srv.engine, 3)[0]))
    assert slow == fast and len(fast) == 4 * len(stats.TUBE_KEYS)
    types = {f.name: f.type for f in text_string_to_metric_families(tube_text([]))}
    assert types["beanstalkd_tube_cmd_delete"] == "counter"
    assert types["beanstalkd_tube_pause_seconds"] == "gauge"


def test_exporter_output_parses_and_has_process_metrics() -> None:
    srv = make_server(max_tubes=1)
    session(srv, puts("a", 2))
    text = Exporter(srv).render().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "process_cpu_seconds" in names
    assert "beanstalkd_tube_current_jobs_ready" in names
    got = samples(text)
    assert got[("beanstalkd_metrics_tubes_folded", ())] == 1
    assert got[("beanstalkd_tube_current_jobs_ready", (("tube", "a"),))] == 2
    assert "_created" not in text
