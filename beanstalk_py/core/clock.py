"""Clocks for the engine.

The engine never reads time itself: it asks a ``Clock``. ``now()`` is monotonic seconds and
drives every deadline (delay, TTR, reserve timeout, pause); ``wall()`` is epoch seconds and is
used only for values that must survive a restart (job creation time, delayed deadlines in the
binlog). The shell's ``system.SystemClock`` reads the real clocks; tests use ``ManualClock``
and advance it instead of sleeping.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class ManualClock:
    """A clock that moves only when told to; both readings advance together."""

    __slots__ = ("_now", "_wall")

    def __init__(self, now: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = now
        self._wall = wall

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._wall += seconds
