"""A tiny driver for the sans-IO core: sessions fed with bytes, replies read back."""

from __future__ import annotations

from typing import Any

from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.engine import Engine
from beanstalk_py.protocol.session import Pending, Session


class Kit:
    def __init__(self, **engine_opts: Any) -> None:
        self.clock = ManualClock()
        self.engine = Engine(self.clock, **engine_opts)
        self.pending = Pending()

    def session(self) -> Session:
        return Session(self.engine, self.pending)

    def _settle(self) -> None:
        # What the server shell does after input: resume sessions whose reserve ended.
        pending = self.pending
        while pending.resumed:
            resumed, pending.resumed = pending.resumed, []
            for s in resumed:
                if not s.disconnected:
                    s.feed(b"")
        pending.dirty.clear()

    def send(self, sess: Session, data: bytes) -> bytes:
        sess.feed(data)
        self._settle()
        return sess.take_output()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.engine.tick()
        self._settle()

    @staticmethod
    def out(sess: Session) -> bytes:
        return sess.take_output()
