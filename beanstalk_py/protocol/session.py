"""One client connection's protocol state: connection state over the commands.

A ``Session`` is the framing (``framing.Framer``: bytes in, replies out, no socket) with the
commands (``commands.Commands``, run against the engine with the connection's ``client``,
which only the engine changes: used tube, watch set, reserved jobs, waiting), plus what
belongs to the connection: ``close`` (or ``withdraw``) and the shell's ``pending`` lists.

The session puts itself on ``pending.dirty`` the first time it has something to say, and on
``pending.resumed`` when its blocking reserve ends; the shell then writes the replies, or
calls ``feed(b"")`` so the commands buffered behind the reserve run.
"""

from __future__ import annotations

from beanstalk_py.core.engine import Engine
from beanstalk_py.protocol.commands import Commands


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
    __slots__ = ("disconnected", "pending")

    def __init__(
        self, engine: Engine, pending: Pending | None = None, auth_token: bytes | None = None
    ) -> None:
        self.pending = pending if pending is not None else Pending()
        self.disconnected = False  # close() ran: the client has left the engine
        super().__init__(engine, auth_token)

    @property
    def waiting(self) -> bool:
        """A reserve waits for a job: nothing more is parsed until it ends."""
        return self.client.waiting

    def wake(self) -> None:
        self.pending.resumed.append(self)

    def on_output(self) -> None:
        self.pending.dirty.append(self)

    def withdraw(self) -> None:
        """Not a beanstalk client after all (HTTP on the port): leave as if never connected."""
        if self.disconnected:
            return
        self.disconnected = self.closing = True
        self.engine.withdraw(self.client)

    def close(self) -> None:
        """The connection is gone: return reserved jobs, leave tubes (idempotent)."""
        if self.disconnected:
            return
        self.disconnected = self.closing = True
        self.engine.disconnect(self.client)
