"""The console's view of a running ``Server``: ``ConsoleBackend`` over the engine.

This is the only console module that knows the engine, the protocol session and the server
shell; ``beanstalk_py.console`` sees only the interface.

Invariants:

* Actions call the engine methods the protocol handlers call (``Session.cmd_kick``,
  ``cmd_kick_job``, ``cmd_delete``, ``cmd_pause_tube``) with the same ``cmd-*`` counter, so
  they are journaled with ``-b`` and counted in ``stats``; then ``Server.after_input`` runs,
  as after any client read: the binlog batch is written and reserves that a kick satisfied
  get their reply.
* The engine wants a client for ``delete`` (a reserved job may only be deleted by its
  reserver). The console's client is a core ``Client`` that was never
  connected: it is in no connection counter and no tube's using/watching count, reserves
  nothing and never shows in ``stats``; replies to it are dropped.
* Reads count in no ``cmd-*`` counter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from beanstalk_py.console.api import Console
from beanstalk_py.console.auth import ConsoleAuth
from beanstalk_py.console.backend import JobView, RateSample, TubeRow
from beanstalk_py.core import stats
from beanstalk_py.core.client import Client
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import Job
from beanstalk_py.core.ops import (
    OP_DELETE,
    OP_KICK,
    OP_PAUSE_TUBE,
    OP_PUT,
    OP_RESERVE,
    OP_RESERVE_WITH_TIMEOUT,
)
from beanstalk_py.core.tube import Tube
from beanstalk_py.shell import security

# The TubeRow counts by attribute, for sorting every tube without building rows.
_COLUMNS: dict[str, Callable[[Tube], int]] = {
    "ready": lambda t: t.ready_ct,
    "urgent": lambda t: t.urgent_ct,
    "reserved": lambda t: t.reserved_ct,
    "delayed": lambda t: t.delayed_ct,
    "buried": lambda t: len(t.buried),
    "waiting": lambda t: len(t.waiting.items),
    "watching": lambda t: t.watching_ct,
    "using": lambda t: t.using_ct,
    "total": lambda t: t.total_jobs,
}


def _drop(data: bytes) -> None:
    pass


def _drop_job(word: bytes, job: Job) -> None:
    pass


def _no_wake() -> None:
    pass


class EngineBackend:
    """``ConsoleBackend`` for one ``Server`` (runs on its loop thread: no locks needed)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self._client = Client(server.engine.default, _drop, _drop_job, _no_wake)

    @property
    def engine(self) -> Engine:
        engine: Engine = self.server.engine
        return engine

    # --- reads ------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        srv = self.server
        engine = srv.engine
        journal = engine.journal.stats()
        counts = dict(
            stats.server_counts(engine) + stats.binlog_counts(journal, engine.binlog_max_size)
        )
        fsync = srv.fsync_latency
        return {
            "stats": counts,
            "uptime": stats.uptime(engine),
            "draining": engine.draining,
            "ready": srv.ready,
            "binlog": {
                "enabled": srv.binlog is not None,
                "failed": srv.failed,
                "disk_bytes": journal.disk_bytes,
                "bytes_written": journal.bytes_written,
                "space_short": journal.space_short,
                "last_error": journal.last_error,
                "fsyncs": fsync.count,
                "fsync_mean_seconds": fsync.total / fsync.count if fsync.count else 0.0,
            },
        }

    def sample(self) -> RateSample:
        e = self.engine
        ops = e.ops
        return RateSample(
            ops[OP_PUT],
            ops[OP_RESERVE] + ops[OP_RESERVE_WITH_TIMEOUT],
            ops[OP_DELETE],
            e.job_timeouts,
        )

    def tube_names(self) -> list[str]:
        return [t.name for t in self.engine.tube_list.items]

    def tube_column(self, key: str) -> list[tuple[int, str]]:
        engine = self.engine
        tubes = engine.tube_list.items
        if key == "paused":
            now = engine.clock.now()
            return [(stats.tube_counts(t, now)[12], t.name) for t in tubes]
        get = _COLUMNS[key]
        return [(get(t), t.name) for t in tubes]

    def tube_rows(self, names: list[str]) -> list[TubeRow]:
        engine = self.engine
        now = engine.clock.now()
        rows = []
        for name in names:
            t = engine.tubes.get(name)
            if t is None:
                continue
            c = stats.tube_counts(t, now)
            # TUBE_KEYS order: urgent ready reserved delayed buried total using watching
            # waiting cmd-delete cmd-pause-tube pause pause-time-left
            rows.append(
                TubeRow(t.name, c[1], c[0], c[2], c[3], c[4], c[8], c[7], c[6], c[12], c[5])
            )
        return rows

    def tube(self, name: str) -> dict[str, Any] | None:
        engine = self.engine
        t = engine.tubes.get(name)
        if t is None:
            return None
        values = stats.tube_counts(t, engine.clock.now())
        out: dict[str, Any] = {"name": t.name}
        out.update(zip(stats.TUBE_KEYS, values, strict=True))
        return out

    def peek(self, name: str, state: str) -> JobView | None:
        engine = self.engine
        t = engine.tubes.get(name)
        if t is None:
            return None
        job: Job | None
        if state == "ready":
            job = t.peek_ready(engine.jobs)
        elif state == "delayed":
            job = t.peek_delayed(engine.jobs)
        else:
            job = next(iter(t.buried.values())) if t.buried else None
        return None if job is None else self._view(job)

    def job(self, job_id: int) -> JobView | None:
        job = self.engine.jobs.get(job_id)
        return None if job is None else self._view(job)

    def _view(self, job: Job) -> JobView:
        # Parse the very stats-job reply, so the console and the protocol cannot disagree.
        reply = stats.job_stats(self.engine, job)
        text = reply.split(b"\r\n", 1)[1].decode("utf-8", "replace")
        fields: dict[str, Any] = {}
        for line in text.splitlines()[1:]:
            key, _, value = line.partition(": ")
            if not key:
                continue
            value = value.strip('"')
            fields[key] = int(value) if value.lstrip("-").isdigit() else value
        return JobView(fields, job.body[:-2])  # the engine keeps the trailing CRLF

    # --- actions ----------------------------------------------------------------------

    def kick(self, name: str, bound: int) -> int | None:
        engine = self.engine
        t = engine.tubes.get(name)
        if t is None:
            return None
        engine.ops[OP_KICK] += 1
        n = engine.kick(t, bound)
        self._done()
        return n

    def kick_job(self, job_id: int) -> bool:
        ok = self.engine.kick_job(job_id) == b"KICKED\r\n"
        self._done()
        return ok

    def delete(self, job_id: int) -> bool:
        engine = self.engine
        engine.ops[OP_DELETE] += 1
        ok = engine.delete(self._client, job_id) == b"DELETED\r\n"
        self._done()
        return ok

    def pause(self, name: str, delay: int) -> bool:
        engine = self.engine
        engine.ops[OP_PAUSE_TUBE] += 1
        t = engine.tubes.get(name)
        if t is None:
            return False
        engine.pause_tube(t, delay)
        self._done()
        return True

    def _done(self) -> None:
        self.server.after_input()


def make_console(server: Any) -> Console:
    """The console of ``server``, its rate sampler running on the current loop."""
    cfg = server.config
    admin = None
    if cfg.admin_token_file is not None:
        admin = security.load_token(cfg.admin_token_file, "--admin-token-file")
    console = Console(EngineBackend(server), ConsoleAuth(server.auth_token, admin))
    console.rates.start(asyncio.get_running_loop())
    return console
