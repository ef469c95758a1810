"""Record encoding round trips and the frame scanner."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from beanstalk_py.binlog import format as fmt

u32 = st.integers(0, 2**32 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
fields_st = st.tuples(
    u32,
    st.sampled_from([1, 2, 3, 4]),
    u32,
    u32,
    i64,
    i64,
    u32,
    u32,
    u32,
    u32,
    u32,
    st.integers(0, 2**64 - 1),
)
tube_st = st.binary(min_size=1, max_size=200)
body_st = st.binary(max_size=3000).map(lambda b: b + b"\r\n")


@settings(max_examples=200)
@given(st.integers(1, 2**64 - 1), fields_st, tube_st, body_st)
def test_full_round_trip(job_id: int, fields: tuple, tube: bytes, body: bytes) -> None:  # type: ignore[type-arg]
    rec = fmt.encode_job(fmt.T_FULL, job_id, fields, tube, body)
    assert len(rec) == fmt.FULL_BASE + len(tube) + len(body)
    assert fmt.frame_at(rec, 0) == len(rec)
    (got_id, pri, state, tlen, delay, ttr, created, deadline, r, t, rl, b, k, seq, blen) = (
        fmt.JOB_FIXED.unpack_from(rec, fmt.FRAME_SIZE)
    )
    assert got_id == job_id and (tlen, blen) == (len(tube), len(body))
    assert (pri, state, delay, ttr, created, deadline, r, t, rl, b, k, seq) == fields
    assert rec[fmt.FULL_BASE :] == tube + body


@given(
    st.lists(st.tuples(st.integers(1, 10**9), tube_st, body_st), min_size=1, max_size=20), st.data()
)
def test_scan_finds_every_record_and_resyncs(recs: list, data: st.DataObject) -> None:  # type: ignore[type-arg]
    fields = (1, 1, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0)
    parts = [fmt.encode_job(fmt.T_FULL, i, fields, t, b) for i, t, b in recs]
    parts.append(fmt.encode_delete(5))
    blob = fmt.encode_header(1, 1) + b"".join(parts)
    frames, damage, end = fmt.scan(blob + bytes(100), fmt.HEADER_SIZE)
    assert len(frames) == len(parts) and not damage and end == len(blob)
    # corrupt one record: every other record is still found
    victim = data.draw(st.integers(0, len(parts) - 1))
    start = frames[victim][0]
    pos = data.draw(st.integers(start, frames[victim][1] - 1))
    bad = bytearray(blob)
    bad[pos] ^= 0x01
    frames2, damage2, _ = fmt.scan(bytes(bad), fmt.HEADER_SIZE)
    assert [f for f in frames if f[0] != start] == frames2
    assert damage2 and damage2[0][0] == start


def test_header() -> None:
    h = fmt.encode_header(12, 345)
    assert len(h) == fmt.HEADER_SIZE and h[:8] == b"BSPYBLOG"
    assert fmt.decode_header(h) == (1, 345, True)
    assert fmt.decode_header(h[:10]) is None
    bad = bytearray(h)
    bad[17] ^= 1
    assert fmt.decode_header(bytes(bad)) == (1, 345 ^ 256, False)


def test_documented_example_bytes() -> None:
    rec = fmt.encode_delete(2)
    assert rec[4:] == bytes.fromhex("b57a0300080000000200000000000000")
    assert rec[:4] == zlib.crc32(rec[4:]).to_bytes(4, "little")
