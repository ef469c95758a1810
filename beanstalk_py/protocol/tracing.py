"""``-VV`` per-command log lines, in the spirit of beanstalkd's ``<FD command put`` / ``>FD reply``.

``TracingSession`` is a ``Session`` that logs every command line and every reply line on the
``beanstalk_py.conn`` logger at DEBUG. The server picks it instead of ``Session`` when a
connection is accepted while DEBUG is enabled, so with logging at INFO or quieter the command
path carries no logging check at all (connections accepted before a level change keep their
kind).

Invariants:

* Job bodies are never logged: a command line is at most 224 bytes and never includes the
  body that follows ``put``; of a reply only the line before the first CRLF is logged, and the
  body of ``RESERVED``/``FOUND`` is appended to the output without passing through here.
* Non-ASCII bytes in a command line are shown escaped, so a log line stays one line.
"""

from __future__ import annotations

import logging

from beanstalk_py.core.engine import Engine
from beanstalk_py.protocol.session import Pending, Session

log = logging.getLogger("beanstalk_py.conn")


class TracingSession(Session):
    __slots__ = ("peer",)

    def __init__(
        self, engine: Engine, pending: Pending | None = None, auth_token: bytes | None = None
    ) -> None:
        super().__init__(engine, pending, auth_token)
        self.peer = ""  # the connection's name in log lines; the shell sets it at accept

    def on_line(self, line: bytes) -> None:
        text = line.decode("ascii", "backslashreplace")
        name = text.split(" ", 1)[0]
        if name == "auth":
            text = "auth <token not logged>"
        log.debug("< %s", text, extra={"conn": self.peer or "?", "cmd": name})
        super().on_line(line)

    def deliver(self, data: bytes) -> None:
        eol = data.find(b"\r\n")
        reply = (data[:eol] if eol >= 0 else data[:64]).decode("ascii", "backslashreplace")
        log.debug("> %s", reply, extra={"conn": self.peer or "?", "reply": reply})
        super().deliver(data)
