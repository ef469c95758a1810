"""Server handles for transcript tests: the reference subprocess or beanstalk-py in-process.

See ``tests/conftest.py`` for the fixtures built on these.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import importlib.util
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from support.client import RawClient
from support.requirements import require
from support.servers import (
    ServerProcess,
    drain_via_signal,
    reference_argv,
    reference_available,
    reference_version,
)
from support.yamlfmt import quoted_keys

TARGET_ENV = "BEANSTALK_TEST_TARGET"
DEFAULT_MAX_JOB_SIZE = 65535


def our_module_exists(name: str) -> bool:
    """True if ``name`` (e.g. ``beanstalk_py.shell.server``) can be found, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def target_is_reference() -> bool:
    return os.environ.get(TARGET_ENV, "").strip().lower() == "reference"


@dataclasses.dataclass
class ServerHandle:
    host: str
    port: int
    unix_path: str | None
    pid: int
    max_job_size: int
    reference: bool
    quoted: frozenset[str]
    _advance: Callable[[float], Awaitable[None]]
    _drain: Callable[[], Awaitable[None]]
    _clients: list[RawClient] = dataclasses.field(default_factory=list)

    async def connect(self, name: str | None = None) -> RawClient:
        label = name or f"c{len(self._clients) + 1}"
        if self.unix_path is not None:
            client = await RawClient.connect_unix(self.unix_path, name=label)
        else:
            client = await RawClient.connect(self.host, self.port, name=label)
        self._clients.append(client)
        return client

    async def advance(self, seconds: float) -> None:
        await self._advance(seconds)

    async def set_drain(self) -> None:
        await self._drain()

    async def close_clients(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()


async def _let_server_read() -> None:
    """Give the in-process server a few loop turns to read and handle bytes already sent."""
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.005)
    for _ in range(5):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def reference_server(
    max_job_size: int | None, drain: bool, unix_path: str | None
) -> AsyncIterator[ServerHandle]:
    require(reference_available(), "/usr/bin/beanstalkd: the reference server (Debian: beanstalkd)")
    extra = ["-z", str(max_job_size)] if max_job_size is not None else []
    proc = ServerProcess(reference_argv(*extra), unix_path=unix_path)
    proc.start()
    try:

        async def advance(seconds: float) -> None:
            await asyncio.sleep(seconds)

        async def set_drain() -> None:
            drain_via_signal(proc)

        handle = ServerHandle(
            host=proc.host,
            port=proc.port,
            unix_path=unix_path,
            pid=proc.pid,
            max_job_size=max_job_size if max_job_size is not None else DEFAULT_MAX_JOB_SIZE,
            reference=True,
            quoted=quoted_keys(reference_version()),
            _advance=advance,
            _drain=set_drain,
        )
        if drain:
            await handle.set_drain()
        try:
            yield handle
        finally:
            await handle.close_clients()
    finally:
        proc.stop()


def _ours_config(config_cls: Any, max_job_size: int | None, unix_path: str | None) -> Any:
    kwargs: dict[str, Any] = {"host": "127.0.0.1", "port": 0}
    if max_job_size is not None:
        kwargs["max_job_size"] = max_job_size
    if unix_path is not None:
        names = set(vars(config_cls()))
        if "unix_path" in names:
            kwargs["unix_path"] = unix_path
        else:  # same spelling as the -l flag
            kwargs["host"] = f"unix:{unix_path}"
    return config_cls(**kwargs)


@contextlib.asynccontextmanager
async def our_server(
    max_job_size: int | None, drain: bool, unix_path: str | None
) -> AsyncIterator[ServerHandle]:
    # A package that does not import is an error of every test, never a skip.
    server_mod = importlib.import_module("beanstalk_py.shell.server")
    config_mod = importlib.import_module("beanstalk_py.shell.config")
    clock_mod = importlib.import_module("beanstalk_py.core.clock")
    clock = clock_mod.ManualClock()
    srv = server_mod.Server(_ours_config(config_mod.Config, max_job_size, unix_path), clock=clock)
    await asyncio.wait_for(srv.start(), 5)
    try:

        async def advance(seconds: float) -> None:
            await _let_server_read()
            srv.advance(seconds)
            await _let_server_read()

        async def set_drain() -> None:
            await _let_server_read()
            srv.engine.drain()

        handle = ServerHandle(
            host="127.0.0.1",
            port=0 if unix_path is not None else int(srv.port),
            unix_path=unix_path,
            pid=os.getpid(),
            max_job_size=max_job_size if max_job_size is not None else DEFAULT_MAX_JOB_SIZE,
            reference=False,
            quoted=quoted_keys(None),
            _advance=advance,
            _drain=set_drain,
        )
        if drain:
            await handle.set_drain()
        try:
            yield handle
        finally:
            await handle.close_clients()
    finally:
        await asyncio.wait_for(srv.stop(), 5)


ServerFactory = Callable[..., contextlib.AbstractAsyncContextManager[ServerHandle]]
