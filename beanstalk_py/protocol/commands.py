"""The commands: argument checks, engine calls and replies, one method per command.

``Commands`` sits between the framing (``framing.Framer``, bytes and output) and the session
(``session.Session``, connection state and the auth gate). Handlers are named after the
command (``reserve-with-timeout`` -> ``cmd_reserve_with_timeout``) and receive the rest of the
line after the command word; argument rules are beanstalkd's (``arguments``). Every change
of engine state goes through an ``Engine`` operation with the connection's ``client``.
"""

from __future__ import annotations

from collections.abc import Callable

from beanstalk_py.core import stats
from beanstalk_py.core.client import Client
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import Job
from beanstalk_py.core.ops import (
    OP_BURY,
    OP_DELETE,
    OP_IGNORE,
    OP_KICK,
    OP_LIST_TUBE_USED,
    OP_LIST_TUBES,
    OP_LIST_TUBES_WATCHED,
    OP_PAUSE_TUBE,
    OP_PEEK,
    OP_PEEK_BURIED,
    OP_PEEK_DELAYED,
    OP_PEEK_READY,
    OP_PUT,
    OP_RELEASE,
    OP_RESERVE,
    OP_RESERVE_WITH_TIMEOUT,
    OP_STATS,
    OP_STATS_JOB,
    OP_STATS_TUBE,
    OP_TOUCH,
    OP_USE,
    OP_WATCH,
)
from beanstalk_py.protocol.arguments import (
    FOUR,
    INT_MAX,
    NAME_RUN,
    ONE,
    STRTOUL,
    THREE,
    TWO,
    U32,
    U64,
    valid_tube_name,
)
from beanstalk_py.protocol.framing import Framer
from beanstalk_py.protocol.replies import (
    AUTHENTICATED,
    BAD_FORMAT,
    NOT_FOUND,
    UNAUTHORIZED,
    UNKNOWN_COMMAND,
)


class Commands(Framer):
    """The 25 commands over the framing, run against ``engine`` for ``client``, behind the
    auth gate."""

    __slots__ = ("_put", "auth_token", "client", "engine")

    def __init__(self, engine: Engine, auth_token: bytes | None) -> None:
        super().__init__(engine.max_job_size + 64)
        self.engine = engine
        # --auth-token-file: the token this connection must send first; None once
        # authenticated (or when auth is off), so the check costs one attribute test per line.
        self.auth_token = auth_token
        self._put: tuple[int, int, int, int] = (0, 0, 0, 0)  # id, pri, delay, ttr
        self.client: Client = engine.connect(self.deliver, self.send_job, self.wake)

    def wake(self) -> None:
        """The client's blocking reserve ended: parsing may go on."""
        raise NotImplementedError

    def paused(self) -> bool:
        return self.client.waiting

    def on_body_dropped(self) -> None:
        self.deliver(UNAUTHORIZED if self.auth_token is not None else b"JOB_TOO_BIG\r\n")

    def on_body(self, body: bytes) -> None:
        job_id, pri, delay, ttr = self._put
        if not body.endswith(b"\r\n"):
            self.deliver(b"EXPECTED_CRLF\r\n")
            return
        engine = self.engine
        if engine.draining:
            self.deliver(b"DRAINING\r\n")
            return
        self.deliver(engine.put(self.client, job_id, pri, delay, ttr, body))

    def on_line(self, line: bytes) -> None:
        """Run one command line (beanstalkd prot.c which_cmd)."""
        if self.auth_token is not None:
            self._gated(line)
            return
        # The commands of a busy queue in their usual form first, as direct calls (the
        # tables below call a handler through a Python-level function object).
        if line.startswith(b"put "):
            if self._put_fast(line):
                return
        elif line.startswith(b"delete "):
            job_id, end = _scan_digits(line, 7, 19)
            if job_id >= 0 and end == len(line):
                self._delete(job_id)
                return
        elif line == b"reserve":
            self.cmd_reserve(b"")
            return
        elif line.startswith(b"reserve-with-timeout "):
            timeout, end = _scan_digits(line, 21, 10)
            if end == len(line) and 0 <= timeout <= INT_MAX:
                self._reserve_with_timeout(timeout)
                return
        # `0 in line` (a byte value), not `b"\x00" in line`: under mypyc the substring form
        # goes through a TypeError that CPython raises and clears on every command (223 vs
        # 31 ns, docs/PERFORMANCE.md).
        if 0 in line:
            self.deliver(BAD_FORMAT)
            return
        sp = line.find(b" ")
        if sp < 0:
            exact = _EXACT.get(line)
            if exact is not None:
                exact(self, b"")
                return
        elif sp > 0:
            handler = _SPACED.get(line[:sp])
            if handler is not None:
                handler(self, line[sp + 1 :])
                return
        for prefix, handler in _PREFIXED:
            if line.startswith(prefix):
                handler(self, line[len(prefix) :])
                return
        self.deliver(UNKNOWN_COMMAND)

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
            import hmac  # here: only --auth-token-file needs it, and it costs start-up time

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
        if line.startswith(b"put ") and 0 not in line:
            m = FOUR.match(line, 4)
            if m is not None and int(m[4]) <= U32 and max(int(m[1]), int(m[2]), int(m[3])) <= U32:
                size = int(m[4])
                if size > self.engine.max_job_size or m.end() == len(line):
                    self.expect_body(size + 2, drop=True)  # answered once the body is read
                    return
        self.deliver(UNAUTHORIZED)

    # --- commands ---------------------------------------------------------------------

    def _put_fast(self, line: bytes) -> bool:
        """``put <pri> <delay> <ttr> <bytes>`` in its usual form (single spaces, at most 10
        digits each, nothing after): parsed in one pass with no slice, list or ``int(bytes)``.
        False for anything else, which ``cmd_put`` then parses with the reference's rules."""
        n = len(line)
        pri, i = _scan_digits(line, 4, 10)
        if i >= n or line[i] != 32:
            return False
        delay, i = _scan_digits(line, i + 1, 10)
        if i >= n or line[i] != 32:
            return False
        ttr, i = _scan_digits(line, i + 1, 10)
        if i >= n or line[i] != 32:
            return False
        size, i = _scan_digits(line, i + 1, 10)
        if i != n or pri < 0 or delay < 0 or ttr < 0 or size < 0:
            return False
        if pri > U32 or delay > U32 or ttr > U32 or size > U32:
            return False
        self._begin_put(pri, delay, ttr, size, True)
        return True

    def cmd_put(self, rest: bytes) -> None:
        m = FOUR.match(rest)
        if m is None:
            self.deliver(BAD_FORMAT)
            return
        pri, delay, ttr, size = int(m[1]), int(m[2]), int(m[3]), int(m[4])
        if pri > U32 or delay > U32 or ttr > U32 or size > U32:
            self.deliver(BAD_FORMAT)
            return
        self._begin_put(pri, delay, ttr, size, m.end() == len(rest))

    def _begin_put(self, pri: int, delay: int, ttr: int, size: int, tail_ok: bool) -> None:
        """A put line with valid numbers: count it, then read its body (or drop a body over
        the size limit, which the reference reads even after trailing garbage)."""
        engine = self.engine
        engine.ops[OP_PUT] += 1
        if size > engine.max_job_size:
            self.expect_body(size + 2, drop=True)
            return
        if not tail_ok:
            self.deliver(BAD_FORMAT)
            return
        self._put = (engine.new_job_id(self.client), pri, delay, ttr or 1)
        self.expect_body(size + 2, drop=False)

    def cmd_reserve(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_RESERVE] += 1
        self.engine.mark_worker(self.client)
        reply = self.engine.reserve(self.client, None)
        if reply:
            self.deliver(reply)

    def cmd_reserve_with_timeout(self, rest: bytes) -> None:
        m = ONE.match(rest)  # trailing bytes are ignored, as in the reference
        if m is None or int(m[1]) > INT_MAX:
            self.deliver(BAD_FORMAT)
            return
        self._reserve_with_timeout(int(m[1]))

    def _reserve_with_timeout(self, timeout: int) -> None:
        engine = self.engine
        engine.ops[OP_RESERVE_WITH_TIMEOUT] += 1
        engine.mark_worker(self.client)
        reply = engine.reserve(self.client, timeout)
        if reply:
            self.deliver(reply)

    def _id(self, rest: bytes) -> int:
        """A lone u64 argument, or -1 (after replying BAD_FORMAT)."""
        if rest.isdigit() and len(rest) < 20:  # the usual case; always within u64
            return int(rest)
        m = ONE.fullmatch(rest)
        if m is None or int(m[1]) > U64:
            self.deliver(BAD_FORMAT)
            return -1
        return int(m[1])

    def cmd_reserve_job(self, rest: bytes) -> None:
        job_id = self._id(rest)
        if job_id < 0:
            return
        self.engine.mark_worker(self.client)
        reply = self.engine.reserve_job(self.client, job_id)
        if reply:
            self.deliver(reply)

    def cmd_delete(self, rest: bytes) -> None:
        job_id = self._id(rest)
        if job_id >= 0:
            self._delete(job_id)

    def _delete(self, job_id: int) -> None:
        engine = self.engine
        engine.ops[OP_DELETE] += 1
        self.deliver(engine.delete(self.client, job_id))

    def cmd_release(self, rest: bytes) -> None:
        m = THREE.fullmatch(rest)
        if m is None:
            self.deliver(BAD_FORMAT)
            return
        job_id, pri, delay = int(m[1]), int(m[2]), int(m[3])
        if job_id > U64 or pri > U32 or delay > U32:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_RELEASE] += 1
        self.deliver(self.engine.release(self.client, job_id, pri, delay))

    def cmd_bury(self, rest: bytes) -> None:
        m = TWO.fullmatch(rest)
        if m is None or int(m[1]) > U64 or int(m[2]) > U32:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_BURY] += 1
        self.deliver(self.engine.bury(self.client, int(m[1]), int(m[2])))

    def cmd_touch(self, rest: bytes) -> None:
        job_id = self._id(rest)
        if job_id < 0:
            return
        self.engine.ops[OP_TOUCH] += 1
        self.deliver(self.engine.touch(self.client, job_id))

    def cmd_kick(self, rest: bytes) -> None:
        # The reference reads the bound with strtoul: sign, leading whitespace and trailing
        # garbage are accepted, and the result is truncated to 32 bits.
        m = STRTOUL.match(rest)
        if m is None or int(m[2]) > U64:
            self.deliver(BAD_FORMAT)
            return
        value = int(m[2])
        if m[1] == b"-":
            value = -value & U64
        engine = self.engine
        engine.ops[OP_KICK] += 1
        self.deliver(b"KICKED %d\r\n" % engine.kick(self.client.use, value & U32))

    def cmd_kick_job(self, rest: bytes) -> None:
        job_id = self._id(rest)
        if job_id < 0:
            return
        self.deliver(self.engine.kick_job(job_id))

    def _found(self, job: Job | None) -> None:
        if job is None:
            self.deliver(NOT_FOUND)
        else:
            self.send_job(b"FOUND", job)

    def cmd_peek(self, rest: bytes) -> None:
        job_id = self._id(rest)
        if job_id < 0:
            return
        self.engine.ops[OP_PEEK] += 1
        self._found(self.engine.jobs.get(job_id))

    def cmd_peek_ready(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_PEEK_READY] += 1
        self._found(self.client.use.peek_ready(self.engine.jobs))

    def cmd_peek_delayed(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_PEEK_DELAYED] += 1
        self._found(self.client.use.peek_delayed(self.engine.jobs))

    def cmd_peek_buried(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_PEEK_BURIED] += 1
        buried = self.client.use.buried
        self._found(next(iter(buried.values())) if buried else None)

    def _name(self, rest: bytes) -> str | None:
        if not valid_tube_name(rest):
            self.deliver(BAD_FORMAT)
            return None
        return rest.decode("ascii")

    def cmd_use(self, rest: bytes) -> None:
        name = self._name(rest)
        if name is None:
            return
        engine = self.engine
        engine.ops[OP_USE] += 1
        engine.use(self.client, name)
        self.deliver(b"USING %s\r\n" % rest)

    def cmd_watch(self, rest: bytes) -> None:
        name = self._name(rest)
        if name is None:
            return
        engine = self.engine
        engine.ops[OP_WATCH] += 1
        self.deliver(b"WATCHING %d\r\n" % engine.watch(self.client, name))

    def cmd_ignore(self, rest: bytes) -> None:
        name = self._name(rest)
        if name is None:
            return
        engine = self.engine
        engine.ops[OP_IGNORE] += 1
        n = engine.ignore(self.client, name)
        self.deliver(b"WATCHING %d\r\n" % n if n else b"NOT_IGNORED\r\n")

    def cmd_stats(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        engine = self.engine
        engine.ops[OP_STATS] += 1
        self.deliver(stats.server_stats(engine))

    def cmd_stats_job(self, rest: bytes) -> None:
        job_id = self._id(rest)
        if job_id < 0:
            return
        engine = self.engine
        engine.ops[OP_STATS_JOB] += 1
        job = engine.jobs.get(job_id)
        self.deliver(NOT_FOUND if job is None else stats.job_stats(engine, job))

    def cmd_stats_tube(self, rest: bytes) -> None:
        name = self._name(rest)
        if name is None:
            return
        engine = self.engine
        engine.ops[OP_STATS_TUBE] += 1
        t = engine.tubes.get(name)
        self.deliver(NOT_FOUND if t is None else stats.tube_stats(engine, t))

    def cmd_list_tubes(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_LIST_TUBES] += 1
        self.deliver(stats.tube_list(self.engine.tube_list.items))

    def cmd_list_tube_used(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_LIST_TUBE_USED] += 1
        self.deliver(b"USING %s\r\n" % self.client.use.name_bytes)

    def cmd_list_tubes_watched(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_LIST_TUBES_WATCHED] += 1
        self.deliver(stats.tube_list(self.client.watch.items))

    def cmd_pause_tube(self, rest: bytes) -> None:
        m = NAME_RUN.match(rest)
        assert m is not None  # the pattern can match empty
        name = m[1]
        d = ONE.fullmatch(rest, m.end())
        if not name or d is None or int(d[1]) > U32:
            self.deliver(BAD_FORMAT)
            return
        engine = self.engine
        engine.ops[OP_PAUSE_TUBE] += 1  # counted before the name is checked, as the reference
        if not valid_tube_name(name):
            self.deliver(BAD_FORMAT)
            return
        t = engine.tubes.get(name.decode("ascii"))
        if t is None:
            self.deliver(NOT_FOUND)
            return
        engine.pause_tube(t, int(d[1]))
        self.deliver(b"PAUSED\r\n")

    def cmd_quit(self, rest: bytes) -> None:
        self.closing = True


def _scan_digits(line: bytes, i: int, most: int) -> tuple[int, int]:
    """The decimal number of 1 to ``most`` digits at ``line[i:]`` and the index after its
    digits; the number is -1 if there is no digit there or more than ``most``."""
    n = len(line)
    start = i
    value = 0
    end = min(n, i + most + 1)  # one digit too many is enough to refuse
    while i < end:
        c = line[i]
        if c < 48 or c > 57:
            break
        value = value * 10 + (c - 48)
        i += 1
    if i == start or i - start > most:
        return -1, i
    return value, i


Handler = Callable[[Commands, bytes], None]

# Commands whose reference prefix ends in a space: matched on the word before the first space.
_SPACED: dict[bytes, Handler] = {
    b"put": Commands.cmd_put,
    b"peek": Commands.cmd_peek,
    b"reserve-with-timeout": Commands.cmd_reserve_with_timeout,
    b"reserve-job": Commands.cmd_reserve_job,
    b"delete": Commands.cmd_delete,
    b"release": Commands.cmd_release,
    b"bury": Commands.cmd_bury,
    b"kick": Commands.cmd_kick,
    b"kick-job": Commands.cmd_kick_job,
    b"touch": Commands.cmd_touch,
    b"stats-job": Commands.cmd_stats_job,
    b"stats-tube": Commands.cmd_stats_tube,
    b"use": Commands.cmd_use,
    b"watch": Commands.cmd_watch,
    b"ignore": Commands.cmd_ignore,
}

# The rest, as plain prefixes in the reference's order (beanstalkd prot.c which_cmd). Every
# spaced command that shares a prefix with one of these precedes it there, so trying the
# spaced table first gives the same answer as the reference's single ordered scan.
_PREFIXED: tuple[tuple[bytes, Handler], ...] = (
    (b"peek-ready", Commands.cmd_peek_ready),
    (b"peek-delayed", Commands.cmd_peek_delayed),
    (b"peek-buried", Commands.cmd_peek_buried),
    (b"reserve", Commands.cmd_reserve),
    (b"stats", Commands.cmd_stats),
    (b"list-tubes-watched", Commands.cmd_list_tubes_watched),
    (b"list-tube-used", Commands.cmd_list_tube_used),
    (b"list-tubes", Commands.cmd_list_tubes),
    (b"quit", Commands.cmd_quit),
    (b"pause-tube", Commands.cmd_pause_tube),
)

# Commands that take no argument, looked up by the whole line before any prefix matching
# (the answer is the same as the ordered scan's: none of these lines starts with an
# earlier prefix).
_EXACT: dict[bytes, Handler] = {prefix: handler for prefix, handler in _PREFIXED}
del _EXACT[b"pause-tube"]
