"""The real clock and the process facts behind the core's ``Clock`` and ``Host`` seams."""

from __future__ import annotations

import os
import resource
import time


class SystemClock:
    """Production clock: ``time.monotonic`` and ``time.time``.

    The readings are the C functions themselves (static methods), so ``clock.now`` is
    ``time.monotonic``: the engine binds them once and a reading costs no Python frame."""

    __slots__ = ()

    now = staticmethod(time.monotonic)
    wall = staticmethod(time.time)


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
