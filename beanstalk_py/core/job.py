"""Jobs and their states.

A ``Job`` is owned by exactly one tube for its whole life. ``body`` holds the client's bytes
*followed by the trailing CRLF*, so a reply is the header plus ``body`` with no copy.
``deadline`` is on the engine's monotonic clock: the ready time while delayed, the TTR deadline
while reserved, meaningless otherwise. ``created`` is wall-clock epoch seconds.

The counters that most jobs never move (``timeouts``, ``releases``, ``buries``, ``kicks``) live
in a ``JobCounters`` made on the first non-zero value (``counters`` is None until then); the
properties of the same names read 0 while there is none. This keeps the record of a job that
is put, reserved and deleted small (memory per job, issue 12). For the same reason ``ttr`` and
``delay`` (both u32 on the wire and in the binlog) share one int, ``durations``
(``delay << 32 | ttr``), read and written through properties of those names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from beanstalk_py.core.client import Client
    from beanstalk_py.core.tube import Tube

# State codes; the names are what stats-job prints.
READY: Final = 1
RESERVED: Final = 2
BURIED: Final = 3
DELAYED: Final = 4
DELETED: Final = 0

STATE_NAMES = {READY: "ready", RESERVED: "reserved", BURIED: "buried", DELAYED: "delayed"}

_TTR_MASK: Final = 0xFFFFFFFF  # ttr: the low 32 bits of Job.durations; delay: the rest

URGENT_THRESHOLD: Final = 1024  # pri below this counts as "urgent" in stats (beanstalkd dat.h)


class JobCounters:
    """The rarely moved counters of one job (see the module docstring)."""

    __slots__ = ("buries", "kicks", "releases", "timeouts")

    def __init__(self) -> None:
        self.timeouts = 0
        self.releases = 0
        self.buries = 0
        self.kicks = 0


class Job:
    __slots__ = (
        "body",
        "counters",
        "created",
        "deadline",
        "durations",
        "file",
        "id",
        "log_meta",
        "pri",
        "reserver",
        "reserves",
        "state",
        "tube",
    )

    def __init__(
        self, id: int, tube: Tube, pri: int, delay: int, ttr: int, body: bytes, created: float
    ) -> None:
        self.id = id
        self.tube = tube
        self.pri = pri
        if not 0 <= ttr <= _TTR_MASK:
            raise ValueError(f"ttr out of range: {ttr}")
        # delay: seconds, as given by the last put or release; ttr: seconds, >= 1
        self.durations = delay << 32 | ttr
        self.body = body  # includes the trailing b"\r\n"
        self.created = created
        self.state = READY
        self.deadline = 0.0
        self.reserves = 0
        self.counters: JobCounters | None = None  # timeouts, releases, buries, kicks
        self.reserver: Client | None = None  # the client holding it while reserved
        self.file = 0  # binlog file number holding the latest full record (stats-job "file")
        # binlog bookkeeping (binlog/segments.py): bury sequence << 33 | segment of the latest
        # UPDATE record << 1 | "older FULL copies exist"; 0 for a job never updated.
        self.log_meta = 0

    @property
    def ttr(self) -> int:
        return self.durations & _TTR_MASK

    @ttr.setter
    def ttr(self, ttr: int) -> None:
        if not 0 <= ttr <= _TTR_MASK:
            raise ValueError(f"ttr out of range: {ttr}")
        self.durations = (self.durations >> 32) << 32 | ttr

    @property
    def delay(self) -> int:
        return self.durations >> 32

    @delay.setter
    def delay(self, delay: int) -> None:
        self.durations = delay << 32 | self.durations & _TTR_MASK

    def _counters(self) -> JobCounters:
        c = self.counters
        if c is None:
            c = self.counters = JobCounters()
        return c

    @property
    def timeouts(self) -> int:
        c = self.counters
        return 0 if c is None else c.timeouts

    @timeouts.setter
    def timeouts(self, n: int) -> None:
        if n or self.counters is not None:
            self._counters().timeouts = n

    @property
    def releases(self) -> int:
        c = self.counters
        return 0 if c is None else c.releases

    @releases.setter
    def releases(self, n: int) -> None:
        if n or self.counters is not None:
            self._counters().releases = n

    @property
    def buries(self) -> int:
        c = self.counters
        return 0 if c is None else c.buries

    @buries.setter
    def buries(self, n: int) -> None:
        if n or self.counters is not None:
            self._counters().buries = n

    @property
    def kicks(self) -> int:
        c = self.counters
        return 0 if c is None else c.kicks

    @kicks.setter
    def kicks(self, n: int) -> None:
        if n or self.counters is not None:
            self._counters().kicks = n

    def __repr__(self) -> str:
        return f"<Job {self.id} {STATE_NAMES.get(self.state, 'deleted')} pri={self.pri}>"
