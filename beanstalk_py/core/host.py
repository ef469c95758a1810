"""The ``Host`` seam: process facts that ``stats`` prints (pid, uname, CPU time).

The core reads no operating-system state itself; the shell passes ``system.SystemHost``.
``UnknownHost`` (zeros and empty strings) serves engines built without one, as in unit tests.
"""

from __future__ import annotations

from typing import Protocol


class Host(Protocol):
    def pid(self) -> int: ...

    def uname(self) -> tuple[str, str, str]:
        """(hostname, os version, machine)."""
        ...

    def rusage(self) -> tuple[float, float]:
        """(user, system) CPU seconds of this process."""
        ...


class UnknownHost:
    __slots__ = ()

    def pid(self) -> int:
        return 0

    def uname(self) -> tuple[str, str, str]:
        return "", "", ""

    def rusage(self) -> tuple[float, float]:
        return 0.0, 0.0
