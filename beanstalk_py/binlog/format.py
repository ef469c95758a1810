"""The on-disk format of beanstalk-py's binlog (``-b DIR``), version 1.

This docstring is the specification; the code below only names its numbers.

Directory
=========

``DIR/lock``
    Empty file. The server holds an exclusive ``fcntl.lockf`` lock on it for its whole life, so a
    second server on the same directory refuses to start (``BinlogLocked``).
``DIR/binlog.N``
    Segments, ``N`` a decimal integer without padding (as beanstalkd names them). Segments are
    read in increasing ``N``; every start writes to a *new* segment ``max(N) + 1``, so a torn
    tail is never appended to.
``DIR/binlog.N.broken``
    Bytes cut off a damaged segment at start-up, kept for inspection; never read again.

Every segment is preallocated to ``-s`` bytes (``posix_fallocate``) *before* it is used, so
appending records can never fail for lack of space (see "space" below). A preallocated segment
that was never activated is all zeros, and is removed at the next start. When the writer moves
to the next segment the old one is truncated to its used length.

All integers are **little-endian**, independent of the host; times are **int64 nanoseconds
since the Unix epoch** (wall clock), durations are uint32 seconds.

Segment header (32 bytes, at offset 0)
=====================================

======  ====  =======  ==============================================================
offset  size  type     field
======  ====  =======  ==============================================================
0       8     bytes    magic ``b"BSPYBLOG"``
8       2     u16      format version (1)
10      2     u16      flags (0)
12      4     u32      segment number ``N`` (informational; the file name wins)
16      8     u64      next job id when the segment was activated. Ids never repeat
                       across restarts even if every record of the highest ids is gone.
24      4     u32      floor: every segment numbered below it is dead (0: none). The
                       writer fills it in when the header is first written (it may be
                       higher than ``N``); see "Floor" below.
28      4     u32      CRC-32 (zlib) of bytes 0..27
======  ====  =======  ==============================================================

Records follow the header back to back, until the end of the file or a frame whose 12 header
bytes are all zero (the preallocated tail).

Record frame (12 bytes + payload)
=================================

======  ====  ====  ===============================================================
offset  size  type  field
======  ====  ====  ===============================================================
0       4     u32   CRC-32 (zlib) of bytes 4 .. 12+length (frame header and payload)
4       2     u16   frame magic 0x7AB5 (bytes ``b5 7a``): lets a reader resynchronise
                    after damage by scanning for it and checking length and CRC
6       1     u8    record type: 1 FULL, 2 UPDATE, 3 DELETE
7       1     u8    flags (0)
8       4     u32   payload length
======  ====  ====  ===============================================================

Job payload (FULL and UPDATE), 72 bytes, then for FULL the tube name and the body:

======  ====  ====  ===============================================================
offset  size  type  field
======  ====  ====  ===============================================================
0       8     u64   job id (never 0)
8       4     u32   priority
12      1     u8    state: 1 ready, 2 reserved (read back as ready), 3 buried, 4 delayed
13      1     u8    tube name length T (1..200; 0 in UPDATE)
14      2     -     zero
16      4     u32   delay, seconds (as given by the last put or release)
20      4     u32   ttr, seconds
24      8     i64   created, ns since epoch
32      8     i64   delayed only: ready time, ns since epoch (absolute; 0 otherwise)
40      20    5xu32 reserves, timeouts, releases, buries, kicks
60      8     u64   bury sequence: increasing across the log; buried jobs are restored in
                    this order (beanstalkd #668 loses it)
68      4     u32   body length B, including the trailing ``\\r\\n`` (0 in UPDATE)
72      T     bytes tube name (FULL only)
72+T    B     bytes body (FULL only)
======  ====  ====  ===============================================================

DELETE payload: u64 job id (8 bytes).

Sizes: FULL = 84 + T + B, UPDATE = 84, DELETE = 20 bytes.

What is written
===============

* FULL on put, and when compaction copies a live job forward (its *current* state, as
  beanstalkd does: a job reserved at that moment is written as reserved and comes back ready).
* UPDATE after bury, kick, kick-job and release, with the new priority, delay and deadline
  (release with delay 0 too, unlike beanstalkd #597), and when ``reserve-job`` takes a buried
  or delayed job (state reserved: it comes back ready, not buried or delayed again).
* DELETE after delete.
* Not written: reserve (of a ready job), touch, TTR expiry, delayed -> ready by time,
  pause-tube (**pause state is not kept across restarts**), drain mode, tubes without jobs.

Replay is last-writer-wins in (segment, offset) order. UPDATE or DELETE for an id without a
FULL record is ignored (its FULL record was in a segment already removed). A reserved job
comes back ready; a delayed job keeps its absolute ready time and is ready at once if it passed.
Counters come back as written (no ``buries + 1`` per restart).

Floor
=====

A header's floor ``F`` says that, when the header was written, no segment numbered below ``F``
held the latest record of a live job. Such segments hold only superseded and deleted jobs and
the DELETE records masking them, so the whole set can go in any order. Replay takes the highest
floor of all headers with a good CRC and removes every segment below it without reading it.
The writer removes segments below a floor only once the header carrying it is durable (fsynced
with its directory entry) and keeps the newest durable header's segment, so a crash at any
point finds a floor at least that high. Floors only grow, and 0 (written by older versions)
means none; an older version reading a directory whose removals a crash interrupted could see
deleted jobs again in the leftovers below the floor.

Damage
======

A frame is valid when its magic, type, length and CRC check out. At an invalid frame the
reader scans forward for the next valid frame. In the **last** segment, damage with no valid
frame after it is a torn tail: the bytes from the damage on are saved to ``binlog.N.broken``
and the segment is truncated there. Damage anywhere else is logged with segment and offset and
skipped; every valid record before and after it is kept. A segment whose header is short or
unreadable but that holds only zeros, or nothing, is removed; one with a wrong magic or a
newer version is left alone and skipped.

Space
=====

A put is accepted only if, after its FULL record, the preallocated space still free in the
current and spare segments holds one DELETE record for every live job (counting whole 20-byte
slots per segment, since records never straddle segments). So a delete can always be logged,
and a put that cannot be made durable fails (``OUT_OF_MEMORY``). Segments holding no live
record are removed (below a durable floor, or once no DELETE record in them masks a record of
a segment still present); compaction copies live jobs out of the oldest segment holding any once
the closed segments exceed twice the live bytes.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

FILE_MAGIC: Final = b"BSPYBLOG"
VERSION: Final = 1
HEADER = struct.Struct("<8sHHIQII")
HEADER_SIZE: Final = HEADER.size  # 32

FRAME_MAGIC: Final = 0x7AB5
FRAME_MAGIC_BYTES: Final = b"\xb5\x7a"
T_FULL: Final = 1
T_UPDATE: Final = 2
T_DELETE: Final = 3

FRAME = struct.Struct("<IHBBI")  # crc, magic, type, flags, length
FRAME_SIZE: Final = FRAME.size  # 12
CRC = struct.Struct("<I")
# Everything the CRC covers before tube and body, packed in one call on the hot path:
# magic, type, flags, length, then the 72-byte job payload.
JOB_REST = struct.Struct("<HBBIQIBB2xIIqqIIIIIQI")
JOB_FIXED = struct.Struct("<QIBB2xIIqqIIIIIQI")
JOB_FIXED_SIZE: Final = JOB_FIXED.size  # 72
# Frame header and job payload in one (replay's fast path): crc, magic, type, flags, length,
# then the JOB_FIXED fields.
FRAME_JOB = struct.Struct("<IHBBIQIBB2xIIqqIIIIIQI")
DEL_REST = struct.Struct("<HBBIQ")
DEL_ID = struct.Struct("<Q")

FULL_BASE: Final = FRAME_SIZE + JOB_FIXED_SIZE  # 84
UPDATE_SIZE: Final = FULL_BASE  # 84
DELETE_SIZE: Final = FRAME_SIZE + 8  # 20

MAX_TUBE_NAME: Final = 200

assert JOB_REST.size == 8 + JOB_FIXED_SIZE == 80
assert DEL_REST.size == 16
assert FRAME_JOB.size == FRAME_SIZE + JOB_FIXED_SIZE


def encode_header(index: int, next_id: int, floor: int = 0) -> bytes:
    head = HEADER.pack(FILE_MAGIC, VERSION, 0, index, next_id, floor, 0)
    return head[:28] + CRC.pack(zlib.crc32(memoryview(head)[:28]))


def header_floor(data: bytes) -> int:
    """The floor of a header of ours with a good CRC (0 otherwise; see "Floor")."""
    if len(data) < HEADER_SIZE:
        return 0
    magic, version, _flags, _index, _next_id, floor, crc = HEADER.unpack_from(data, 0)
    if magic != FILE_MAGIC or version != VERSION or crc != zlib.crc32(memoryview(data)[:28]):
        return 0
    return int(floor)


def decode_header(data: bytes) -> tuple[int, int, bool] | None:
    """Return ``(version, next_id, crc_ok)``, or None when the magic is not ours or too short."""
    if len(data) < HEADER_SIZE:
        return None
    magic, version, _flags, _index, next_id, _floor, crc = HEADER.unpack_from(data, 0)
    if magic != FILE_MAGIC:
        return None
    return version, next_id, crc == zlib.crc32(memoryview(data)[:28])


def encode_job(
    rtype: int,
    job_id: int,
    fields: tuple[int, int, int, int, int, int, int, int, int, int, int, int],
    tube: bytes = b"",
    body: bytes = b"",
) -> bytes:
    """One FULL or UPDATE record. ``fields``: pri, state, delay, ttr, created_ns, deadline_ns,
    reserves, timeouts, releases, buries, kicks, bury_seq."""
    pri, state, delay, ttr, created, deadline, r, t, rl, b, k, seq = fields
    rest = JOB_REST.pack(
        FRAME_MAGIC,
        rtype,
        0,
        JOB_FIXED_SIZE + len(tube) + len(body),
        job_id,
        pri,
        state,
        len(tube),
        delay,
        ttr,
        created,
        deadline,
        r,
        t,
        rl,
        b,
        k,
        seq,
        len(body),
    )
    crc = zlib.crc32(body, zlib.crc32(tube, zlib.crc32(rest)))
    return b"".join((CRC.pack(crc), rest, tube, body))


def encode_delete(job_id: int) -> bytes:
    rest = DEL_REST.pack(FRAME_MAGIC, T_DELETE, 0, 8, job_id)
    return CRC.pack(zlib.crc32(rest)) + rest


def frame_at(data: bytes | memoryview, pos: int) -> int:
    """Return the end offset of a valid frame starting at ``pos``, or -1."""
    n = len(data)
    if n - pos < FRAME_SIZE:
        return -1
    crc: int
    length: int
    crc, magic, rtype, _flags, length = FRAME.unpack_from(data, pos)
    if magic != FRAME_MAGIC:
        return -1
    end = pos + FRAME_SIZE + length
    if end > n:
        return -1
    if rtype == T_DELETE:
        if length != 8:
            return -1
    elif rtype == T_UPDATE:
        if length != JOB_FIXED_SIZE:
            return -1
    elif rtype == T_FULL:
        if length < JOB_FIXED_SIZE:
            return -1
        tlen: int = data[pos + FRAME_SIZE + 13]
        blen: int = CRC.unpack_from(data, pos + FRAME_SIZE + 68)[0]
        if JOB_FIXED_SIZE + tlen + blen != length or tlen == 0:
            return -1
    else:
        return -1
    if zlib.crc32(memoryview(data)[pos + 4 : end]) != crc:
        return -1
    return int(end)


def scan(data: bytes, pos: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
    """Split ``data[pos:]`` into valid frames.

    Returns ``(frames, damage, end)``: frames as ``(offset, end)``; damage as ``(offset,
    resume)`` with ``resume == -1`` when no valid frame follows (a damaged tail); ``end`` is
    where the data stops (the start of a zero tail or of a damaged tail).
    """
    frames: list[tuple[int, int]] = []
    damage: list[tuple[int, int]] = []
    n = len(data)
    while pos < n:
        end = frame_at(data, pos)
        if end > 0:
            frames.append((pos, end))
            pos = end
            continue
        if data.count(0, pos) == n - pos:
            break  # preallocated zero tail: the normal end of a segment
        resume = resync(data, pos + 1)
        damage.append((pos, resume))
        if resume < 0:
            break
        pos = resume
    return frames, damage, pos


def resync(data: bytes, start: int) -> int:
    """The offset of the next valid frame at or after ``start``, or -1."""
    find = data.find
    p = find(FRAME_MAGIC_BYTES, start + 4)
    while p >= 0:
        if frame_at(data, p - 4) > 0:
            return p - 4
        p = find(FRAME_MAGIC_BYTES, p + 1)
    return -1
