"""The deadline heap: every deadline of the engine in one heap, cancelled lazily.

An entry is ``(when, seq, kind, target)``: a delayed job becoming ready (``TIMER_DELAY``), a
reserved job's TTR running out (``TIMER_TTR``), a reserve-with-timeout ending
(``TIMER_WAIT``), a waiting client's reserved job entering its last second (``TIMER_SOON``)
and a paused tube resuming (``TIMER_UNPAUSE``). ``seq`` keeps entries with equal ``when`` in
insertion order and keeps the targets from ever being compared.

Invariant: an entry is live only while its target still has that deadline in that role
(``is_live``); stale entries are skipped when they come due or purged in bulk once they
outnumber the live ones, so cancelling or moving a deadline costs nothing.
"""

from __future__ import annotations

import heapq
from typing import Final

from beanstalk_py.core.client import Client
from beanstalk_py.core.job import DELAYED, RESERVED, Job
from beanstalk_py.core.tube import Tube

# Module-level Final aliases: mypyc keeps them in C statics (no attribute lookup per call).
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop
_heapify: Final = heapq.heapify

TIMER_DELAY: Final = 0  # a delayed job becomes ready
TIMER_TTR: Final = 1  # a reserved job's time to run is over
TIMER_WAIT: Final = 2  # a reserve-with-timeout runs out
TIMER_SOON: Final = 3  # a waiting client's reserved job enters its last second
TIMER_UNPAUSE: Final = 4  # a paused tube resumes

Timer = tuple[float, int, int, Job | Client | Tube]


class Timers:
    __slots__ = ("_seq", "_tubes", "heap")

    def __init__(self, tubes: dict[str, Tube]) -> None:
        self.heap: list[Timer] = []
        self._seq = 0
        self._tubes = tubes  # the engine's live tubes: a destroyed tube's unpause is stale

    def add(self, when: float, kind: int, target: Job | Client | Tube, live: int) -> None:
        """Schedule ``target``; ``live`` bounds the live entries (purge beyond 4x that)."""
        heap = self.heap
        if len(heap) > 4 * live + 1024:
            self.purge()
        seq = self._seq
        self._seq = seq + 1
        _heappush(heap, (when, seq, kind, target))

    def append_unordered(self, when: float, kind: int, target: Job | Client | Tube) -> None:
        """Bulk insert; the caller calls ``heapify()`` after the last one."""
        seq = self._seq
        self._seq = seq + 1
        self.heap.append((when, seq, kind, target))

    def heapify(self) -> None:
        _heapify(self.heap)

    def is_live(self, when: float, kind: int, target: Job | Client | Tube) -> bool:
        if isinstance(target, Job):
            state = RESERVED if kind == TIMER_TTR else DELAYED
            return target.deadline == when and target.state == state
        if isinstance(target, Client):
            if not target.waiting:
                return False
            if kind == TIMER_WAIT:
                return target.wait_deadline == when
            return target.deadline_soon_at == when
        return target.pause_until == when and self._tubes.get(target.name) is target

    def purge(self) -> None:
        live = [e for e in self.heap if self.is_live(e[0], e[2], e[3])]
        _heapify(live)
        self.heap = live

    def next_deadline(self) -> float | None:
        """The earliest live deadline (monotonic), or None when nothing is scheduled."""
        heap = self.heap
        while heap:
            when, _, kind, target = heap[0]
            if self.is_live(when, kind, target):
                return when
            _heappop(heap)
        return None

    def pop_due(self, now: float) -> Timer | None:
        """The next live entry due at ``now`` (removed), or None."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            entry = _heappop(heap)
            if self.is_live(entry[0], entry[2], entry[3]):
                return entry
        return None
