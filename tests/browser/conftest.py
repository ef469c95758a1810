"""Browser tests: skipped with a reason when chromium/chromedriver/selenium are missing,
but failed under ``CI=true``, where the browser is part of the job (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from chrome import missing, new_driver


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    why = missing()
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the browser tests cannot run: {why}")
        pytest.skip(f"browser tests skipped: {why}")
    drv = new_driver()
    try:
        yield drv
    finally:
        drv.quit()
