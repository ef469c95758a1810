"""One client connection's protocol state: connection state over the commands.

A ``Session`` is the framing (``framing.Framer``: bytes in, replies out, no socket) with the
commands (``commands.Commands``, run against the engine with the connection's ``client``,
which only the engine changes: used tube, watch set, reserved jobs, waiting), plus what
belongs to the connection: the auth gate (before ``auth <token>``, ``--auth-token-file``, only
``auth`` and ``quit`` do anything), ``close`` and the shell's ``pending`` lists.

The session puts itself on ``pending.dirty`` the first time it has something to say, and on
``pending.resumed`` when its blocking reserve ends; the shell then writes the replies, or
calls ``feed(b"")`` so the commands buffered behind the reserve run.
"""

from __future__ import annotations

import hmac

from beanstalk_py.core.engine import Engine
from beanstalk_py.protocol.arguments import FOUR, U32
from beanstalk_py.protocol.commands import Commands
from beanstalk_py.protocol.replies import AUTHENTICATED, UNAUTHORIZED


class Pending:
    """The sessions the shell must look at after feeding input or running timers.

    ``dirty``: sessions with replies in ``out`` (each listed once, when ``out`` stops being
    empty); ``resumed``: sessions whose blocking reserve ended, to be fed ``b""`` so that the
    commands buffered behind it run. One ``Pending`` is shared by all sessions of a server.
    """

    __slots__ = ("dirty", "resumed")

    def __init__(self) -> None:
        self.dirty: list[Session] = []
        self.resumed: list[Session] = []


class Session(Commands):
    __slots__ = ("auth_token", "disconnected", "held", "pending")

    def __init__(
        self, engine: Engine, pending: Pending | None = None, auth_token: bytes | None = None
    ) -> None:
        self.pending = pending if pending is not None else Pending()
        # --auth-token-file: the token this session must send first; None once authenticated
        # (or when auth is off), so the check costs one attribute test per command.
        self.auth_token = auth_token
        self.disconnected = False  # close() ran: the client has left the engine
        self.held: list[tuple[int, bytes]] = []  # output waiting for an fsync (binlog seq, bytes)
        super().__init__(engine)

    @property
    def waiting(self) -> bool:
        """A reserve waits for a job: nothing more is parsed until it ends."""
        return self.client.waiting

    def wake(self) -> None:
        self.pending.resumed.append(self)

    def on_output(self) -> None:
        self.pending.dirty.append(self)

    def close(self) -> None:
        """The connection is gone: return reserved jobs, leave tubes (idempotent)."""
        if self.disconnected:
            return
        self.disconnected = self.closing = True
        self.engine.disconnect(self.client)

    def on_body_dropped(self) -> None:
        self.deliver(UNAUTHORIZED if self.auth_token is not None else b"JOB_TOO_BIG\r\n")

    def on_line(self, line: bytes) -> None:
        if self.auth_token is not None:
            self._gated(line)
            return
        self.dispatch(line)

    def _gated(self, line: bytes) -> None:
        """A command before ``auth <token>`` (``--auth-token-file``).

        Only ``auth`` (and ``quit``) do anything; every other command is answered UNAUTHORIZED
        and the connection stays open. A ``put`` still has its body read (and dropped) so the
        framing stays that of an authenticated session. A wrong token is answered
        UNAUTHORIZED and the connection closes.
        """
        token = self.auth_token
        assert token is not None
        if line.startswith(b"auth ") or line == b"auth":
            if hmac.compare_digest(line[5:], token):
                self.auth_token = None
                self.deliver(AUTHENTICATED)
            else:
                self.deliver(UNAUTHORIZED)
                self.closing = True
            return
        if line.startswith(b"quit"):
            self.closing = True
            return
        if line.startswith(b"put ") and b"\x00" not in line:
            m = FOUR.match(line, 4)
            if m is not None and int(m[4]) <= U32 and max(int(m[1]), int(m[2]), int(m[3])) <= U32:
                size = int(m[4])
                if size > self.engine.max_job_size or m.end() == len(line):
                    self.expect_body(size + 2, drop=True)  # answered once the body is read
                    return
        self.deliver(UNAUTHORIZED)
