"""Tests for beanstalk_py.app.logs: levels per -V count, text and JSON lines, idempotence."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import ours_process

from beanstalk_py.app import logs

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<logger>\S+) (?P<level>[A-Z]+) (?P<msg>.*)$"
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the beanstalk_py logger as we found it, so other tests' caplog still works."""
    root = logging.getLogger(logs.ROOT_LOGGER)
    handlers, level, propagate = list(root.handlers), root.level, root.propagate
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    root.propagate = propagate


def level_of(line: str) -> str:
    match = TEXT_LINE.match(line)
    assert match is not None, line
    return match["level"]


def emit_all() -> None:
    log = logging.getLogger("beanstalk_py.server")
    log.debug("debug line")
    log.info("info line")
    log.warning("warning line")
    log.error("error line")


@pytest.mark.parametrize(
    ("verbosity", "expected"),
    [
        (0, ["WARNING", "ERROR"]),
        (1, ["INFO", "WARNING", "ERROR"]),
        (2, ["DEBUG", "INFO", "WARNING", "ERROR"]),
        (5, ["DEBUG", "INFO", "WARNING", "ERROR"]),
    ],
)
def test_levels_per_verbosity(verbosity: int, expected: list[str]) -> None:
    out = io.StringIO()
    logs.setup_logging(verbosity, stream=out)
    emit_all()
    assert [level_of(line) for line in out.getvalue().splitlines()] == expected


def test_level_for_verbosity() -> None:
    assert logs.level_for_verbosity(-1) == logging.WARNING
    assert logs.level_for_verbosity(0) == logging.WARNING
    assert logs.level_for_verbosity(1) == logging.INFO
    assert logs.level_for_verbosity(2) == logging.DEBUG


def test_text_format() -> None:
    out = io.StringIO()
    logs.setup_logging(1, stream=out)
    logging.getLogger("beanstalk_py.server").info("listening on %s", "127.0.0.1:11300")
    line = out.getvalue()
    assert line.endswith("\n")
    match = TEXT_LINE.match(line.rstrip("\n"))
    assert match is not None, line
    assert match["logger"] == "beanstalk_py.server"
    assert match["msg"] == "listening on 127.0.0.1:11300"


def test_text_format_extras_are_key_value() -> None:
    out = io.StringIO()
    logs.setup_logging(2, stream=out)
    logging.getLogger("beanstalk_py.conn").debug(
        "reply", extra={"conn": 17, "cmd": "put", "reply": "INSERTED 1", "tube": ""}
    )
    assert (
        out.getvalue()
        .rstrip("\n")
        .endswith('beanstalk_py.conn DEBUG reply conn=17 cmd=put tube="" reply="INSERTED 1"')
    )


def test_json_lines_carry_extras() -> None:
    out = io.StringIO()
    logs.setup_logging(2, fmt="json", stream=out)
    conn_log = logging.getLogger("beanstalk_py.conn")
    conn_log.info("accept", extra={"conn": 7, "peer": "127.0.0.1:50312"})
    conn_log.debug("command", extra={"conn": 7, "cmd": "put", "job": 42, "tube": "emails"})
    logging.getLogger("beanstalk_py.binlog").warning('quote " and\nnewline')
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 3
    assert all(set(r) >= {"ts", "level", "logger", "msg"} for r in records)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", records[0]["ts"])
    assert records[0]["level"] == "INFO"
    assert records[0]["logger"] == "beanstalk_py.conn"
    assert records[0]["msg"] == "accept"
    assert (records[0]["conn"], records[0]["peer"]) == (7, "127.0.0.1:50312")
    assert {k: records[1][k] for k in ("cmd", "job", "tube")} == {
        "cmd": "put",
        "job": 42,
        "tube": "emails",
    }
    assert records[2]["msg"] == 'quote " and\nnewline'
    assert "conn" not in records[2]


def test_unlisted_extras_never_rendered() -> None:
    """Job bodies must never be logged: an accidental extra={'body': ...} is dropped."""
    for fmt in logs.FORMATS:
        out = io.StringIO()
        logs.setup_logging(2, fmt=fmt, stream=out)
        logging.getLogger("beanstalk_py.conn").debug(
            "job", extra={"job": 1, "body": b"secret-payload", "data": "secret-payload"}
        )
        assert "secret-payload" not in out.getvalue()
        assert "job" in out.getvalue()


def test_json_exception_in_exc_field() -> None:
    out = io.StringIO()
    logs.setup_logging(0, fmt="json", stream=out)
    try:
        raise RuntimeError("binlog exploded")
    except RuntimeError:
        logging.getLogger("beanstalk_py.binlog").exception("replay failed", extra={"job": 3})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "ERROR"
    assert record["msg"] == "replay failed"
    assert record["job"] == 3
    assert record["exc"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: binlog exploded" in record["exc"]


def test_text_exception_appends_traceback() -> None:
    out = io.StringIO()
    logs.setup_logging(0, stream=out)
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("beanstalk_py.server").exception("boom")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("beanstalk_py.server ERROR boom")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: bad"


def test_non_json_values_do_not_break_records() -> None:
    out = io.StringIO()
    logs.setup_logging(1, fmt="json", stream=out)
    logging.getLogger("beanstalk_py.binlog").info("dir", extra={"tube": Path("/x")})
    assert json.loads(out.getvalue())["tube"] == "/x"


def test_idempotent_and_reconfigurable() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.setup_logging(0, stream=first)
    root = logs.setup_logging(2, fmt="json", stream=second)
    logs.setup_logging(2, fmt="json", stream=second)
    assert len(root.handlers) == 1
    logging.getLogger("beanstalk_py.metrics").debug("scrape")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1
    assert json.loads(second.getvalue())["logger"] == "beanstalk_py.metrics"


def test_does_not_propagate_to_root() -> None:
    """A root handler (e.g. from basicConfig in a library) must not duplicate our lines."""
    root_out, ours = io.StringIO(), io.StringIO()
    root_handler = logging.StreamHandler(root_out)
    logging.getLogger().addHandler(root_handler)
    try:
        logs.setup_logging(1, stream=ours)
        logging.getLogger("beanstalk_py.server").warning("once")
    finally:
        logging.getLogger().removeHandler(root_handler)
    assert root_out.getvalue() == ""
    assert ours.getvalue().count("once") == 1


def test_unknown_format_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        logs.setup_logging(0, fmt="xml")


def test_default_stream_is_stderr_at_call_time() -> None:
    """Looked up per call, so a redirected sys.stderr is honoured; checked in a clean process."""
    code = (
        "import logging; from beanstalk_py.app import logs\n"
        "logs.setup_logging(1, fmt='json')\n"
        "logging.getLogger('beanstalk_py.server').info('to stderr')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        **ours_process(),
        check=True,
    )
    assert proc.stdout == ""
    assert json.loads(proc.stderr)["msg"] == "to stderr"
