"""Durability for ``-b DIR``: beanstalk-py's own binlog.

The byte format, what is written when, replay and damage rules are specified in the docstring
of ``beanstalk_py.binlog.format``. In short: segments ``binlog.N`` of ``-s`` bytes, each with a
versioned 32-byte header (carrying the next job id), then CRC-32 framed little-endian records
FULL (put / compaction), UPDATE (bury, kick, release incl. delay 0, reserve-job of a buried or
delayed job) and DELETE. Pause state, reserve of a ready job and touch are not kept.

Modules, each with one job (imports go one way: writer -> compaction -> segments, writer ->
replay -> segments, writer -> sync):

* ``format``: the byte layout (its docstring is the specification), encode, scan.
* ``segments``: ``Segment`` files, preallocation, space accounting, rotation, record buffers.
* ``compaction``: segment removal (pins, the header floor) and copy-forward compaction.
* ``sync``: the fsync policy and the state shared with the fsync worker thread.
* ``replay``: reading the segments at start-up; returns what it learned (``Replayed``).
* ``writer``: ``Binlog``, the engine's journal; adopts a replay, buffers, writes, syncs.
* ``fileops``: the system-call seam; ``beanstalkd_import``: reading beanstalkd v7/v5 binlogs.

The server drives a ``Binlog`` like this::

    bl = Binlog.open(path, file_size=..., fsync_ms=..., clock=clock, max_job_size=...)
    result = bl.replay(engine.tubes) # Job objects, read in a worker thread if you like
    engine.restore_many(result.by_id, result.tubes, result.buried, result.next_id)  # loop thread
    ...                              # the engine calls bl.put/update/delete (buffer only)
    seq = bl.write_pending()         # once per loop iteration, before releasing replies
    bl.sync_deadline()               # arm a timer; run bl.fsync() in a worker thread
    bl.close()
"""

from beanstalk_py.binlog.errors import BinlogError, BinlogLocked, BinlogWriteError
from beanstalk_py.binlog.fileops import FileOps, OsFileOps
from beanstalk_py.binlog.replay import ReplayResult, RestoredJob
from beanstalk_py.binlog.writer import Binlog

__all__ = [
    "Binlog",
    "BinlogError",
    "BinlogLocked",
    "BinlogWriteError",
    "FileOps",
    "OsFileOps",
    "ReplayResult",
    "RestoredJob",
]
