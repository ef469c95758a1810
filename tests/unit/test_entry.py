"""entry.plain_config: the click-free reading of plain command lines must agree with cli.py.

And the modules on the way to the first reply import neither click nor asyncio: that is what
lets the server answer before they are loaded (startup.py, tests/integration/test_startup.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.servers import ours_env

from beanstalk_py.app.cli import build_config, command
from beanstalk_py.app.entry import plain_config


def click_config(argv: list[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["beanstalk-py", *argv])  # -f/-F order is read there
    ctx = command.make_context("beanstalk-py", list(argv))
    return build_config(dict(ctx.params))


PLAIN = [
    [],
    ["-l", "127.0.0.1", "-p", "11301"],
    ["-p11301", "-l127.0.0.1"],
    ["-V"],
    ["-VV"],
    ["-V", "-V", "-V"],
    ["-b", "{dir}"],
    ["-b", "{dir}", "-f", "0"],
    ["-b", "{dir}", "-s", "4096"],
    ["-VVb", "{dir}", "-f0", "-p11301", "-z", "100", "-s", "4096"],
    ["-F"],
    ["-f", "10", "-F"],
    ["-F", "-f", "10"],
    ["-Ff0"],
    ["-F", "-f", "10", "-F"],
    ["-f", "10", "-F", "-f", "20"],
    ["-z", "100"],
    ["-z", "1073741824"],
    ["-l", "unix:/tmp/x.sock"],
    ["-l", "::1"],
    ["-l", "[::1]"],
    ["-l", "localhost", "-l", "unix:/tmp/y.sock"],
    ["-l", "unix:/tmp/y.sock", "-l", "::1"],
    ["-p", "65535"],
    ["-u", "nobody"],
]

NOT_PLAIN = [
    ["-h"],
    ["--help"],
    ["-v"],
    ["--version"],
    ["-c"],
    ["-n"],
    ["--port", "11301"],
    ["--no-http"],
    ["--metrics-addr", "127.0.0.1:9100"],
    ["--tls-cert", "x.pem"],
    ["-p", "x"],
    ["-p", "70000"],
    ["-p", "-1"],
    ["-z", "1073741825"],
    ["-z", "1k"],
    ["-s", "0"],
    ["-f", "ten"],
    ["-b", "/nonexistent/dir"],
    ["-l", "unix:"],
    ["-p"],
    ["stray"],
    ["-x"],
]


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_plain_command_lines_give_clicks_config(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    plain = plain_config(argv)
    assert plain is not None
    assert plain == click_config(argv, monkeypatch)


@pytest.mark.parametrize("argv", NOT_PLAIN, ids=" ".join)
def test_everything_else_is_left_to_click(argv: list[str]) -> None:
    assert plain_config(argv) is None


def test_the_way_to_the_first_reply_imports_neither_click_nor_asyncio() -> None:
    code = (
        "import sys\n"
        "from beanstalk_py.app import entry, lifecycle, logs\n"
        "from beanstalk_py.shell import listeners, startup\n"
        "entry.plain_config(['-l', '127.0.0.1', '-p', '0'])\n"
        "print(sorted(m for m in ('click', 'asyncio', 'uvloop', 'prometheus_client', 'ssl')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],  # -S: no .pth start-up hooks of this machine
        env=ours_env(),
        cwd=os.path.dirname(__file__),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert out.strip() == "[]"
