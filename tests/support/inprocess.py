"""An in-process server on 127.0.0.1 with a manual clock, for tests that set Config options."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from beanstalk_py.core.clock import ManualClock
from beanstalk_py.shell.config import Config
from beanstalk_py.shell.server import Server


@contextlib.asynccontextmanager
async def running(**opts: Any) -> AsyncIterator[Server]:
    srv = Server(Config(host="127.0.0.1", port=0, **opts), clock=ManualClock())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
