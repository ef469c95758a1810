"""One client connection's protocol state: the byte parser and the command handlers.

``Session.feed(data)`` consumes bytes and queues replies with ``deliver``; it never touches a
socket. Replies accumulate in ``out`` (the shell writes them with one ``transport.write`` per
read) and the session puts itself on ``pending.dirty`` the first time it has something to say.
The engine-side state of the connection (used tube, watch set, reserved jobs, waiting) is its
``client``, which only the engine changes.

Framing (beanstalkd prot.c, with two fixes listed in the README's compatibility notes):
* A command line ends at the first ``\\r\\n`` and may be at most 224 bytes including it. A
  longer line is discarded up to its ``\\r\\n`` and answered ``BAD_FORMAT`` once.
* After ``put`` the next ``bytes + 2`` bytes are the body, whatever they contain; when the
  size is over the limit they are read and discarded, then ``JOB_TOO_BIG`` is sent.
* While a reserve waits (``waiting``), nothing more is parsed; the shell stops reading and
  calls ``feed(b"")`` when the session shows up on ``pending.resumed``.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import sys
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
    LINE_MAX,
    NAME_RUN,
    ONE,
    STRTOUL,
    THREE,
    TWO,
    U32,
    U64,
    valid_tube_name,
)
from beanstalk_py.protocol.replies import (
    AUTHENTICATED,
    BAD_FORMAT,
    INTERNAL_ERROR,
    NOT_FOUND,
    UNAUTHORIZED,
    UNKNOWN_COMMAND,
)

OUTPUT_LIMIT = 4 * 1024 * 1024  # unsent reply bytes before a session stops parsing
_OUT_CHECK_EVERY = 256  # reply chunks between two measurements of the pending output

log = logging.getLogger("beanstalk_py.session")


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



class Session:
    __slots__ = (
        "_body_chunks",
        "_buf",
        "_counted",
        "_discard",
        "_need",
        "_out_bytes",
        "_put",
        "_skipping",
        "auth_token",
        "client",
        "closing",
        "disconnected",
        "engine",
        "held",
        "out",
        "out_check",
        "out_limit",
        "output_full",
        "pending",
    )

    def __init__(
        self, engine: Engine, pending: Pending | None = None, auth_token: bytes | None = None
    ) -> None:
        self.engine = engine
        self.pending = pending if pending is not None else Pending()
        # --auth-token-file: the token this session must send first; None once authenticated
        # (or when auth is off), so the check costs one attribute test per command.
        self.auth_token = auth_token
        self.out: list[bytes] = []
        # quit was received, the token was wrong or the connection ended: parse nothing more,
        # and the shell closes the connection once the replies are out
        self.closing = False
        self.disconnected = False  # close() ran: the client has left the engine
        self.held: list[tuple[int, bytes]] = []  # output waiting for an fsync (binlog seq, bytes)
        self.client: Client = engine.connect(self.deliver, self.send_job, self._wake)
        self._buf = b""
        self._skipping = False  # inside an over-long line
        self._need = 0  # body bytes still expected (put)
        self._discard = False  # the expected body is over the size limit
        self._body_chunks: list[bytes] = []
        self._put: tuple[int, int, int, int] = (0, 0, 0, 0)  # id, pri, delay, ttr
        # Output back-pressure: parsing stops (``output_full``) once ``out`` holds
        # ``out_limit`` bytes; it is measured every few chunks (``out_check``), not on every
        # reply.
        self.output_full = False
        self.out_limit = OUTPUT_LIMIT
        self.out_check = _OUT_CHECK_EVERY
        self._counted = 0  # chunks of ``out`` already summed into ``_out_bytes``
        self._out_bytes = 0

    @property
    def waiting(self) -> bool:
        """A reserve waits for a job: nothing more is parsed until it ends."""
        return self.client.waiting

    def _wake(self) -> None:
        self.pending.resumed.append(self)

    # --- output -----------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        out = self.out
        if not out:
            self.pending.dirty.append(self)
        out.append(data)

    def send_job(self, word: bytes, job: Job) -> None:
        self.deliver(b"%s %d %d\r\n" % (word, job.id, len(job.body) - 2))
        self.out.append(job.body)

    @property
    def buffered(self) -> int:
        """Input bytes received but not parsed yet (e.g. behind a blocking reserve)."""
        return len(self._buf)

    def take_output(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        self._counted = self._out_bytes = 0
        self.out_check = _OUT_CHECK_EVERY
        return data

    def set_output_limit(self, limit: int) -> None:
        """Stop parsing while ``limit`` bytes of replies are unsent (0: never stop)."""
        self.out_limit = limit if limit > 0 else sys.maxsize

    def _measure_output(self) -> bool:
        """Measure the pending output; True (and ``output_full``) once it reaches the limit."""
        out = self.out
        n = len(out)
        size = self._out_bytes + sum(map(len, itertools.islice(out, self._counted, n)))
        self._out_bytes = size
        self._counted = n
        if size >= self.out_limit:
            self.output_full = True
            return True
        # Next look: before the remaining room could be overrun by more than a chunk or two.
        room = (self.out_limit - size) // (self.engine.max_job_size + 64)
        self.out_check = n + max(1, min(_OUT_CHECK_EVERY, room))
        return False

    def close(self) -> None:
        """The connection is gone: return reserved jobs, leave tubes (idempotent)."""
        if self.disconnected:
            return
        self.disconnected = self.closing = True
        self.engine.disconnect(self.client)

    # --- input ------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Consume ``data`` (``b""`` to resume after a wait), queueing replies."""
        self.output_full = False
        if self._need:
            rest = self._feed_body(data)
            if rest is None:
                return
            data = rest
        if self._buf:
            data = self._buf + data
            self._buf = b""
        n = len(data)
        pos = 0
        out = self.out
        check = self.out_check
        client = self.client
        while pos < n:
            if client.waiting or self.closing:
                break
            if len(out) >= check:
                if self._measure_output():
                    break
                check = self.out_check
            if self._skipping:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    # keep a trailing \r: its \n may come in the next read
                    pos = n - 1 if data[-1] == 13 else n
                    break
                pos = eol + 2
                self._skipping = False
                self.deliver(BAD_FORMAT)
                continue
            eol = data.find(b"\r\n", pos, pos + LINE_MAX)
            if eol < 0:
                if n - pos >= LINE_MAX:
                    self._skipping = True
                    pos += LINE_MAX - 1
                    continue
                break
            line = data[pos:eol]
            pos = eol + 2
            try:
                self._command(line)
            except Exception as exc:
                self._internal_error(line, exc)
            if self._need:
                avail = n - pos
                need = self._need
                if avail >= need:
                    chunk = data[pos : pos + need]
                    pos += need
                    self._need = 0
                    try:
                        self._finish_put(chunk)
                    except Exception as exc:
                        self._internal_error(b"put", exc)
                else:
                    if not self._discard:
                        self._body_chunks.append(data[pos:])
                    self._need -= avail
                    return
        if pos < n:
            self._buf = data[pos:]

    def _feed_body(self, data: bytes) -> bytes | None:
        need = self._need
        if len(data) < need:
            if not self._discard:
                self._body_chunks.append(data)
            self._need -= len(data)
            return None
        self._need = 0
        chunks = self._body_chunks
        chunks.append(data[:need])
        body = b"".join(chunks)
        chunks.clear()
        try:
            self._finish_put(body)
        except Exception as exc:
            self._internal_error(b"put", exc)
        return data[need:]

    def _internal_error(self, line: bytes, exc: Exception) -> None:
        """A handler failed: answer INTERNAL_ERROR, log one line (the traceback at DEBUG)."""
        word = line.split(b" ", 1)[0][:32].decode("ascii", "replace")
        log.error(
            "INTERNAL_ERROR answering %r: %s: %s",
            word,
            type(exc).__name__,
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        self.deliver(INTERNAL_ERROR)

    def _finish_put(self, body: bytes) -> None:
        if self._discard:
            self._discard = False
            self._body_chunks.clear()
            self.deliver(UNAUTHORIZED if self.auth_token is not None else b"JOB_TOO_BIG\r\n")
            return
        job_id, pri, delay, ttr = self._put
        if not body.endswith(b"\r\n"):
            self.deliver(b"EXPECTED_CRLF\r\n")
            return
        engine = self.engine
        if engine.draining:
            self.deliver(b"DRAINING\r\n")
            return
        self.deliver(engine.put(self.client, job_id, pri, delay, ttr, body))

    def _command(self, line: bytes) -> None:
        if self.auth_token is not None:
            self._gated(line)
            return
        if b"\x00" in line:
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
                    self._need = size + 2
                    self._discard = True  # answered once the body is read (_finish_put)
                    return
        self.deliver(UNAUTHORIZED)

    # --- commands ---------------------------------------------------------------------

    def cmd_put(self, rest: bytes) -> None:
        parts = rest.split(b" ")
        if (
            len(parts) == 4
            and parts[0].isdigit()
            and parts[1].isdigit()
            and parts[2].isdigit()
            and parts[3].isdigit()
        ):
            # the usual "pri delay ttr bytes" with single spaces: no regex needed
            pri, delay, ttr, size = int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])
            tail_ok = True
        else:
            m = FOUR.match(rest)
            if m is None:
                self.deliver(BAD_FORMAT)
                return
            pri, delay, ttr, size = int(m[1]), int(m[2]), int(m[3]), int(m[4])
            tail_ok = m.end() == len(rest)
        if pri > U32 or delay > U32 or ttr > U32 or size > U32:
            self.deliver(BAD_FORMAT)
            return
        engine = self.engine
        engine.ops[OP_PUT] += 1
        if size > engine.max_job_size:
            self._need = size + 2
            self._discard = True
            return
        if not tail_ok:
            self.deliver(BAD_FORMAT)
            return
        self._put = (engine.new_job_id(self.client), pri, delay, ttr or 1)
        self._need = size + 2

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
        self.engine.ops[OP_RESERVE_WITH_TIMEOUT] += 1
        self.engine.mark_worker(self.client)
        reply = self.engine.reserve(self.client, int(m[1]))
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
        if job_id < 0:
            return
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
        self.deliver(b"KICKED %d\r\n" % engine.kick(self.client, value & U32))

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


Handler = Callable[[Session, bytes], None]

# Commands whose reference prefix ends in a space: matched on the word before the first space.
_SPACED: dict[bytes, Handler] = {
    b"put": Session.cmd_put,
    b"peek": Session.cmd_peek,
    b"reserve-with-timeout": Session.cmd_reserve_with_timeout,
    b"reserve-job": Session.cmd_reserve_job,
    b"delete": Session.cmd_delete,
    b"release": Session.cmd_release,
    b"bury": Session.cmd_bury,
    b"kick": Session.cmd_kick,
    b"kick-job": Session.cmd_kick_job,
    b"touch": Session.cmd_touch,
    b"stats-job": Session.cmd_stats_job,
    b"stats-tube": Session.cmd_stats_tube,
    b"use": Session.cmd_use,
    b"watch": Session.cmd_watch,
    b"ignore": Session.cmd_ignore,
}

# The rest, as plain prefixes in the reference's order (beanstalkd prot.c which_cmd). Every
# spaced command that shares a prefix with one of these precedes it there, so trying the
# spaced table first gives the same answer as the reference's single ordered scan.
_PREFIXED: tuple[tuple[bytes, Handler], ...] = (
    (b"peek-ready", Session.cmd_peek_ready),
    (b"peek-delayed", Session.cmd_peek_delayed),
    (b"peek-buried", Session.cmd_peek_buried),
    (b"reserve", Session.cmd_reserve),
    (b"stats", Session.cmd_stats),
    (b"list-tubes-watched", Session.cmd_list_tubes_watched),
    (b"list-tube-used", Session.cmd_list_tube_used),
    (b"list-tubes", Session.cmd_list_tubes),
    (b"quit", Session.cmd_quit),
    (b"pause-tube", Session.cmd_pause_tube),
)

# Commands that take no argument, looked up by the whole line before any prefix matching
# (the answer is the same as the ordered scan's: none of these lines starts with an
# earlier prefix).
_EXACT: dict[bytes, Handler] = {prefix: handler for prefix, handler in _PREFIXED}
del _EXACT[b"pause-tube"]
