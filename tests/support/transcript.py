"""Small helpers shared by transcript tests (reading YAML replies, waiting for waiters)."""

from __future__ import annotations

import asyncio
import time

from support.client import RawClient
from support.yamlfmt import parse_pairs

# Extra time added to real deadlines so a reference server (real clock, ms timer resolution)
# has certainly acted; against beanstalk-py's ManualClock the amount only needs to pass the edge.
MARGIN = 0.05


async def stats_of(c: RawClient, command: bytes) -> dict[str, str]:
    """Send a stats-like command and return the raw values by key."""
    await c.send(command + b"\r\n")
    return dict(parse_pairs(await c.read_yaml()))


async def job_stats(c: RawClient, job_id: int) -> dict[str, str]:
    return await stats_of(c, b"stats-job %d" % job_id)


async def wait_for_stat(c: RawClient, key: str, value: str, *, timeout: float = 5.0) -> None:
    """Poll ``stats`` on ``c`` until ``key`` has ``value`` (a barrier across connections)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = (await stats_of(c, b"stats"))[key]
        if last == value:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"stats {key} stayed {last!r}, wanted {value!r}")


async def settled_stats(
    reference: bool, c: RawClient, command: bytes, want: dict[str, str]
) -> dict[str, str]:
    """Stats after a timer should have fired, asserting the ``want`` values.

    Against beanstalk-py (ManualClock) the first answer must already be right. Against the
    reference, timers fire on a real clock with millisecond resolution and on a shared, busy
    machine, and a timer can even wait for the next I/O (docs/COMPATIBILITY.md, "Scheduling and timing"): retry for up to ~1 s.
    """
    tries = 20 if reference else 1
    got: dict[str, str] = {}
    for attempt in range(tries):
        st = await stats_of(c, command)
        got = {k: st[k] for k in want}
        if got == want:
            return st
        if attempt + 1 < tries:
            await asyncio.sleep(0.05)
    raise AssertionError(f"{command!r}: expected {want}, got {got}")
