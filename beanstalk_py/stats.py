"""Byte-exact YAML bodies of stats, stats-job, stats-tube and the list-* commands (1.13).

Every body starts with ``---\\n`` and every line ends with ``\\n``; the caller frames it as
``OK <len>\\r\\n<body>\\r\\n``. Dictionary string values are double-quoted without escaping
(``version``, ``hostname``, ``os``, ``platform``, ``name``, ``tube``); list items are not.
"""

from __future__ import annotations

import os
import resource
from typing import TYPE_CHECKING

from beanstalk_py.engine import OP_NAMES, Engine
from beanstalk_py.job import DELAYED, RESERVED, STATE_NAMES, Job
from beanstalk_py.tube import Tube

if TYPE_CHECKING:
    from collections.abc import Iterable

VERSION = "1.13"  # the protocol version clients see (beanstalk-py's own is in __version__)


class BinlogStats:
    """What the stats command shows of the binlog; a Binlog provides the same attributes."""

    oldest_index = 0
    current_index = 0
    records_migrated = 0
    records_written = 0


def frame(body: str) -> bytes:
    data = body.encode("utf-8", "surrogateescape")
    return b"OK %d\r\n%s\r\n" % (len(data), data)


def _uname() -> tuple[str, str, str]:
    u = os.uname()
    return u.nodename, u.version, u.machine


def server_stats(engine: Engine, binlog: object, binlog_max_size: int) -> bytes:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    hostname, osver, machine = _uname()
    b = binlog if binlog is not None else BinlogStats
    lines = [
        "---",
        f"current-jobs-urgent: {engine.urgent_ct}",
        f"current-jobs-ready: {engine.ready_ct}",
        f"current-jobs-reserved: {engine.reserved_ct}",
        f"current-jobs-delayed: {engine.delayed_ct}",
        f"current-jobs-buried: {engine.buried_ct}",
    ]
    lines += [f"cmd-{name}: {n}" for name, n in zip(OP_NAMES, engine.ops, strict=True)]
    lines += [
        f"job-timeouts: {engine.job_timeouts}",
        f"total-jobs: {engine.total_jobs}",
        f"max-job-size: {engine.max_job_size}",
        f"current-tubes: {len(engine.tubes)}",
        f"current-connections: {engine.cur_conns}",
        f"current-producers: {engine.producers}",
        f"current-workers: {engine.workers}",
        f"current-waiting: {engine.waiting_ct}",
        f"total-connections: {engine.total_conns}",
        f"pid: {os.getpid()}",
        f'version: "{VERSION}"',
        f"rusage-utime: {_timeval(ru.ru_utime)}",
        f"rusage-stime: {_timeval(ru.ru_stime)}",
        f"uptime: {int(engine.clock.now() - engine.started)}",
        f"binlog-oldest-index: {getattr(b, 'oldest_index', 0)}",
        f"binlog-current-index: {getattr(b, 'current_index', 0)}",
        f"binlog-records-migrated: {getattr(b, 'records_migrated', 0)}",
        f"binlog-records-written: {getattr(b, 'records_written', 0)}",
        f"binlog-max-size: {binlog_max_size}",
        f"draining: {'true' if engine.draining else 'false'}",
        f"id: {engine.instance_id}",
        f'hostname: "{hostname}"',
        f'os: "{osver}"',
        f'platform: "{machine}"',
        "",
    ]
    return frame("\n".join(lines))


def _timeval(seconds: float) -> str:
    usec = round(seconds * 1_000_000)
    sec, frac = divmod(usec, 1_000_000)
    return f"{sec}.{frac:06d}"


def _trunc(seconds: float) -> int:
    """C's conversion of a signed duration to whole seconds: truncate toward zero."""
    return int(seconds)


def tube_stats(engine: Engine, t: Tube) -> bytes:
    now = engine.clock.now()
    paused = t.pause_until > now
    body = (
        "---\n"
        f'name: "{t.name}"\n'
        f"current-jobs-urgent: {t.urgent_ct}\n"
        f"current-jobs-ready: {t.ready_ct}\n"
        f"current-jobs-reserved: {t.reserved_ct}\n"
        f"current-jobs-delayed: {t.delayed_ct}\n"
        f"current-jobs-buried: {len(t.buried)}\n"
        f"total-jobs: {t.total_jobs}\n"
        f"current-using: {t.using_ct}\n"
        f"current-watching: {t.watching_ct}\n"
        f"current-waiting: {len(t.waiting)}\n"
        f"cmd-delete: {t.cmd_delete}\n"
        f"cmd-pause-tube: {t.cmd_pause_tube}\n"
        f"pause: {t.pause if paused else 0}\n"
        f"pause-time-left: {_trunc(t.pause_until - now) if paused else 0}\n"
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
