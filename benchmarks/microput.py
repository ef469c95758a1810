"""In-process cost of one put per read, layer by layer (no sockets, no event loop).

    python benchmarks/microput.py                       # the package importable from here
    PYTHONPATH=/tmp/pf python benchmarks/microput.py    # a compiled build (pip install --target)

What a put50 request costs the server in user space besides the transport: each line times
N calls of one layer, one put per call, and the difference between lines is what the outer
layer adds. ``Connection.data_received`` runs on the real ``Server`` and ``Connection`` with a
write-only stand-in for the transport (``SinkTransport``: a benchmark, not a test, and the
one part that is not real), so it includes the per-read work of the shell: the /metrics read
counter and sampling, ``sync_reading``, ``after_input`` -> ``flush`` -> ``take_output`` ->
``transport.write``, ``maybe_close`` and ``_arm_timer``. The null line is nullsrv.py's parser
for comparison. CPU time of the fastest of --repeat runs; absolute figures move with the
machine's load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PUT = b"put 1024 0 60 100\r\n" + b"x" * 100 + b"\r\n"


class SinkTransport:
    """Accepts writes and drops them; the few transport calls connection_made makes."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def per_call(fn: Any, n: int, repeat: int) -> float:
    """Microseconds of CPU per call of fn(n) (fn runs its own loop of n calls): the fastest of
    ``repeat`` runs, the one least disturbed by other processes on a shared machine."""
    runs = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn(n)
        runs.append((time.process_time() - t0) / n * 1e6)
    return min(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50_000, help="calls per run")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()

    import nullsrv

    import beanstalk_py.shell.server as server_mod
    from beanstalk_py.shell.config import Config
    from beanstalk_py.shell.connection import Connection
    from beanstalk_py.shell.server import Server

    compiled = server_mod.__file__.endswith(".so")
    lines: list[tuple[str, float]] = []

    def fmt_only(n: int) -> None:
        for i in range(n):
            b"INSERTED %d\r\n" % i

    def null_parse(n: int) -> None:
        c = nullsrv.BytesConn()
        c.hub = nullsrv.Hub()
        c.send = lambda data: None  # type: ignore[method-assign]
        for _ in range(n):
            c.feed(PUT)

    srv = Server(Config(port=0))
    srv._loop = object()  # never scheduled on: no binlog, no deadline (see _arm_timer)

    def session_feed(n: int) -> None:
        conn = Connection(srv)
        conn.connection_made(SinkTransport())
        sess = conn.session
        assert sess is not None
        dirty = srv.pending.dirty  # sessions with output (the shell's flush empties it)
        for _ in range(n):
            sess.feed(PUT)
            sess.take_output()
            dirty.clear()
        conn.connection_lost(None)
        srv.engine.jobs.clear()

    def data_received(n: int) -> None:
        conn = Connection(srv)
        tr = SinkTransport()
        conn.connection_made(tr)
        for _ in range(n):
            conn.data_received(PUT)
        assert tr.written == n, (tr.written, n)
        conn.connection_lost(None)
        srv.engine.jobs.clear()

    def perf_counter_pair(n: int) -> None:
        pc = time.perf_counter
        for _ in range(n):
            pc()
            pc()

    lines.append(("b'INSERTED %d\\r\\n' % id", per_call(fmt_only, a.n, a.repeat)))
    lines.append(("2 x time.perf_counter()", per_call(perf_counter_pair, a.n, a.repeat)))
    lines.append(("nullsrv.py parse + reply (BytesConn.feed)", per_call(null_parse, a.n, a.repeat)))
    lines.append(
        ("Session.feed + take_output (parse, engine.put)", per_call(session_feed, a.n, a.repeat))
    )
    lines.append(
        (
            "Connection.data_received (all of the above + shell)",
            per_call(data_received, a.n, a.repeat),
        )
    )
    print(f"beanstalk_py from {server_mod.__file__} ({'compiled' if compiled else 'pure'})")
    print(f"{a.n:,} puts per run, fastest of {a.repeat} runs, CPU us per put:")
    for k, v in lines:
        print(f"  {v:6.2f}  {k}")
    sf, dr = lines[3][1], lines[4][1]
    print(f"  {dr - sf:6.2f}  shell per read (data_received - Session.feed)")


if __name__ == "__main__":
    main()
