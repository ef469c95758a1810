"""Logging set-up for beanstalk-py: levels from ``-V``, text or JSON lines on stderr.

Loggers live under ``beanstalk_py``: ``beanstalk_py.server`` (bind, signals, drain, shutdown),
``beanstalk_py.conn`` (accept/close, per-command traces at DEBUG), ``beanstalk_py.binlog``
(replay summary, fsync trouble) and ``beanstalk_py.metrics``. Verbosity follows beanstalkd:
silent apart from warnings by default, ``-V`` adds lifecycle lines, ``-VV`` per-command lines.

Structured fields are passed with ``extra=``, e.g.
``log.debug("command", extra={"conn": 17, "peer": "127.0.0.1:50312", "cmd": "put"})``.
Only the fields in :data:`EXTRA_FIELDS` are rendered.

Invariants:

* **Job bodies are never logged.** Callers must not put a body into a message, and the
  formatters render only the whitelisted :data:`EXTRA_FIELDS`, so an accidental
  ``extra={"body": ...}`` never reaches the output. Bodies are user data (often personal data)
  and can be up to 1 GiB.
* :func:`setup_logging` is idempotent: it replaces the handler it installed earlier instead of
  adding a second one, so calling it twice never doubles lines.
* The ``beanstalk_py`` logger does not propagate to the root logger once configured, so a
  library that calls ``logging.basicConfig`` cannot make our lines appear twice.
* Hot paths must guard DEBUG lines with ``logger.isEnabledFor(logging.DEBUG)`` before building
  any string; formatting cost is then paid only at ``-VV``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

__all__ = [
    "EXTRA_FIELDS",
    "LOGGER_NAMES",
    "ROOT_LOGGER",
    "JsonFormatter",
    "TextFormatter",
    "level_for_verbosity",
    "setup_logging",
]

ROOT_LOGGER = "beanstalk_py"
LOGGER_NAMES = (
    "beanstalk_py.server",
    "beanstalk_py.conn",
    "beanstalk_py.binlog",
    "beanstalk_py.metrics",
    "beanstalk_py.cluster",
)

#: Structured fields accepted through ``extra=`` and rendered by both formats, in this order.
#: ``reply`` carries the reply line only (e.g. ``"RESERVED 5 12"``), never the body after it.
EXTRA_FIELDS = ("conn", "peer", "cmd", "job", "tube", "reply")

FORMATS = ("text", "json")

# Marks the handler we own, so a second setup_logging call can find and replace it.
_HANDLER_MARK = "_beanstalk_py_handler"


def level_for_verbosity(verbosity: int) -> int:
    """Map the ``-V`` count to a level: 0 -> WARNING, 1 -> INFO, 2 or more -> DEBUG."""
    if verbosity <= 0:
        return logging.WARNING
    if verbosity == 1:
        return logging.INFO
    return logging.DEBUG


def _timestamp(record: logging.LogRecord) -> str:
    # UTC with milliseconds and a 'Z', e.g. 2026-11-29T10:31:51.123Z: sortable and zone-free.
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> list[tuple[str, Any]]:
    return [(k, record.__dict__[k]) for k in EXTRA_FIELDS if record.__dict__.get(k) is not None]


def _text_value(value: Any) -> str:
    text = str(value)
    # Quote anything that would make key=value ambiguous to a reader or a log parser.
    if not text or any(c.isspace() or c in '"=' for c in text):
        import json  # here: not imported at start-up, where it would delay the first reply

        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``<ts> <logger> <LEVEL> <message>[ key=value ...]``, then any traceback lines."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.name, record.levelname, record.getMessage()]
        parts.extend(f"{k}={_text_value(v)}" for k, v in _extras(record))
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, extras, ``exc``.

    Multi-line tracebacks go into the ``exc`` string, so a record is always exactly one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        obj.update(_extras(record))
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        import json

        # default=str: a stray non-JSON value (a Path, an enum) must not lose the whole record.
        return json.dumps(obj, default=str)


def setup_logging(
    verbosity: int, fmt: str = "text", stream: TextIO | None = None
) -> logging.Logger:
    """Configure the ``beanstalk_py`` logger tree and return its root logger.

    ``fmt`` is ``"text"`` or ``"json"`` (``--log-format``); ``stream`` defaults to the *current*
    ``sys.stderr`` (looked up at call time, so test capture and redirection work). Safe to call
    again, e.g. with another verbosity: the previous handler is replaced.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    root = logging.getLogger(ROOT_LOGGER)
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()

    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level_for_verbosity(verbosity))
    root.propagate = False
    for name in LOGGER_NAMES:
        # Children inherit the root's level; reset any level a previous run or test left behind.
        logging.getLogger(name).setLevel(logging.NOTSET)
    return root
