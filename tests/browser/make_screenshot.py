"""Take the README's console screenshots: ``python tests/browser/make_screenshot.py [SECONDS]``.

Starts the real server with an admin token, runs some producers and a worker against it for
SECONDS (default 40) so the rate chart has something to show, logs in through the page, and
saves ``docs/console.png`` (overview) and ``docs/console-tube.png`` (a tube page).
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

import greenstalk  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from support.chrome import new_driver  # noqa: E402
from support.servers import ours_argv, running  # noqa: E402

TOKEN = "screenshot-admin-token"
TUBES = ["emails", "thumbnails", "billing", "webhooks", "search-index", "reports"]


def traffic(addr: tuple[str, int], stop: threading.Event) -> None:
    rng = random.Random(7)
    producers = {t: greenstalk.Client(addr, use=t) for t in TUBES}
    worker = greenstalk.Client(addr, watch=TUBES[:4])
    t0 = time.monotonic()
    while not stop.is_set():
        phase = (time.monotonic() - t0) / 8.0
        for i, t in enumerate(TUBES):
            for _ in range(rng.randint(0, 3 + int(4 * abs(((phase + i) % 2) - 1)))):
                producers[t].put(f'{{"tube": "{t}", "n": {rng.randint(1, 10**6)}}}', ttr=30)
        for _ in range(rng.randint(2, 9)):
            try:
                job = worker.reserve(timeout=0)
            except greenstalk.TimedOutError:
                break
            if rng.random() < 0.04:
                worker.bury(job)
            else:
                worker.delete(job)
        time.sleep(0.25)
    for c in [*producers.values(), worker]:
        c.close()


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "admin"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        with running(ours_argv("--admin-token-file", str(token))) as srv:
            stop = threading.Event()
            thread = threading.Thread(target=traffic, args=((srv.host, srv.port), stop))
            thread.start()
            driver = new_driver(1280, 1000)
            try:
                base = f"http://{srv.host}:{srv.port}/"
                driver.get(base + "#/login")
                time.sleep(1)
                driver.find_element(By.ID, "token").send_keys(TOKEN)
                driver.find_element(By.CSS_SELECTOR, "#login button").click()
                time.sleep(seconds)
                driver.get(base + "#/")
                time.sleep(2.5)
                driver.save_screenshot(str(ROOT / "docs" / "console.png"))
                driver.get(base + "#/tube/emails")
                time.sleep(2.5)
                driver.save_screenshot(str(ROOT / "docs" / "console-tube.png"))
            finally:
                stop.set()
                thread.join()
                driver.quit()


if __name__ == "__main__":
    main()
