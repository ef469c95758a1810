"""The seam between the engine and persistence.

The engine decides *what* is persisted, calling the journal at exactly the points where a
restart must be able to reproduce a change:

* ``put(job)`` after a job is created (before ``INSERTED`` is queued). Returning ``False``
  means there is no room to persist it: the engine drops the job and answers
  ``OUT_OF_MEMORY``.
* ``update(job)`` after bury, kick, kick-job and release (with its new pri and delay, delay 0
  included), and before ``reserve-job`` takes a buried or delayed job (recorded as reserved,
  so a restart brings it back ready). The journal snapshots state, pri, delay, deadline and
  counters. Returning ``False`` means it could not be recorded (the command then fails as the
  reference does; ``reserve-job`` answers ``INTERNAL_ERROR`` and leaves the job in place).
* ``delete(job)`` after a job is deleted. Deletes never fail for lack of space: the journal
  reserves their room at put time.

Audit: every state change, and what a restart shows (a reserved job comes back ready).
Tested end to end with SIGKILL in ``tests/integration/test_restart_states.py``.

=============================================  ========  ===================================
change                                         record    a restart shows
=============================================  ========  ===================================
put (ready or delayed)                         FULL      the job, delay as an absolute time
reserve, reserve-job of a ready job            none      ready (its last record: ready, or a
                                                         delay already over)
reserve-job of a buried or delayed job         UPDATE    ready (record says reserved)
touch                                          none      ready (reserved jobs come back ready)
TTR expiry, connection closed (reserved ->     none      ready (its last record: ready,
ready)                                                   reserved or a passed delay)
release, with or without delay                 UPDATE    ready / delayed, new pri
bury                                           UPDATE    buried, in bury order
kick, kick-job (buried or delayed -> ready)    UPDATE    ready
delayed -> ready by time                       none      ready (the deadline has passed)
delete from any state                          DELETE    nothing
pause-tube, drain mode                         none      not kept (as beanstalkd)
counters changed without a record: reserves,   none      the values of the job's last record
timeouts (as beanstalkd)
=============================================  ========  ===================================

Records are only buffered by these calls. The shell (``shell/commit.py``) decides *when* bytes
reach the disk: once per event-loop iteration it flushes the journal and releases the replies
only after it, so a reply that acknowledges a change never leaves before its record was written.

``stats()`` returns a ``JournalStats`` snapshot: the binlog-* fields of ``stats`` and the
journal's /metrics (all zero for ``NullJournal``, as beanstalkd reports without ``-b``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from beanstalk_py.core.job import Job


class JournalStats(NamedTuple):
    """What a journal reports; every field is 0 (or empty) without persistence.

    A NamedTuple, not a dataclass: this module is on the way to the first reply, and importing
    dataclasses costs start-up time (see shell start-up notes in docs/ARCHITECTURE.md)."""

    oldest_index: int = 0  # stats binlog-oldest-index
    current_index: int = 0  # stats binlog-current-index
    records_written: int = 0  # stats binlog-records-written
    records_migrated: int = 0  # stats binlog-records-migrated (compaction)
    max_size: int = 0  # segment size (-s); 0: the server reports its configured -s
    bytes_written: int = 0  # bytes written by this process
    disk_bytes: int = 0  # bytes the segments occupy now
    fsync_count: int = 0  # successful fsync rounds (latency: the server's histogram)
    replay_duration: float = 0.0  # seconds the start-up replay took
    space_short: bool = False  # a segment could not be created: puts answer OUT_OF_MEMORY
    last_error: str = ""  # the I/O error that disabled the journal ("" while healthy)


NULL_STATS = JournalStats()


class Journal(Protocol):
    def put(self, job: Job) -> bool: ...

    def update(self, job: Job) -> bool: ...

    def delete(self, job: Job) -> None: ...

    def stats(self) -> JournalStats: ...


class NullJournal:
    """No persistence (no ``-b``)."""

    __slots__ = ()

    def put(self, job: Job) -> bool:
        return True

    def update(self, job: Job) -> bool:
        return True

    def delete(self, job: Job) -> None:
        return None

    def stats(self) -> JournalStats:
        return NULL_STATS
