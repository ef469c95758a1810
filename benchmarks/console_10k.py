"""The console with 10,000 tubes: what one API call costs the server's loop, and page load.

    python benchmarks/console_10k.py [--tubes 10000] [--no-browser]

1. In-process: a ``Server`` gets N tubes (one job each, over a real socket), then the time of
   ``Console.handle`` for the tube table's requests is taken directly: that is how long the
   loop is blocked per call (it serves nobody else meanwhile).
2. Real process + headless chromium (tests/browser/chrome.py): the time from navigation until
   the overview's tube table shows its first page, and for a re-sort click.
Figures on a shared machine are noisy; the median of several runs is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "browser")]

from beanstalk_py.console.api import Request  # noqa: E402
from beanstalk_py.shell.config import Config  # noqa: E402
from beanstalk_py.shell.server import Server  # noqa: E402
from beanstalk_py.system import SystemClock  # noqa: E402

QUERIES = (
    "offset=0&limit=50&sort=name&order=asc&q=",
    "offset=0&limit=50&sort=ready&order=desc&q=",
    "offset=5000&limit=50&sort=name&order=asc&q=",
    "offset=0&limit=50&sort=name&order=asc&q=tube-99",
)


async def fill(port: int, tubes: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    batch = 500
    for start in range(0, tubes, batch):
        n = min(batch, tubes - start)
        writer.write(
            b"".join(b"use tube-%05d\r\nput 0 0 60 1\r\nx\r\n" % i for i in range(start, start + n))
        )
        await writer.drain()
        for _ in range(2 * n):
            await reader.readline()
    writer.close()


async def loop_cost(tubes: int) -> None:
    srv = Server(Config(host="127.0.0.1", port=0), clock=SystemClock())
    await srv.start()
    try:
        await fill(srv.port, tubes)
        console = srv.console_ready()
        print(f"tubes: {len(srv.engine.tubes)}")
        for path, query in [("/api/tubes", q) for q in QUERIES] + [("/api/overview", "")]:
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                resp = console.handle(Request("GET", path, query))
                times.append(time.perf_counter() - t0)
            assert resp.status == 200
            print(
                f"  loop blocked by {path}?{query}: median {statistics.median(times) * 1e3:.1f} ms"
                f", max {max(times) * 1e3:.1f} ms, {len(resp.body)} bytes"
            )
    finally:
        await srv.stop()


def page_load(tubes: int) -> None:
    from chrome import missing, new_driver
    from selenium.webdriver.common.by import By
    from support.servers import ours_argv, running

    why = missing()
    if why:
        print(f"browser: skipped ({why})")
        return
    with running(ours_argv()) as srv:
        asyncio.run(fill(srv.port, tubes))
        driver = new_driver()
        try:
            loads = []
            want = f"of {tubes + 1:,}"
            for _ in range(5):
                driver.get("about:blank")
                t0 = time.perf_counter()
                driver.get(f"http://{srv.host}:{srv.port}/")
                while (
                    want not in driver.find_element(By.ID, "main").text
                    or len(driver.find_elements(By.CSS_SELECTOR, "#tubes tbody tr")) < 50
                ):
                    time.sleep(0.01)
                loads.append(time.perf_counter() - t0)
            print(
                f"  page load to a filled tube table: median {statistics.median(loads) * 1e3:.0f} ms"
            )
            sorts = []
            for _ in range(5):
                first = driver.find_element(By.CSS_SELECTOR, "#tubes tbody tr").get_attribute(
                    "data-tube"
                )
                t0 = time.perf_counter()
                driver.find_element(By.CSS_SELECTOR, 'th[data-key="name"]').click()
                while (
                    driver.execute_script(
                        "const r = document.querySelector('#tubes tbody tr');"
                        " return r && r.dataset.tube"
                    )
                    == first
                ):
                    time.sleep(0.005)
                sorts.append(time.perf_counter() - t0)
            print(
                f"  re-sort click to a redrawn table: median {statistics.median(sorts) * 1e3:.0f} ms"
            )
        finally:
            driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tubes", type=int, default=10_000)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {subprocess.getoutput('nproc')} cpus")
    asyncio.run(loop_cost(args.tubes))
    if not args.no_browser:
        page_load(args.tubes)


if __name__ == "__main__":
    main()
