"""The real clock and the process facts behind the core's ``Clock`` and ``Host`` seams."""

from __future__ import annotations

import os
import resource
import time


class SystemClock:
    """Production clock: ``time.monotonic`` and ``time.time``."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class SystemHost:
    """This process and machine, as ``stats`` reports them."""

    __slots__ = ()

    def pid(self) -> int:
        return os.getpid()

    def uname(self) -> tuple[str, str, str]:
        u = os.uname()
        return u.nodename, u.version, u.machine

    def rusage(self) -> tuple[float, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime, ru.ru_stime
