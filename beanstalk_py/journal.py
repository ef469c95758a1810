"""The seam between the engine and persistence.

The engine decides *what* is persisted, calling the journal at exactly the points where a
restart must be able to reproduce a change:

* ``put(job)`` after a job is created (before ``INSERTED`` is queued). Returning ``False``
  means there is no room to persist it: the engine drops the job and answers
  ``OUT_OF_MEMORY``.
* ``update(job)`` after bury, kick, kick-job and release (with its new pri and delay, delay 0
  included). The journal snapshots state, pri, delay, deadline and counters. Returning
  ``False`` means it could not be recorded (the command then fails as the reference does).
* ``delete(job)`` after a job is deleted. Deletes never fail for lack of space: the journal
  reserves their room at put time.

Records are only buffered by these calls. The shell (``server.py``) decides *when* bytes reach
the disk: once per event-loop iteration it calls ``commit()`` and releases the replies only after
it, so a reply that acknowledges a change never leaves before its record was written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from beanstalk_py.job import Job


class Journal(Protocol):
    def put(self, job: Job) -> bool: ...

    def update(self, job: Job) -> bool: ...

    def delete(self, job: Job) -> None: ...


class NullJournal:
    """No persistence (no ``-b``)."""

    __slots__ = ()

    def put(self, job: Job) -> bool:
        return True

    def update(self, job: Job) -> bool:
        return True

    def delete(self, job: Job) -> None:
        return None
