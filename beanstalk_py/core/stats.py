"""Byte-exact YAML bodies of stats, stats-job, stats-tube and the list-* commands (1.13).

Every body starts with ``---\\n`` and every line ends with ``\\n``; the caller frames it as
``OK <len>\\r\\n<body>\\r\\n``. Dictionary string values are double-quoted without escaping
(``version``, ``hostname``, ``os``, ``platform``, ``name``, ``tube``); list items are not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import DELAYED, RESERVED, STATE_NAMES, Job
from beanstalk_py.core.journal import JournalStats
from beanstalk_py.core.ops import OP_NAMES
from beanstalk_py.core.tube import Tube

if TYPE_CHECKING:
    from collections.abc import Iterable


VERSION = "1.13"  # the protocol version clients see (beanstalk-py's own is in __version__)


def frame(body: str) -> bytes:
    data = body.encode("utf-8", "surrogateescape")
    return b"OK %d\r\n%s\r\n" % (len(data), data)


def server_counts(engine: Engine) -> list[tuple[str, int]]:
    """The integer fields of ``stats`` from current-jobs-urgent to total-connections, in order.

    ``/metrics`` exports these same pairs, so the two views cannot disagree.
    """
    pairs = [
        ("current-jobs-urgent", engine.urgent_ct),
        ("current-jobs-ready", engine.ready_ct),
        ("current-jobs-reserved", engine.reserved_ct),
        ("current-jobs-delayed", engine.delayed_ct),
        ("current-jobs-buried", engine.buried_ct),
    ]
    pairs += [(f"cmd-{name}", n) for name, n in zip(OP_NAMES, engine.ops, strict=True)]
    pairs += [
        ("job-timeouts", engine.job_timeouts),
        ("total-jobs", engine.total_jobs),
        ("max-job-size", engine.max_job_size),
        ("current-tubes", len(engine.tubes)),
        ("current-connections", engine.cur_conns),
        ("current-producers", engine.producers),
        ("current-workers", engine.workers),
        ("current-waiting", engine.waiting_ct),
        ("total-connections", engine.total_conns),
    ]
    return pairs


def binlog_counts(journal: JournalStats, binlog_max_size: int) -> list[tuple[str, int]]:
    """The binlog-* fields of ``stats`` in order (zeros without ``-b``, as in beanstalkd);
    ``binlog_max_size`` is the configured ``-s``, reported when the journal has none."""
    return [
        ("binlog-oldest-index", journal.oldest_index),
        ("binlog-current-index", journal.current_index),
        ("binlog-records-migrated", journal.records_migrated),
        ("binlog-records-written", journal.records_written),
        ("binlog-max-size", journal.max_size or binlog_max_size),
    ]


def uptime(engine: Engine) -> int:
    return int(engine.clock.now() - engine.started)


def server_stats(engine: Engine) -> bytes:
    journal = engine.journal.stats()
    binlog_max_size = engine.binlog_max_size
    utime, stime = engine.host.rusage()
    hostname, osver, machine = engine.host.uname()
    lines = ["---"]
    lines += [f"{key}: {n}" for key, n in server_counts(engine)]
    lines += [
        f"pid: {engine.host.pid()}",
        f'version: "{VERSION}"',
        f"rusage-utime: {_timeval(utime)}",
        f"rusage-stime: {_timeval(stime)}",
        f"uptime: {uptime(engine)}",
    ]
    lines += [f"{key}: {n}" for key, n in binlog_counts(journal, binlog_max_size)]
    lines += [
        f"draining: {'true' if engine.draining else 'false'}",
        f"id: {engine.instance_id}",
        f'hostname: "{hostname}"',
        f'os: "{osver}"',
        f'platform: "{machine}"',
    ]
    extra = engine.stats_extra
    if extra is not None:
        lines += extra()
    lines.append("")
    return frame("\n".join(lines))


def _timeval(seconds: float) -> str:
    usec = round(seconds * 1_000_000)
    sec, frac = divmod(usec, 1_000_000)
    return f"{sec}.{frac:06d}"


def _trunc(seconds: float) -> int:
    """C's conversion of a signed duration to whole seconds: truncate toward zero."""
    return int(seconds)


# The integer fields of stats-tube after ``name``, in order (see tube_counts).
TUBE_KEYS: tuple[str, ...] = (
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
    "total-jobs",
    "current-using",
    "current-watching",
    "current-waiting",
    "cmd-delete",
    "cmd-pause-tube",
    "pause",
    "pause-time-left",
)


def tube_counts(t: Tube, now: float) -> tuple[int, ...]:
    """The values of ``TUBE_KEYS`` for ``t`` at monotonic time ``now`` (also used by /metrics)."""
    paused = t.pause_until > now
    return (
        t.urgent_ct,
        t.ready_ct,
        t.reserved_ct,
        t.delayed_ct,
        len(t.buried),
        t.total_jobs,
        t.using_ct,
        t.watching_ct,
        len(t.waiting.items),  # the list itself: SwapList.__len__ is a Python call
        t.cmd_delete,
        t.cmd_pause_tube,
        t.pause if paused else 0,
        _trunc(t.pause_until - now) if paused else 0,
    )


def tube_stats(engine: Engine, t: Tube) -> bytes:
    values = tube_counts(t, engine.clock.now())
    body = f'---\nname: "{t.name}"\n' + "".join(
        f"{key}: {n}\n" for key, n in zip(TUBE_KEYS, values, strict=True)
    )
    return frame(body)


def job_stats(engine: Engine, job: Job) -> bytes:
    now = engine.clock.now()
    left = _trunc(job.deadline - now) if job.state in (RESERVED, DELAYED) else 0
    body = (
        "---\n"
        f"id: {job.id}\n"
        f'tube: "{job.tube.name}"\n'
        f"state: {STATE_NAMES[job.state]}\n"
        f"pri: {job.pri}\n"
        f"age: {_trunc(engine.clock.wall() - job.created)}\n"
        f"delay: {job.delay}\n"
        f"ttr: {job.ttr}\n"
        f"time-left: {left}\n"
        f"file: {job.file}\n"
        f"reserves: {job.reserves}\n"
        f"timeouts: {job.timeouts}\n"
        f"releases: {job.releases}\n"
        f"buries: {job.buries}\n"
        f"kicks: {job.kicks}\n"
    )
    return frame(body)


def tube_list(tubes: Iterable[Tube]) -> bytes:
    return frame("---\n" + "".join(f"- {t.name}\n" for t in tubes))
