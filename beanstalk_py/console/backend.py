"""What the console needs from the server, as a typed interface.

Invariants:

* Reads (``overview``, ``tube_rows``, ``tube``, ``peek``, ``job``) change no state and count in
  no ``cmd-*`` counter, like ``/metrics``: a console polling every two seconds must not show
  up as a client in ``stats``.
* Actions (``kick``, ``kick_job``, ``delete``, ``pause``) run the engine call the protocol
  command runs, with its ``cmd-*`` counter, so they are journaled under ``-b`` and counted in
  ``stats``; the backend flushes the binlog batch and wakes blocked reserves afterwards.
* ``None`` / ``False`` mean what ``NOT_FOUND`` means on the protocol side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class TubeRow:
    """One line of the tube table (the ``stats-tube`` counts the table shows)."""

    name: str
    ready: int
    urgent: int
    reserved: int
    delayed: int
    buried: int
    waiting: int
    watching: int
    using: int
    paused: int  # seconds left of a pause-tube, 0 when not paused
    total: int


@dataclass(frozen=True, slots=True)
class JobView:
    """``stats-job`` of one job (keys as the protocol spells them) and its body."""

    stats: dict[str, Any]
    body: bytes


@dataclass(frozen=True, slots=True)
class RateSample:
    """Monotonic counters sampled once a second for the rate charts."""

    put: int
    reserve: int
    delete: int
    timeout: int


class ConsoleBackend(Protocol):
    def overview(self) -> dict[str, Any]:
        """Server counters, jobs by state, connections, uptime, binlog and drain state."""
        ...

    def sample(self) -> RateSample: ...

    def tube_column(self, key: str) -> list[tuple[int, str]]:
        """``(value, tube name)`` of one ``TubeRow`` count for every tube (the sort key).

        The tube table sorts and filters these and builds full rows for one page only, so a
        call with 10,000 tubes stays a few milliseconds of the server's loop."""
        ...

    def tube_names(self) -> list[str]: ...

    def tube_rows(self, names: list[str]) -> list[TubeRow]:
        """The rows of the tubes called ``names`` that still exist, in that order."""
        ...

    def tube(self, name: str) -> dict[str, Any] | None:
        """``stats-tube`` of ``name`` (keys as the protocol spells them), None if absent."""
        ...

    def peek(self, name: str, state: str) -> JobView | None:
        """The job ``peek-ready``/``peek-delayed``/``peek-buried`` would show in ``name``."""
        ...

    def job(self, job_id: int) -> JobView | None: ...

    def kick(self, name: str, bound: int) -> int | None:
        """``use name`` + ``kick bound``: the number kicked, None when the tube is absent."""
        ...

    def kick_job(self, job_id: int) -> bool: ...

    def delete(self, job_id: int) -> bool: ...

    def pause(self, name: str, delay: int) -> bool: ...
