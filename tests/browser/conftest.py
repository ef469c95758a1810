"""Browser tests: skipped with a reason when chromium/chromedriver/selenium are missing,
but failed under ``CI=true``, where the browser is part of the job (``.ci/run`` installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.chrome import missing, new_driver
from support.requirements import require


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    why = missing()
    require(why is None, f"a headless browser for the console tests: {why}")
    drv = new_driver()
    try:
        yield drv
    finally:
        drv.quit()
