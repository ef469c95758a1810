"""Token auth (--auth-token-file): auth first, UNAUTHORIZED otherwise; off means beanstalkd."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.servers import ours_process

from beanstalk_py.core.clock import ManualClock
from beanstalk_py.shell.config import Config
from beanstalk_py.shell.security import SecurityConfigError, load_token
from beanstalk_py.shell.server import Server

TOKEN = b"s3cret-Token_42"
TIMEOUT = 5.0


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_bytes(TOKEN + b"\n")
    path.chmod(0o600)
    return path


@contextlib.asynccontextmanager
async def running(token_file: Path | None) -> AsyncIterator[Server]:
    cfg = Config(host="127.0.0.1", port=0, auth_token_file=str(token_file) if token_file else None)
    srv = Server(cfg, clock=ManualClock())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


class Client:
    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    async def ask(self, data: bytes) -> bytes:
        self.w.write(data)
        return await asyncio.wait_for(self.r.readline(), TIMEOUT)

    async def eof(self) -> bool:
        try:
            return await asyncio.wait_for(self.r.read(100), TIMEOUT) == b""
        except (ConnectionError, OSError):
            return True


async def client(srv: Server) -> Client:
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    return Client(r, w)


async def test_auth_then_commands(token_file: Path) -> None:
    async with running(token_file) as srv:
        c = await client(srv)
        assert await c.ask(b"auth " + TOKEN + b"\r\n") == b"AUTHENTICATED\r\n"
        assert await c.ask(b"put 0 0 60 2\r\nhi\r\n") == b"INSERTED 1\r\n"
        assert await c.ask(b"list-tube-used\r\n") == b"USING default\r\n"
        # already authenticated: `auth` is an unknown command again, as in beanstalkd
        assert await c.ask(b"auth " + TOKEN + b"\r\n") == b"UNKNOWN_COMMAND\r\n"


async def test_commands_before_auth_are_unauthorized_and_the_connection_stays(
    token_file: Path,
) -> None:
    async with running(token_file) as srv:
        c = await client(srv)
        assert await c.ask(b"stats\r\n") == b"UNAUTHORIZED\r\n"
        assert await c.ask(b"peek 1\r\n") == b"UNAUTHORIZED\r\n"
        # a put's body is read and dropped: one reply, the stream stays in step
        assert await c.ask(b"put 0 0 60 5\r\nstats\r\n") == b"UNAUTHORIZED\r\n"
        assert await c.ask(b"put 0 0 60 70000\r\n" + b"x" * 70000 + b"\r\n") == b"UNAUTHORIZED\r\n"
        assert await c.ask(b"\r\n") == b"UNAUTHORIZED\r\n"
        assert await c.ask(b"auth " + TOKEN + b"\r\n") == b"AUTHENTICATED\r\n"
        assert await c.ask(b"stats-job 1\r\n") == b"NOT_FOUND\r\n"
        assert len(srv.engine.jobs) == 0


async def test_wrong_token_is_unauthorized_and_closed(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(token_file) as srv:
        for attempt in (b"auth nope\r\n", b"auth " + TOKEN + b"x\r\n", b"auth\r\n"):
            c = await client(srv)
            assert await c.ask(attempt) == b"UNAUTHORIZED\r\n"
            assert await c.eof()
        # pipelined commands after a failed auth are not run
        c = await client(srv)
        c.w.write(b"auth wrong\r\nput 0 0 60 1\r\nx\r\n")
        assert await asyncio.wait_for(c.r.read(), TIMEOUT) == b"UNAUTHORIZED\r\n"
        assert len(srv.engine.jobs) == 0
        c2 = await client(srv)
        assert await c2.ask(b"auth " + TOKEN + b"\r\n") == b"AUTHENTICATED\r\n"
    assert TOKEN.decode() not in caplog.text


async def test_pipelined_auth_and_commands(token_file: Path) -> None:
    async with running(token_file) as srv:
        c = await client(srv)
        c.w.write(b"auth " + TOKEN + b"\r\nuse a\r\nquit\r\n")
        data = await asyncio.wait_for(c.r.read(), TIMEOUT)
        assert data == b"AUTHENTICATED\r\nUSING a\r\n"


async def test_auth_is_unknown_when_auth_is_off() -> None:
    async with running(None) as srv:
        c = await client(srv)
        assert await c.ask(b"auth " + TOKEN + b"\r\n") == b"UNKNOWN_COMMAND\r\n"
        assert await c.ask(b"list-tube-used\r\n") == b"USING default\r\n"


def test_token_file_checks(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"abc\n")
    for mode in (0o640, 0o604, 0o644, 0o660):
        path.chmod(mode)
        with pytest.raises(SecurityConfigError, match="group or others"):
            load_token(str(path))
    path.chmod(0o600)
    assert load_token(str(path)) == b"abc"
    path.write_bytes(b"\n")
    with pytest.raises(SecurityConfigError, match="empty"):
        load_token(str(path))
    path.write_bytes(b"a b")
    with pytest.raises(SecurityConfigError, match="spaces"):
        load_token(str(path))
    with pytest.raises(SecurityConfigError, match="No such file"):
        load_token(str(tmp_path / "missing"))


def test_cli_refuses_a_readable_token_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "t"
    path.write_bytes(b"abc\n")
    os.chmod(path, 0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "beanstalk_py", "-p", "0", "--auth-token-file", str(path)],
        capture_output=True,
        timeout=30,
        **ours_process(),
    )
    assert proc.returncode == 5
    assert b"group or others" in proc.stderr
    assert b"Traceback" not in proc.stderr
