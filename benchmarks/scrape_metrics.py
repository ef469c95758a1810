"""Time one /metrics scrape of an in-process server holding many tubes.

    python benchmarks/scrape_metrics.py [--tubes 10000] [--cap 1000] [--rounds 7]

Creates the tubes over a real socket (one ``use`` + ``put`` per tube, pipelined), then times
``Exporter.render()`` (what the loop thread does per scrape) and one full HTTP GET. The loop
is blocked for the render time: that is the figure that matters for latency of other clients.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beanstalk_py.shell.config import Config
from beanstalk_py.shell.metrics import exporter_for
from beanstalk_py.shell.server import Server


async def run(ntubes: int, cap: int, rounds: int) -> None:
    srv = Server(Config(host="127.0.0.1", port=0, metrics_max_tubes=cap))
    await srv.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port, limit=2**24)
        w.write(
            b"".join(b"use t%d\r\nput %d 0 60 1\r\nx\r\n" % (i, i % 2000) for i in range(ntubes))
        )
        await w.drain()
        for _ in range(2 * ntubes):
            await asyncio.wait_for(r.readline(), 30)
        exp = exporter_for(srv)
        body = exp.render()  # warm-up: lazy imports
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            body = exp.render()
            times.append(time.perf_counter() - t0)
        r2, w2 = await asyncio.open_connection("127.0.0.1", srv.port)
        t0 = time.perf_counter()
        w2.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        await w2.drain()
        await asyncio.wait_for(r2.read(), 30)
        http = time.perf_counter() - t0
        print(
            f"tubes={ntubes} cap={cap}: render min {min(times) * 1e3:.1f} ms, "
            f"median {statistics.median(times) * 1e3:.1f} ms; one HTTP GET {http * 1e3:.1f} ms; "
            f"{len(body)} bytes, {body.count(10)} lines"
        )
        w.close()
        w2.close()
    finally:
        await srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tubes", type=int, default=10000)
    ap.add_argument("--cap", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    asyncio.run(run(args.tubes, args.cap, args.rounds))


if __name__ == "__main__":
    main()
