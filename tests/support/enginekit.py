"""A tiny driver for the sans-IO core: sessions fed with bytes, replies read back."""

from __future__ import annotations

from typing import Any

from beanstalk_py.clock import ManualClock
from beanstalk_py.engine import Engine
from beanstalk_py.session import Session


class Kit:
    def __init__(self, **engine_opts: Any) -> None:
        self.clock = ManualClock()
        self.engine = Engine(self.clock, **engine_opts)

    def session(self) -> Session:
        return Session(self.engine)

    def _settle(self) -> None:
        # What the server shell does after input: resume sessions whose reserve ended.
        engine = self.engine
        while engine.resumed:
            resumed, engine.resumed = engine.resumed, []
            for s in resumed:
                if not s.gone:
                    s.feed(b"")
        engine.dirty.clear()

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
