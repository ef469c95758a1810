"""Prometheus metrics read from the engine at scrape time.

Names follow Prometheus conventions: the ``stats`` key with ``-`` -> ``_`` under the prefix
``beanstalkd_``, base units in the name (``_seconds``, ``_bytes``) and ``_total`` on counters;
``stats-tube`` fields become ``beanstalkd_tube_*{tube="..."}``. The values come from the same
functions that build ``stats`` and ``stats-tube`` (``stats.server_counts``, ``binlog_counts``,
``tube_counts``), so the two views cannot disagree.

Invariants:

* Nothing here runs per command. The engine keeps plain ints; this module only reads them, on
  the loop thread, when ``/metrics`` is requested (no locks, no ``Counter.inc``).
* The two histograms that need recording (``LatencyHistogram``) are a list of bucket counts and
  a float sum. ``fsync`` latency is recorded on the binlog's worker thread, but the server runs
  at most one fsync at a time, so there is a single writer; a scrape that races it may see a
  sum one observation behind the counts, never a torn count.
* The request-batch histogram is *sampled*: ``Connection.data_received`` times one read in
  ``BATCH_SAMPLE_EVERY`` (the whole ``Session.feed`` of that read, which may hold one command
  or hundreds of pipelined ones). Its ``_count`` is the number of sampled reads, not commands.
* At most ``metrics_max_tubes`` tubes get their own ``tube`` label: the ones with the most jobs
  (ties by name), the same set on every scrape for the same state. Every other tube is added
  into ``tube="_other"`` (sums; for ``pause`` and ``pause_time_left``, the maximum). A real
  tube called ``_other`` is folded in too whenever folding happens, so label sets stay unique.
  Because the membership of ``_other`` changes with load, its counters may go down; treat
  them as gauges.
* Tube names can only hold ``[A-Za-z0-9-+/;.$_()]`` (the protocol rejects anything else), so
  they need no escaping in a label value; the fast per-tube text writer relies on that.
"""

from __future__ import annotations

import bisect
import heapq
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from beanstalk_py import __version__
from beanstalk_py.core import stats
from beanstalk_py.core.ops import OP_NAMES
from beanstalk_py.shell.build_info import core_kind

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from beanstalk_py.binlog import Binlog
    from beanstalk_py.console.api import Console
    from beanstalk_py.core.engine import Engine
    from beanstalk_py.core.tube import Tube
    from beanstalk_py.shell.cluster_status import ClusterStatus
    from beanstalk_py.shell.config import Config

PREFIX = "beanstalkd_"

#: etcd's ``wal_fsync_duration_seconds`` buckets: ExponentialBuckets(0.001, 2, 14), 1 ms..8 s.
FSYNC_BUCKETS = tuple(0.001 * 2**i for i in range(14))
#: One read's worth of commands takes microseconds; a slow one (big stats, a binlog-full
#: compaction) up to tens of milliseconds.
BATCH_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
# Labels of beanstalkd_command_duration_seconds: the protocol's commands (anything else is
# "other"), so a client cannot create series at will.
COMMAND_NAMES: dict[bytes, str] = {
    name.encode(): name for name in (*OP_NAMES, "reserve-job", "kick-job", "quit", "auth")
}

#: Time one read in this many (a power of two: the server tests ``reads & MASK``).
BATCH_SAMPLE_EVERY: Final = 64
BATCH_SAMPLE_MASK: Final = 63  # BATCH_SAMPLE_EVERY - 1, a literal: compiled callers inline it

OTHER_TUBE = "_other"

# stats keys that are counters (exported with _total); every other integer field is a gauge.
_COUNTER_KEYS = {"job-timeouts", "total-connections"}
# stats keys whose metric name carries a unit.
_RENAMED = {
    "max-job-size": "max_job_size_bytes",
    "binlog-max-size": "binlog_max_size_bytes",
}
_BINLOG_COUNTERS = {"binlog-records-migrated", "binlog-records-written"}
_TUBE_COUNTERS = {"cmd-delete", "cmd-pause-tube"}
_TUBE_RENAMED = {"pause": "pause_seconds", "pause-time-left": "pause_time_left_seconds"}
# _other takes the largest pause of its members, not the sum (a sum of pauses means nothing).
_TUBE_MAX = {stats.TUBE_KEYS.index("pause"), stats.TUBE_KEYS.index("pause-time-left")}


class LatencyHistogram:
    """Bucket counts for a Prometheus histogram, without prometheus_client's locks.

    ``counts[i]`` counts observations ``<= bounds[i]`` and above the previous bound; the last
    slot counts those above every bound (the ``+Inf`` bucket minus the others).
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


def _metric_name(key: str) -> tuple[str, bool]:
    """(name without prefix or _total, is_counter) for a ``stats`` key."""
    if key.startswith("cmd-") or key in _COUNTER_KEYS or key in _BINLOG_COUNTERS:
        return key.replace("-", "_"), True
    return _RENAMED.get(key, key.replace("-", "_")), False


def _tube_metric_name(key: str) -> tuple[str, bool]:
    name = _TUBE_RENAMED.get(key, key.replace("-", "_"))
    return "tube_" + name, key in _TUBE_COUNTERS


TUBE_METRICS = tuple(_tube_metric_name(k) for k in stats.TUBE_KEYS)


def tube_rows(engine: Engine, max_tubes: int) -> tuple[list[tuple[str, tuple[int, ...]]], int]:
    """Per-tube values as ``(label, values)`` rows, capped, and how many tubes were folded.

    Values follow ``stats.TUBE_KEYS``. With more than ``max_tubes`` tubes the ``max_tubes``
    with the most jobs (ties by name) are kept and the others are summed into ``_other``.
    """
    now = engine.clock.now()
    tubes: Iterable[Tube] = engine.tubes.values()
    counts = stats.tube_counts
    if len(engine.tubes) <= max_tubes:
        return [(t.name, counts(t, now)) for t in tubes], 0
    # A tube literally named "_other" would clash with the aggregate: never keep it apart.
    eligible = [t for t in tubes if t.name != OTHER_TUBE]
    keep = heapq.nsmallest(max_tubes, eligible, key=lambda t: (-t.jobs_ct, t.name))
    kept = {id(t) for t in keep}
    rows = [(t.name, counts(t, now)) for t in keep]
    rest = [counts(t, now) for t in engine.tubes.values() if id(t) not in kept]
    # Column-wise over the folded tubes: C-speed sum/max instead of a Python loop per value.
    other = [
        max(col) if i in _TUBE_MAX else sum(col) for i, col in enumerate(zip(*rest, strict=True))
    ]
    folded = len(rest)
    rows.append((OTHER_TUBE, tuple(other)))
    return rows, folded


class ServerView(Protocol):
    """What the HTTP endpoints and the collector read of a ``shell.server.Server``."""

    metrics_exporter: Exporter | None  # made on the first scrape (exporter_for)

    @property
    def engine(self) -> Engine: ...
    @property
    def config(self) -> Config: ...
    @property
    def binlog(self) -> Binlog | None: ...
    @property
    def ready(self) -> bool: ...  # False while the binlog replays
    @property
    def failed(self) -> bool: ...  # a binlog write or fsync failed: stopping
    @property
    def rejected_connections(self) -> int: ...
    @property
    def reads(self) -> int: ...
    @property
    def batch_latency(self) -> LatencyHistogram: ...
    @property
    def command_latency(self) -> dict[str, LatencyHistogram]: ...
    @property
    def fsync_latency(self) -> LatencyHistogram: ...
    @property
    def auth_token(self) -> bytes | None: ...
    @property
    def cluster(self) -> ClusterStatus | None: ...  # cluster mode only
    @property
    def relayed_current(self) -> int: ...  # a follower's relayed connections
    @property
    def relayed_total(self) -> int: ...
    def console_ready(self) -> Console: ...  # the web console, set up on first use


def _cluster_metrics(
    cluster: ClusterStatus,
    gauge: Callable[[str, str, float], Metric],
    counter: Callable[[str, str, float], Metric],
) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    role = GaugeMetricFamily(
        PREFIX + "cluster_role",
        "1 for this node's current role (leader, follower, promoting, stepped-down)",
        labels=["node", "role"],
    )
    for name in ("leader", "follower", "promoting", "stepped-down"):
        role.add_metric([cluster.node_id, name], int(cluster.role == name))
    yield role
    leader = GaugeMetricFamily(
        PREFIX + "cluster_leader_info", "the leader this node knows of", labels=["leader"]
    )
    leader.add_metric([cluster.leader], 1)
    yield leader
    yield gauge("cluster_epoch", "the newest leader epoch seen (etcd revision)", cluster.epoch)
    yield gauge("cluster_last_batch", "the last etcd log batch this node holds", cluster.last_batch)
    yield gauge(
        "cluster_lag_batches",
        "log batches known to exist that this node has not applied (0 on the leader)",
        cluster.lag,
    )
    yield counter("cluster_failovers", "times this process became leader", cluster.failovers)
    yield counter(
        "cluster_local_journal_refusals",
        "applied changes the local binlog could not record (its image of the queue has gaps)",
        cluster.local_refusals,
    )
    shipper = cluster.shipper
    yield counter("cluster_etcd_appends", "etcd log appends", shipper.appends if shipper else 0)
    yield counter(
        "cluster_etcd_append_seconds",
        "time spent in etcd log appends (divide by appends: mean latency)",
        shipper.append_seconds if shipper else 0.0,
    )
    yield counter(
        "cluster_log_compactions",
        "etcd log compactions (live jobs re-appended, older batches deleted)",
        shipper.compactions if shipper else 0,
    )
    yield gauge(
        "cluster_etcd_last_append_seconds",
        "latency of the last etcd log append",
        shipper.last_append_seconds if shipper else 0.0,
    )


class EngineCollector:
    """A prometheus_client collector over one ``Server`` (its engine, binlog and counters).

    With ``tubes=False`` the per-tube families are left out; ``Exporter`` then writes them
    itself, about 15 times faster than ``generate_latest`` formats them one sample at a time.
    """

    def __init__(self, server: ServerView, *, tubes: bool = True) -> None:
        self.server = server
        self.tubes = tubes
        self.folded = 0  # set by Exporter.render when tubes=False (it computed the rows)

    def describe(self) -> list[Metric]:
        # Registering must not run a scrape; names are not checked for clashes.
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        server = self.server
        engine = server.engine
        journal = engine.journal.stats()

        def gauge(name: str, doc: str, value: float) -> Metric:
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> Metric:
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        yield gauge("up", "1 while the server answers scrapes", 1)
        build = GaugeMetricFamily(
            PREFIX + "build_info",
            "beanstalk-py version, the protocol version it reports in stats, and its core"
            " (mypyc: compiled, pure: pure Python)",
            labels=["version", "implementation", "protocol", "core"],
        )
        build.add_metric([__version__, "beanstalk-py", stats.VERSION, core_kind()], 1)
        yield build
        inst = GaugeMetricFamily(
            PREFIX + "instance_info",
            "stats id (random per start) and hostname",
            labels=["id", "hostname"],
        )
        inst.add_metric([engine.instance_id, os.uname().nodename], 1)
        yield inst

        pairs = stats.server_counts(engine) + stats.binlog_counts(journal, engine.binlog_max_size)
        for key, value in pairs:
            name, is_counter = _metric_name(key)
            doc = f"stats {key}"
            yield counter(name, doc, value) if is_counter else gauge(name, doc, value)
        yield gauge("uptime_seconds", "stats uptime", stats.uptime(engine))
        yield gauge("draining", "stats draining: 1 after SIGUSR1", 1 if engine.draining else 0)
        yield gauge(
            "ready", "0 while the binlog replays, 1 once commands are served", int(server.ready)
        )
        yield counter(
            "connections_rejected",
            "connections closed at accept by limits (max connections, allow list)",
            server.rejected_connections,
        )
        yield counter(
            "binlog_write_bytes",
            "bytes written to the binlog by this process",
            journal.bytes_written,
        )
        yield gauge(
            "binlog_replay_duration_seconds",
            "time the start-up binlog replay took (0 without -b)",
            journal.replay_duration,
        )
        yield _histogram(
            HistogramMetricFamily,
            PREFIX + "binlog_fsync_duration_seconds",
            "binlog fsync latency (one call covers every segment written since the last one)",
            server.fsync_latency,
            FSYNC_BUCKETS,
        )
        yield counter(
            "read_batches",
            "socket reads handed to the protocol parser",
            server.reads,
        )
        yield _histogram(
            HistogramMetricFamily,
            PREFIX + "read_batch_duration_seconds",
            f"time to process one read's worth of commands, sampled 1 read in "
            f"{BATCH_SAMPLE_EVERY} (count = sampled reads)",
            server.batch_latency,
            BATCH_BUCKETS,
        )
        by_cmd = HistogramMetricFamily(
            PREFIX + "command_duration_seconds",
            f"time to process one read, by the read's first command, sampled 1 read in "
            f"{BATCH_SAMPLE_EVERY}; with one command per read (the usual client) it is that "
            f"command's processing time",
            labels=["cmd"],
        )
        for cmd, hist in sorted(server.command_latency.items()):
            by_cmd.add_metric([cmd], _buckets(hist, BATCH_BUCKETS), sum_value=hist.total)
        yield by_cmd
        cluster = server.cluster
        if cluster is not None:
            yield from _cluster_metrics(cluster, gauge, counter)
            yield gauge(
                "cluster_relayed_connections",
                "client connections this follower relays to the leader now",
                server.relayed_current,
            )
            yield counter(
                "cluster_relayed_connections_accepted",
                "client connections relayed to the leader since start",
                server.relayed_total,
            )
        rows: list[tuple[str, tuple[int, ...]]] = []
        folded = self.folded
        if self.tubes:
            rows, folded = tube_rows(engine, server.config.metrics_max_tubes)
        yield gauge(
            "metrics_tubes_folded",
            f'tubes beyond --metrics-max-tubes summed into tube="{OTHER_TUBE}"',
            folded,
        )
        if not self.tubes:
            return
        for i, (key, (name, is_counter)) in enumerate(
            zip(stats.TUBE_KEYS, TUBE_METRICS, strict=True)
        ):
            cls = CounterMetricFamily if is_counter else GaugeMetricFamily
            fam = cls(PREFIX + name, f"stats-tube {key}", labels=["tube"])
            for label, values in rows:
                fam.add_metric([label], values[i])
            yield fam


def _buckets(hist: LatencyHistogram | None, bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of ``hist`` (all zero when there is none)."""
    counts = hist.counts if hist is not None else [0] * (len(bounds) + 1)
    buckets: list[tuple[str, float]] = []
    acc = 0
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        acc += n
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), acc))
    return buckets


def _histogram(
    cls: Any, name: str, doc: str, hist: LatencyHistogram | None, bounds: Sequence[float]
) -> Metric:
    total = hist.total if hist is not None else 0.0
    fam: Metric = cls(name, doc, buckets=_buckets(hist, bounds), sum_value=total)
    return fam


def tube_text(rows: Sequence[tuple[str, tuple[int, ...]]]) -> str:
    """The per-tube families in the Prometheus text format, written directly."""
    out = []
    for i, (key, (name, is_counter)) in enumerate(zip(stats.TUBE_KEYS, TUBE_METRICS, strict=True)):
        full = PREFIX + name + ("_total" if is_counter else "")
        kind = "counter" if is_counter else "gauge"
        out.append(f"# HELP {full} stats-tube {key}\n# TYPE {full} {kind}\n")
        out.append("".join([f'{full}{{tube="{label}"}} {v[i]}\n' for label, v in rows]))
    return "".join(out)


class Exporter:
    """What ``GET /metrics`` serves: our collector, the ``process_*`` collector, tube text."""

    def __init__(self, server: ServerView) -> None:
        from prometheus_client import CollectorRegistry, ProcessCollector
        from prometheus_client import disable_created_metrics as no_created

        no_created()  # type: ignore[no-untyped-call]  # counters without _created series, as scraping exporters never had them
        self.server = server
        self.registry: CollectorRegistry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.collector = EngineCollector(server, tubes=False)
        self.registry.register(self.collector)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        rows, self.collector.folded = tube_rows(
            self.server.engine, self.server.config.metrics_max_tubes
        )
        return generate_latest(self.registry) + tube_text(rows).encode("ascii")


def exporter_for(server: ServerView) -> Exporter:
    """The server's ``Exporter``, created on first use (prometheus_client loads lazily)."""
    exp = server.metrics_exporter
    if exp is None:
        exp = server.metrics_exporter = Exporter(server)
    return exp
