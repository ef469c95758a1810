"""Put/reserve/delete/timeout rates over the last minutes, for the console's charts.

A ring buffer of ``SLOTS`` samples taken once a second from the backend's monotonic counters,
so the console needs no Prometheus. Invariants: the buffer never holds more than ``SLOTS``
entries; a rate is the difference of two consecutive samples divided by the wall time between
them (a late timer gives a lower, not a wrong, rate); sampling costs a few attribute reads per
second on the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from beanstalk_py.console.backend import ConsoleBackend, RateSample

SLOTS = 300  # five minutes at one sample a second
PERIOD = 1.0
SERIES = ("put", "reserve", "delete", "timeout")


class RateSampler:
    __slots__ = ("_backend", "_handle", "_last", "_loop", "points")

    def __init__(self, backend: ConsoleBackend) -> None:
        self._backend = backend
        # (wall time, put/s, reserve/s, delete/s, timeout/s)
        self.points: deque[tuple[float, float, float, float, float]] = deque(maxlen=SLOTS)
        self._last: tuple[float, RateSample] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.tick()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    def tick(self) -> None:
        """Take one sample (and schedule the next while started)."""
        now = time.time()
        cur = self._backend.sample()
        if self._last is not None:
            then, prev = self._last
            dt = max(now - then, 1e-3)
            self.points.append(
                (
                    now,
                    (cur.put - prev.put) / dt,
                    (cur.reserve - prev.reserve) / dt,
                    (cur.delete - prev.delete) / dt,
                    (cur.timeout - prev.timeout) / dt,
                )
            )
        self._last = (now, cur)
        if self._loop is not None:
            self._handle = self._loop.call_later(PERIOD, self.tick)

    def as_json(self) -> dict[str, Any]:
        """Column-wise, as uPlot wants it: ``{"t": [...], "put": [...], ...}``."""
        cols: dict[str, Any] = {"t": [round(p[0], 3) for p in self.points]}
        for i, name in enumerate(SERIES, start=1):
            cols[name] = [round(p[i], 3) for p in self.points]
        return cols
