"""Binlog exceptions."""

from __future__ import annotations


class BinlogError(OSError):
    """Any binlog failure. An ``OSError`` so the shell's ``except OSError`` around file work
    (open, write_pending, fsync, close) catches it too."""


class BinlogLocked(BinlogError):
    """Another process holds the directory's lock file (a second server on the same ``-b``)."""


class BinlogWriteError(BinlogError):
    """A write or fsync failed. The binlog stops accepting records: replies for records not
    yet durable must not be sent as successes."""
