"""What a well-formed stream of server replies looks like (for fuzz and hostile-client tests)."""

from __future__ import annotations

REPLY_HEADS = (
    b"INSERTED ",
    b"BURIED",
    b"EXPECTED_CRLF",
    b"JOB_TOO_BIG",
    b"DRAINING",
    b"USING ",
    b"DEADLINE_SOON",
    b"TIMED_OUT",
    b"RESERVED ",
    b"DELETED",
    b"NOT_FOUND",
    b"RELEASED",
    b"TOUCHED",
    b"WATCHING ",
    b"NOT_IGNORED",
    b"FOUND ",
    b"KICKED",
    b"OK ",
    b"PAUSED",
    b"BAD_FORMAT",
    b"UNKNOWN_COMMAND",
    b"OUT_OF_MEMORY",
    b"UNAUTHORIZED",
    b"AUTHENTICATED",
)


def split_replies(data: bytes) -> list[bytes]:
    """Assert ``data`` is a sequence of well-formed replies; return their lines (no bodies)."""
    lines = []
    pos = 0
    while pos < len(data):
        eol = data.find(b"\r\n", pos)
        assert eol >= 0, data[pos:]
        line = data[pos:eol]
        pos = eol + 2
        assert line.startswith(REPLY_HEADS), line
        lines.append(line)
        if line.startswith((b"OK ", b"FOUND ", b"RESERVED ")):
            size = int(line.rsplit(b" ", 1)[1])
            assert data[pos + size : pos + size + 2] == b"\r\n", line
            pos += size + 2
    return lines
