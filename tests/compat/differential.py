"""Run one transcript against a server subprocess and collect normalised replies.

A transcript is a list of steps over numbered connections. Each server gets a fresh process;
replies are read per step (a known number of replies, or whatever arrives until a short idle
timeout) and normalised only where servers legitimately differ (see ``normalise``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from support.client import RawClient
from support.servers import (
    ServerProcess,
    ours_argv,
    ours_env,
    reference_argv,
    signal_delivered,
)
from support.transcript import stats_of

REPLY_TIMEOUT = 2.0
IDLE = 0.15

# Values that legitimately differ between two servers (or two runs of one server).
VOLATILE = frozenset(
    {"pid", "version", "rusage-utime", "rusage-stime", "uptime", "id", "hostname", "os", "platform"}
)
# 1.12 prints these unquoted, 1.13 (and beanstalk-py) double-quotes them.
QUOTING_DIFFERS = frozenset({"name", "tube"})


@dataclass(frozen=True)
class Send:
    conn: int
    data: bytes
    replies: int = 1


@dataclass(frozen=True)
class SendLarge:
    conn: int
    size: int


@dataclass(frozen=True)
class Read:
    conn: int
    replies: int = 1


@dataclass(frozen=True)
class Idle:
    """Record whatever arrives within ``IDLE`` seconds (for "no reply" quirks)."""

    conn: int


@dataclass(frozen=True)
class Close:
    conn: int


@dataclass(frozen=True)
class HalfClose:
    conn: int


@dataclass(frozen=True)
class Drain:
    pass


@dataclass(frozen=True)
class WaitStat:
    """Barrier: poll ``stats`` on a side connection until ``key`` equals ``value``.

    The polls themselves count (cmd-stats, total-connections) a variable number of times, so a
    transcript using this must not compare ``stats`` afterwards.
    """

    key: str
    value: str


Step = Send | SendLarge | Read | Idle | Close | HalfClose | Drain | WaitStat


@dataclass(frozen=True)
class Transcript:
    name: str
    steps: Sequence[Step]
    args: Sequence[str] = ()
    min_reference: tuple[int, ...] = ()  # skip when the reference binary is older
    notes: str = ""
    unix: bool = False
    extra: dict[str, str] = field(default_factory=dict)


_OK = re.compile(rb"^OK (\d+)\r\n")


def normalise(reply: bytes) -> bytes:
    """Blank volatile stats fields and the 1.12/1.13 quoting of ``name``/``tube``."""
    m = _OK.match(reply)
    if m is None:
        return reply
    payload = reply[m.end() : -2]
    assert int(m.group(1)) == len(payload), f"OK length does not match payload: {reply!r}"
    if not payload.startswith(b"---\n") or payload.startswith(b"---\n- "):
        return reply  # lists are compared byte for byte
    lines = []
    for line in payload[4:].split(b"\n"):
        key, sep, value = line.partition(b": ")
        k = key.decode(errors="replace")
        if sep and k in VOLATILE:
            value = b"<*>"
        elif sep and k in QUOTING_DIFFERS and value.startswith(b'"') and value.endswith(b'"'):
            value = value[1:-1]
        lines.append(key + sep + value)
    return b"OK <n>\r\n---\n" + b"\n".join(lines) + b"\r\n"


def argv_for(kind: str, args: Sequence[str]) -> tuple[list[str], dict[str, str] | None]:
    if kind == "reference":
        return reference_argv(*args), None
    return ours_argv(*args), ours_env()


async def _read_replies(c: RawClient, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        try:
            out.append(normalise(await c.read_reply(timeout=REPLY_TIMEOUT)))
        except AssertionError as exc:
            text = str(exc)
            out.append(b"<closed>" if "closed" in text else b"<timeout>")
            break
    return out


async def _idle(c: RawClient) -> bytes:
    try:
        chunk = await asyncio.wait_for(c.reader.read(65536), IDLE)
    except TimeoutError:
        return b"<nothing>"
    except ConnectionError:
        return b"<closed>"
    if not chunk:
        return b"<closed>"
    return chunk + await c.read_available(0.05)


async def _wait_draining(proc: ServerProcess) -> None:
    """Poll ``GET /readyz`` until it answers 503 (drain mode), 5 s at most."""
    deadline = time.monotonic() + 5
    while True:
        r, w = await asyncio.open_connection(proc.host, proc.port)
        try:
            w.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status = await asyncio.wait_for(r.readline(), REPLY_TIMEOUT)
        finally:
            w.close()
        if b" 503 " in status:
            return
        assert time.monotonic() < deadline, f"drain mode not entered: {status!r}"
        await asyncio.sleep(0.01)


async def _wait_stat(kind: str, proc: ServerProcess, key: str, value: str) -> None:
    """Poll ``stats`` on a side connection until ``key`` has ``value`` (5 s at most)."""
    side = await RawClient.connect(proc.host, proc.port, name="barrier")
    try:
        deadline = time.monotonic() + 5
        while (await stats_of(side, b"stats"))[key] != value:
            assert time.monotonic() < deadline, f"{kind}: waiting for {key}: {value} timed out"
            await asyncio.sleep(0.01)
    finally:
        await side.close()


async def run_transcript(kind: str, t: Transcript) -> list[tuple[int, int, bytes]]:
    """Run ``t`` against a fresh server of ``kind`` ("reference" or "ours")."""
    argv, env = argv_for(kind, t.args)
    proc = ServerProcess(argv, env=env)
    await asyncio.to_thread(proc.start)
    conns: dict[int, RawClient] = {}
    record: list[tuple[int, int, bytes]] = []

    async def conn(i: int) -> RawClient:
        if i not in conns:
            conns[i] = await RawClient.connect(proc.host, proc.port, name=f"{kind}#{i}")
        return conns[i]

    try:
        for n, step in enumerate(t.steps):
            if isinstance(step, Send):
                c = await conn(step.conn)
                await c.send(step.data)
                for r in await _read_replies(c, step.replies):
                    record.append((n, step.conn, r))
            elif isinstance(step, SendLarge):
                await (await conn(step.conn)).send_large(step.size)
            elif isinstance(step, Read):
                for r in await _read_replies(await conn(step.conn), step.replies):
                    record.append((n, step.conn, r))
            elif isinstance(step, Idle):
                record.append((n, step.conn, await _idle(await conn(step.conn))))
            elif isinstance(step, Close):
                await (await conn(step.conn)).close()
                await asyncio.sleep(0.02)
            elif isinstance(step, HalfClose):
                await (await conn(step.conn)).half_close()
            elif isinstance(step, Drain):
                proc.send_signal(signal.SIGUSR1)
                await asyncio.to_thread(signal_delivered, proc.pid, signal.SIGUSR1)
                if kind != "reference":
                    # beanstalk-py acts on it on a later loop turn (after the hand-over from
                    # the start-up loop, if it is still in it). Wait for /readyz to say so:
                    # polling `stats` would add to cmd-stats, which the transcripts compare.
                    await _wait_draining(proc)
            elif isinstance(step, WaitStat):
                await _wait_stat(kind, proc, step.key, step.value)
        # anything unexpected left on any connection?
        for i, c in sorted(conns.items()):
            if not c.writer.is_closing():
                extra = await _idle(c)
                if extra not in (b"<nothing>", b"<closed>"):
                    record.append((len(t.steps), i, b"<extra>" + extra))
    finally:
        for c in conns.values():
            with contextlib.suppress(Exception):
                await c.close()
        await asyncio.to_thread(proc.stop)
    return record


def format_record(record: list[tuple[int, int, bytes]]) -> str:
    return "\n".join(f"step {n:>3} conn {c}: {r!r}" for n, c, r in record)


def ours_kind() -> str:
    """``BEANSTALK_COMPAT_OURS=reference`` compares the reference with itself (harness check)."""
    return "reference" if os.environ.get("BEANSTALK_COMPAT_OURS") == "reference" else "ours"
