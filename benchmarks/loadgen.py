"""Load generator for the beanstalkd protocol (pure Python, multi-process).

Designed not to be the bottleneck for a Python server: every worker process drives its share of
the connections from one ``select.epoll`` loop over raw non-blocking sockets, batches every
request it can into one ``send()``, and parses as little as a scenario allows (counting
``\\r\\n``-terminated replies and checking their kind). Workers run as separate processes so the
driver can use the machine's other core.

Each worker measures its own CPU (``resource.getrusage``) over the measured window; the parent
reads the server's CPU from ``/proc/PID/stat`` and the machine's from ``/proc/stat`` over the same
window, so a reader can tell who was saturated.

Scenarios (the same set as ``bqdrive.c``, which emits the same JSON):

* ``put``      each connection keeps ``depth`` puts in flight (1 = request/response).
* ``pipeline`` ``depth`` requests in flight per connection: puts, and a ``delete <id>`` for every
  ``INSERTED <id>``; ops = puts + deletes.
* ``cycle``    ``conns`` producers put (1 in flight, held back while the worker's backlog of puts
  not yet reserved reaches its share of ``cap``), ``consumers`` consumers
  ``reserve-with-timeout 1`` + ``delete``. Headline = jobs deleted/s; ``e2e_us`` = put sent ->
  job reserved (the body carries the send time). Each worker uses its own tube.
* ``fill``     put ``jobs`` jobs over ``conns`` x ``depth`` and stop.
* ``drain``    ``reserve-with-timeout 0`` + ``delete`` until every connection sees ``TIMED_OUT``.

Usage: ``python benchmarks/loadgen.py put -p 11300 -c 50 -d 5 -w 1 -s SERVER_PID`` prints one JSON
line. ``run.py`` imports :func:`run_load` instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import select
import socket
import sys
import time
from array import array
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

SCENARIOS = ("put", "pipeline", "cycle", "fill", "drain")
DOC_ERRORS = (
    b"NOT_FOUND",
    b"BURIED",
    b"JOB_TOO_BIG",
    b"DRAINING",
    b"DEADLINE_SOON",
    b"OUT_OF_MEMORY",
    b"INTERNAL_ERROR",
)
RECV = 262144
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Fatal(Exception):
    """Protocol desync or connection failure: the run's figures cannot be trusted."""


@dataclass
class Spec:
    scenario: str
    host: str = "127.0.0.1"
    port: int = 11300
    conns: int = 1
    consumers: int = -1
    depth: int = 1
    body: int = 100
    tube: str = "bench"
    warmup: float = 1.0
    duration: float = 5.0
    jobs: int = 1_000_000
    cap: int = 100
    max_time: float = 300.0
    workers: int = 0
    server_pid: int = 0


@dataclass
class WorkerResult:
    ops: int = 0
    jobs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    lat: bytes = b""
    e2e: bytes = b""
    cpu_s: float = 0.0
    window_s: float = 0.0
    fatal: str = ""
    timed_out: bool = False


# ----------------------------------------------------------------------------- worker side


def _connect(spec: Spec, tube: str, consumer: bool) -> socket.socket:
    s = socket.create_connection((spec.host, spec.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if consumer:
        setup = f"watch {tube}\r\nignore default\r\n".encode()
        want = [b"WATCHING 2", b"WATCHING 1"]
    else:
        setup = f"use {tube}\r\n".encode()
        want = [b"USING " + tube.encode()]
    s.sendall(setup)
    buf = b""
    deadline = time.monotonic() + 5
    while buf.count(b"\r\n") < len(want):
        if time.monotonic() > deadline:
            raise Fatal("setup timed out")
        chunk = s.recv(4096)
        if not chunk:
            raise Fatal("connection closed during setup")
        buf += chunk
    if buf.split(b"\r\n")[: len(want)] != want:
        raise Fatal(f"setup: unexpected reply {buf!r}")
    s.setblocking(False)
    return s


def _error_kind(line: bytes) -> str:
    word = line.split(b" ", 1)[0]
    if word in DOC_ERRORS:
        return word.decode()
    raise Fatal(f"unexpected reply {line[:80]!r}")


class _Worker:
    """One process: an epoll loop over its share of the connections."""

    def __init__(self, spec: Spec, index: int, nprod: int, ncons: int, jobs: int) -> None:
        self.spec = spec
        self.tube = f"{spec.tube}-{index}" if spec.scenario == "cycle" else spec.tube
        self.nprod, self.ncons, self.jobs_quota = nprod, ncons, jobs
        self.res = WorkerResult()
        self.lat = array("q")
        self.e2e = array("q")
        self.socks: dict[int, socket.socket] = {}
        self.ep = select.epoll()
        self.inflight: dict[int, deque[int]] = {}
        self.tail: dict[int, bytes] = {}
        self.out: dict[int, bytearray] = {}
        self.wouldblock: set[int] = set()
        pad = max(spec.body - 16, 0)
        self.pad = b"x" * pad
        self.put_hdr = f"put 1024 0 60 {spec.body}\r\n".encode()
        self.put_cmd = self.put_hdr + (b"0" * 16 + self.pad)[: spec.body] + b"\r\n"

    def setup(self) -> None:
        consumer_roles = self.spec.scenario in ("drain",)
        for i in range(self.nprod + self.ncons):
            cons = consumer_roles or i >= self.nprod
            if cons and self.spec.scenario == "drain":
                s = _connect(self.spec, self.tube, consumer=True)
            else:
                s = _connect(self.spec, self.tube, consumer=cons)
            fd = s.fileno()
            self.socks[fd] = s
            self.inflight[fd] = deque()
            self.tail[fd] = b""
            self.out[fd] = bytearray()
            self.ep.register(fd, select.EPOLLIN)
        self.consumer_fds = set(list(self.socks)[self.nprod :])
        if self.spec.scenario == "drain":
            self.consumer_fds = set(self.socks)

    # -- output: queue bytes per connection, flush once per loop iteration
    def flush(self, fd: int) -> None:
        buf = self.out[fd]
        if not buf:
            return
        try:
            n = self.socks[fd].send(buf)
        except BlockingIOError:
            n = 0
        del buf[:n]
        if buf and fd not in self.wouldblock:
            self.wouldblock.add(fd)
            self.ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)
        elif not buf and fd in self.wouldblock:
            self.wouldblock.discard(fd)
            self.ep.modify(fd, select.EPOLLIN)

    def run(self, t0: float) -> WorkerResult:
        sp = self.spec
        timed = sp.scenario in ("put", "pipeline", "cycle")
        w0 = t0 + sp.warmup
        w1 = w0 + sp.duration
        hard = t0 + (sp.warmup + sp.duration + 5 if timed else sp.max_time)
        now_s = time.monotonic()
        if t0 > now_s:
            time.sleep(t0 - now_s)
        ru0 = ru1 = None
        if not timed:
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            w0, w1 = t0, hard
        handler = {
            "put": self._put,
            "fill": self._put,
            "pipeline": self._pipeline,
            "cycle": self._cycle,
            "drain": self._drain,
        }[sp.scenario]
        self.sent_jobs = 0
        self.backlog = 0
        self.parked: list[int] = []
        self.drain_done: set[int] = set()
        self.stopping = False
        self._start(time.monotonic_ns())
        poll = self.ep.poll
        mono_ns = time.monotonic_ns
        w0ns, w1ns = int(w0 * 1e9), int(w1 * 1e9)
        in_window = False
        try:
            for _ in range(100_000_000):  # bounded; real bound is the clock
                events = poll(0.05)
                now = mono_ns()
                if not in_window and not self.stopping and now >= w0ns and ru0 is None:
                    ru0 = resource.getrusage(resource.RUSAGE_SELF)
                    in_window = True
                if now >= w1ns and not self.stopping:
                    self.stopping = True
                    ru1 = resource.getrusage(resource.RUSAGE_SELF)
                inw = w0ns <= now < w1ns
                for fd, ev in events:
                    if ev & select.EPOLLIN:
                        try:
                            data = self.socks[fd].recv(RECV)
                        except BlockingIOError:
                            continue
                        if not data:
                            raise Fatal("connection closed by server")
                        handler(fd, data, now, inw)
                    if ev & select.EPOLLOUT:
                        self.flush(fd)
                    elif ev & (select.EPOLLERR | select.EPOLLHUP):
                        raise Fatal("connection error")
                if self._finished(now):
                    break
                if now / 1e9 > hard:
                    self.res.timed_out = True
                    break
        except Fatal as e:
            self.res.fatal = str(e)
        if ru1 is None:
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            w1 = time.monotonic()
            if not timed:
                self.res.window_s = w1 - t0
        if ru0 is None:
            ru0 = ru1
        if timed:
            self.res.window_s = sp.duration
        self.res.cpu_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        self.res.lat = self.lat.tobytes()
        self.res.e2e = self.e2e.tobytes()
        for s in self.socks.values():
            s.close()
        return self.res

    def _finished(self, now: int) -> bool:
        sp = self.spec.scenario
        if sp == "fill":
            return self.sent_jobs >= self.jobs_quota and not any(self.inflight.values())
        if sp == "drain":
            return len(self.drain_done) == len(self.socks) and not any(self.inflight.values())
        if not self.stopping:
            return False
        # timed: stop sending; finish when nothing is in flight (consumers: reserve may wait 1 s)
        return not any(self.inflight[fd] for fd in self.socks)

    def _start(self, now: int) -> None:
        sp = self.spec
        for fd in self.socks:
            if sp.scenario in ("put", "pipeline"):
                self._send_puts(fd, sp.depth, now)
            elif sp.scenario == "fill":
                self._send_puts(fd, min(sp.depth, self.jobs_quota - self.sent_jobs), now)
            elif sp.scenario == "drain":
                self._send(fd, b"reserve-with-timeout 0\r\n" * sp.depth, sp.depth, now)
            elif fd in self.consumer_fds:
                self._send(fd, b"reserve-with-timeout 1\r\n", 1, now)
            else:
                self._produce(fd, now)
            self.flush(fd)

    def _send(self, fd: int, data: bytes, n: int, now: int) -> None:
        self.out[fd] += data
        q = self.inflight[fd]
        for _ in range(n):
            q.append(now)

    def _send_puts(self, fd: int, n: int, now: int) -> None:
        if n <= 0:
            return
        self.sent_jobs += n
        self._send(fd, self.put_cmd * n, n, now)

    # -- put / fill: count INSERTED replies
    def _put(self, fd: int, data: bytes, now: int, inw: bool) -> None:
        if self.tail[fd]:
            data = self.tail[fd] + data
        n = data.count(b"\r\n")
        if n == 0:
            self.tail[fd] = data
            return
        end = data.rfind(b"\r\n") + 2
        self.tail[fd] = data[end:]
        ok = data.count(b"INSERTED ", 0, end)
        if ok != n:
            for line in data[:end].split(b"\r\n")[:-1]:
                if not line.startswith(b"INSERTED "):
                    k = _error_kind(line)
                    self.res.errors[k] = self.res.errors.get(k, 0) + 1
        q = self.inflight[fd]
        if len(q) < n:
            raise Fatal("reply with nothing in flight")
        res = self.res
        if self.spec.scenario == "fill":
            res.jobs += ok
            res.ops += ok
            for _ in range(n):
                q.popleft()
            left = self.jobs_quota - self.sent_jobs
            self._send_puts(fd, min(n, left), now)
        else:
            if inw:
                res.ops += ok
                res.jobs += ok
                lat = self.lat
                for _ in range(n):
                    lat.append(now - q.popleft())
            else:
                for _ in range(n):
                    q.popleft()
            if not self.stopping:
                self._send_puts(fd, n, now)
        self.flush(fd)

    # -- pipeline: INSERTED <id> -> delete <id>; DELETED -> another put
    def _pipeline(self, fd: int, data: bytes, now: int, inw: bool) -> None:
        if self.tail[fd]:
            data = self.tail[fd] + data
        lines = data.split(b"\r\n")
        self.tail[fd] = lines.pop()
        q = self.inflight[fd]
        if len(q) < len(lines):
            raise Fatal("reply with nothing in flight")
        out = self.out[fd]
        stop = self.stopping
        nput = 0
        for line in lines:
            ts = q.popleft()
            if inw:
                self.lat.append(now - ts)
            if line[:9] == b"INSERTED ":
                out += b"delete " + line[9:] + b"\r\n"
                q.append(now)
            elif line == b"DELETED":
                if inw:
                    self.res.jobs += 1
                if not stop:
                    nput += 1
            else:
                k = _error_kind(line)
                self.res.errors[k] = self.res.errors.get(k, 0) + 1
                if not stop:
                    nput += 1
                continue
            if inw:
                self.res.ops += 1
        if nput:
            self._send_puts(fd, nput, now)
        self.flush(fd)

    # -- framed replies (RESERVED id n\r\n<body>\r\n), for cycle consumers and drain
    def _frames(self, fd: int, data: bytes) -> list[tuple[bytes, bytes]]:
        if self.tail[fd]:
            data = self.tail[fd] + data
        pos, out, ln = 0, [], len(data)
        while pos < ln:
            e = data.find(b"\r\n", pos)
            if e < 0:
                break
            line = data[pos:e]
            if line[:9] == b"RESERVED ":
                parts = line.split(b" ")
                if len(parts) != 3 or not parts[2].isdigit():
                    raise Fatal(f"malformed {line[:80]!r}")
                size = int(parts[2])
                bend = e + 2 + size
                if bend + 2 > ln:
                    break
                if data[bend : bend + 2] != b"\r\n":
                    raise Fatal("RESERVED body not followed by CRLF")
                out.append((line, data[e + 2 : bend]))
                pos = bend + 2
            else:
                out.append((line, b""))
                pos = e + 2
        self.tail[fd] = data[pos:]
        return out

    def _produce(self, fd: int, now: int) -> None:
        if self.stopping:
            return
        if self.spec.cap and self.backlog >= self.cap_local:
            self.parked.append(fd)
            return
        self.backlog += 1
        self.sent_jobs += 1
        body = (b"%016x" % now + self.pad)[: self.spec.body]
        self._send(fd, self.put_hdr + body + b"\r\n", 1, now)

    def _cycle(self, fd: int, data: bytes, now: int, inw: bool) -> None:
        q = self.inflight[fd]
        res = self.res
        if fd not in self.consumer_fds:  # producer: INSERTED
            self._put_reply_producer(fd, data, now, inw)
            return
        for line, body in self._frames(fd, data):
            if not q:
                raise Fatal("reply with nothing in flight")
            ts = q.popleft()
            if inw:
                self.lat.append(now - ts)
            if line[:9] == b"RESERVED ":
                self.backlog -= 1
                if self.parked and not self.stopping:
                    pfd = self.parked.pop()
                    self._produce(pfd, now)
                    self.flush(pfd)
                try:
                    sent = int(body[:16], 16)
                except ValueError as exc:
                    raise Fatal("job body is not ours") from exc
                if len(body) != self.spec.body:
                    res.errors["bad_body"] = res.errors.get("bad_body", 0) + 1
                if inw and sent <= now:
                    self.e2e.append(now - sent)
                self._send(fd, b"delete " + line.split(b" ")[1] + b"\r\n", 1, now)
                if inw:
                    res.ops += 1
            elif line == b"DELETED":
                if inw:
                    res.ops += 1
                    res.jobs += 1
                if not self.stopping:
                    self._send(fd, b"reserve-with-timeout 1\r\n", 1, now)
            elif line == b"TIMED_OUT":
                if not self.stopping:
                    self._send(fd, b"reserve-with-timeout 1\r\n", 1, now)
            else:
                k = _error_kind(line)
                res.errors[k] = res.errors.get(k, 0) + 1
                if not self.stopping:
                    self._send(fd, b"reserve-with-timeout 1\r\n", 1, now)
        self.flush(fd)

    def _put_reply_producer(self, fd: int, data: bytes, now: int, inw: bool) -> None:
        if self.tail[fd]:
            data = self.tail[fd] + data
        lines = data.split(b"\r\n")
        self.tail[fd] = lines.pop()
        q = self.inflight[fd]
        for line in lines:
            if not q:
                raise Fatal("reply with nothing in flight")
            ts = q.popleft()
            if line[:9] != b"INSERTED ":
                k = _error_kind(line)
                self.res.errors[k] = self.res.errors.get(k, 0) + 1
                self.backlog -= 1
            elif inw:
                self.lat.append(now - ts)
                self.res.ops += 1
            self._produce(fd, now)
        self.flush(fd)

    def _drain(self, fd: int, data: bytes, now: int, inw: bool) -> None:
        q = self.inflight[fd]
        for line, _body in self._frames(fd, data):
            if not q:
                raise Fatal("reply with nothing in flight")
            q.popleft()
            if line[:9] == b"RESERVED ":
                self._send(fd, b"delete " + line.split(b" ")[1] + b"\r\n", 1, now)
                if fd not in self.drain_done:
                    self._send(fd, b"reserve-with-timeout 0\r\n", 1, now)
            elif line == b"DELETED":
                self.res.jobs += 1
                self.res.ops += 1
            elif line == b"TIMED_OUT":
                self.drain_done.add(fd)
            else:
                k = _error_kind(line)
                self.res.errors[k] = self.res.errors.get(k, 0) + 1
        self.flush(fd)


def _worker_main(spec: Spec, index: int, nprod: int, ncons: int, jobs: int, pipe: Any) -> None:
    try:
        w = _Worker(spec, index, nprod, ncons, jobs)
        w.cap_local = max(1, spec.cap * max(nprod, 1) // max(spec.conns, 1))
        w.setup()
        pipe.send("ready")
        t0 = pipe.recv()
        if t0 is None:
            return
        res = w.run(t0)
    except Fatal as e:
        res = WorkerResult(fatal=str(e))
    except OSError as e:
        res = WorkerResult(fatal=f"{type(e).__name__}: {e}")
    pipe.send(asdict(res))


# ----------------------------------------------------------------------------- parent side


def proc_cpu_s(pid: int) -> float:
    """utime+stime of a process in seconds, from /proc/PID/stat (0.0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    total = sum(v[:8])
    return float(total - idle), float(total)


def percentiles(ns: array[int] | list[int]) -> dict[str, float]:
    if not ns:
        return {"n": 0}
    xs = sorted(ns)
    n = len(xs)

    def pick(p: float) -> float:
        return round(xs[min(n - 1, int(p * n))] / 1000, 1)

    return {
        "n": n,
        "mean": round(sum(xs) / n / 1000, 1),
        "p50": pick(0.5),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "p999": pick(0.999),
        "max": round(xs[-1] / 1000, 1),
    }


def run_load(spec: Spec) -> dict[str, Any]:
    """Run one scenario with worker processes and return the result dict (bqdrive's schema)."""
    if spec.scenario not in SCENARIOS:
        raise ValueError(spec.scenario)
    ncons = spec.consumers if spec.consumers >= 0 else spec.conns
    if spec.scenario != "cycle":
        ncons = 0
    total = spec.conns + ncons
    nw = spec.workers or (1 if total <= 2 else 2)
    nw = max(1, min(nw, spec.conns))
    ctx = mp.get_context("fork")
    procs, pipes = [], []
    for i in range(nw):
        nprod = spec.conns // nw + (1 if i < spec.conns % nw else 0)
        nc = ncons // nw + (1 if i < ncons % nw else 0)
        jobs = spec.jobs // nw + (1 if i < spec.jobs % nw else 0)
        a, b = ctx.Pipe()
        p = ctx.Process(target=_worker_main, args=(spec, i, nprod, nc, jobs, b), daemon=True)
        p.start()
        procs.append(p)
        pipes.append(a)
    out: dict[str, Any] = {"tool": "loadgen.py", "scenario": spec.scenario, "workers": nw}
    timed = spec.scenario in ("put", "pipeline", "cycle")
    cpu0 = cpu1 = 0.0
    mb0 = mb1 = (0.0, 0.0)
    wall0 = wall1 = 0.0
    try:
        results: list[dict[str, Any]] = []
        started: list[Any] = []
        for a in pipes:
            if not a.poll(15):
                raise Fatal("worker did not start")
            msg = a.recv()
            if msg != "ready":
                results.append(msg)
            else:
                started.append(a)
        if results:
            for a in started:
                a.send(None)
        else:
            t0 = time.monotonic() + 0.05
            for a in pipes:
                a.send(t0)
            if timed:
                time.sleep(max(0.0, t0 + spec.warmup - time.monotonic()))
            cpu0, mb0, wall0 = proc_cpu_s(spec.server_pid), machine_busy(), time.monotonic()
            if timed:
                time.sleep(max(0.0, t0 + spec.warmup + spec.duration - time.monotonic()))
                cpu1, mb1, wall1 = proc_cpu_s(spec.server_pid), machine_busy(), time.monotonic()
            limit = time.monotonic() + (
                spec.duration + spec.warmup + 10 if timed else spec.max_time + 10
            )
            for a in pipes:
                if not a.poll(max(0.1, limit - time.monotonic())):
                    raise Fatal("worker did not finish")
                results.append(a.recv())
            if not timed:
                cpu1, mb1, wall1 = proc_cpu_s(spec.server_pid), machine_busy(), time.monotonic()
    except Fatal as e:
        out.update(ok=False, fatal=str(e))
        return out
    finally:
        for p in procs:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
    fatal = [r["fatal"] for r in results if r["fatal"]]
    errors: dict[str, int] = {}
    lat, e2e = array("q"), array("q")
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
        lat.frombytes(r["lat"])
        e2e.frombytes(r["e2e"])
    ops = sum(r["ops"] for r in results)
    jobs = sum(r["jobs"] for r in results)
    window = spec.duration if timed else max((r["window_s"] for r in results), default=0.0)
    window = max(window, 1e-9)
    wall = max(wall1 - wall0, 1e-9)
    ncpu = os.cpu_count() or 1
    busy = (mb1[0] - mb0[0]) / max(mb1[1] - mb0[1], 1) * 100 * ncpu
    drv = sum(r["cpu_s"] for r in results) / window * 100
    srv = (cpu1 - cpu0) / wall * 100 if spec.server_pid else None
    out.update(
        conns=spec.conns,
        consumers=ncons,
        depth=spec.depth,
        body=spec.body,
        warmup_s=spec.warmup if timed else 0,
        duration_s=round(window, 3),
        ops=ops,
        ops_per_s=round(ops / window),
        jobs=jobs,
        jobs_per_s=round(jobs / window),
        errors=sum(errors.values()),
        error_kinds=errors,
        lat_us=percentiles(lat),
        cpu={
            "unit": "% of one core",
            "driver": round(drv, 1),
            "server": None if srv is None else round(srv, 1),
            "machine_busy": round(busy, 1),
            "other": None if srv is None else round(busy - drv - srv, 1),
        },
        timed_out=any(r["timed_out"] for r in results),
        ok=not fatal,
    )
    if spec.scenario == "cycle":
        out["e2e_us"] = percentiles(e2e)
    if fatal:
        out["fatal"] = fatal[0]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", choices=SCENARIOS)
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=11300)
    ap.add_argument("-c", "--conns", type=int, default=1)
    ap.add_argument("-C", "--consumers", type=int, default=-1)
    ap.add_argument("-k", "--depth", type=int, default=0, help="in flight per conn")
    ap.add_argument("-b", "--body", type=int, default=100)
    ap.add_argument("-t", "--tube", default="bench")
    ap.add_argument("-w", "--warmup", type=float, default=1.0)
    ap.add_argument("-d", "--duration", type=float, default=5.0)
    ap.add_argument("-n", "--jobs", type=int, default=1_000_000)
    ap.add_argument("-L", "--cap", type=int, default=100)
    ap.add_argument("-m", "--max-time", type=float, default=300.0)
    ap.add_argument("-W", "--workers", type=int, default=0, help="processes (0 = auto)")
    ap.add_argument("-s", "--server-pid", type=int, default=0)
    a = ap.parse_args(argv)
    depth = a.depth or (
        64 if a.scenario in ("pipeline", "fill") else 16 if a.scenario == "drain" else 1
    )
    spec = Spec(
        a.scenario,
        a.host,
        a.port,
        a.conns,
        a.consumers,
        depth,
        a.body,
        a.tube,
        a.warmup,
        a.duration,
        a.jobs,
        a.cap,
        a.max_time,
        a.workers,
        a.server_pid,
    )
    res = run_load(spec)
    print(json.dumps(res))
    return 0 if res.get("ok") and not res.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
