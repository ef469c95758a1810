"""The console in a real headless chromium against the real server process.

One server and one browser for the module (they are slow to start on a shared machine); the
tests run in file order: read-only first, then log in and act.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import greenstalk
import pytest
from support.servers import ours_argv, running

ADMIN = "browser-admin-token"
WAIT = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    token = tmp_path_factory.mktemp("console") / "admin"
    token.write_text(ADMIN + "\n")
    token.chmod(0o600)
    with running(ours_argv("--admin-token-file", str(token))) as srv:
        yield srv


def client(server: Any, tube: str) -> greenstalk.Client[Any]:
    return greenstalk.Client((server.host, server.port), use=tube, watch=tube)


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the element is not there yet (or went stale)
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def cell(driver: Any, tube: str, column: str) -> str:
    (td,) = css(driver, f'#tubes tr[data-tube="{tube}"] td.n-{column}')
    return str(td.text)


def test_overview_shows_a_put_in_the_table_and_the_chart(
    driver: Any, server: Any, tmp_path: Path
) -> None:
    driver.get(f"http://{server.host}:{server.port}/")
    wait_for("the default tube row", lambda: css(driver, '#tubes tr[data-tube="default"]'))
    assert wait_for("the chart", lambda: css(driver, "#chart canvas"))
    with client(server, "browser-tube") as c:
        c.put(b"hello from the test")
    wait_for("the put in the tube table", lambda: cell(driver, "browser-tube", "ready") == "1")

    def put_rate() -> float:
        rates = driver.execute_script("return window.beanstalkConsole.rates")
        return max(rates["put"], default=0.0)

    assert wait_for("a put in the chart's data", put_rate) > 0
    # what the chart drew is that data
    drawn = driver.execute_script("return window.beanstalkConsole.chart.data[1]")
    assert max(drawn) > 0
    driver.save_screenshot(str(tmp_path / "overview.png"))


def test_tube_page_is_read_only_without_login(driver: Any, server: Any, tmp_path: Path) -> None:
    driver.get(f"http://{server.host}:{server.port}/#/tube/browser-tube")
    wait_for("the next ready job", lambda: css(driver, ".job[data-job]"))
    text = driver.find_element("css selector", "main").text
    assert "hidden: log in with the admin token" in text
    assert "hello from the test" not in text
    assert not css(driver, "#kick") and not css(driver, ".kick-job")
    driver.save_screenshot(str(tmp_path / "tube-read-only.png"))


def test_log_in_with_the_token(driver: Any, server: Any, tmp_path: Path) -> None:
    driver.get(f"http://{server.host}:{server.port}/#/login")
    field = wait_for("the token field", lambda: css(driver, "#token"))[0]
    field.send_keys(ADMIN)
    driver.save_screenshot(str(tmp_path / "login.png"))
    driver.find_element("css selector", "#login button").click()
    wait_for("the admin badge", lambda: driver.find_element("css selector", "#who").text == "admin")
    cookies = {c["name"]: c for c in driver.get_cookies()}
    assert cookies["beanstalk_console"]["httpOnly"] is True
    assert cookies["beanstalk_console"]["sameSite"] == "Strict"
    assert ADMIN not in driver.page_source


def test_kick_a_buried_job_from_the_tube_page(driver: Any, server: Any, tmp_path: Path) -> None:
    hostile = b"<img src=x onerror=window.pwned=1> & <b>bold</b>"
    with client(server, "browser-tube") as c:
        job_id = c.put(hostile)
        job = c.reserve(timeout=5)
        while job.id != job_id:  # the earlier put is ahead of it
            c.release(job, delay=100)
            job = c.reserve(timeout=5)
        c.bury(job)
        assert c.stats_job(job_id)["state"] == "buried"
    driver.get(f"http://{server.host}:{server.port}/#/tube/browser-tube")
    card = f'.job[data-job="{job_id}"]'
    wait_for("the buried job card", lambda: css(driver, card))
    # the body is shown as text, never as markup
    pre = wait_for("the body preview", lambda: css(driver, f"{card} pre.body"))[0]
    assert pre.text == hostile.decode()
    assert driver.execute_script("return window.pwned === undefined")
    assert not css(driver, f"{card} pre.body img")
    driver.save_screenshot(str(tmp_path / "tube.png"))
    css(driver, f"{card} .kick-job")[0].click()
    with client(server, "browser-tube") as c:
        wait_for(
            "the kick, seen through the protocol", lambda: c.stats_job(job_id)["state"] == "ready"
        )
        assert c.stats_job(job_id)["kicks"] == 1
    wait_for("the page to show it", lambda: cell_state(driver, job_id) != "buried")


def cell_state(driver: Any, job_id: int) -> str:
    cards = css(driver, f'.job[data-job="{job_id}"] dd.s-state')
    return str(cards[0].text) if cards else "gone"


def test_job_page(driver: Any, server: Any, tmp_path: Path) -> None:
    with client(server, "browser-tube") as c:
        job_id = c.put(bytes(range(40)))
    driver.get(f"http://{server.host}:{server.port}/#/job/{job_id}")
    pre = wait_for("the hex preview", lambda: css(driver, f'.job[data-job="{job_id}"] pre.body'))
    assert pre[0].text.startswith("00 01 02 03")
    assert "binary, 40 bytes" in driver.find_element("css selector", "main").text
    driver.save_screenshot(str(tmp_path / "job.png"))
