"""One client connection's protocol state: the byte parser and the command handlers.

``Session.feed(data)`` consumes bytes and queues replies with ``deliver``; it never touches a
socket. Replies accumulate in ``out`` (the shell writes them with one ``transport.write`` per
read) and the session puts itself on ``engine.dirty`` the first time it has something to say.

Framing (beanstalkd prot.c, with two fixes listed in docs/COMPATIBILITY.md):
* A command line ends at the first ``\\r\\n`` and may be at most 224 bytes including it. A
  longer line is discarded up to its ``\\r\\n`` and answered ``BAD_FORMAT`` once.
* After ``put`` the next ``bytes + 2`` bytes are the body, whatever they contain; when the
  size is over the limit they are read and discarded, then ``JOB_TOO_BIG`` is sent.
* While a reserve waits (``waiting``), nothing more is parsed; the shell stops reading and
  calls ``feed(b"")`` when the engine puts the session on ``engine.resumed``.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import re
import sys
from collections.abc import Callable

from beanstalk_py import stats
from beanstalk_py.engine import (
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
    Engine,
)
from beanstalk_py.job import Job
from beanstalk_py.tube import SwapList, Tube

LINE_MAX = 224  # beanstalkd LINE_BUF_SIZE: the longest command line, CRLF included
NAME_MAX = 200
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
INT_MAX = 0x7FFFFFFF

BAD_FORMAT = b"BAD_FORMAT\r\n"
UNKNOWN_COMMAND = b"UNKNOWN_COMMAND\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
INTERNAL_ERROR = b"INTERNAL_ERROR\r\n"
UNAUTHORIZED = b"UNAUTHORIZED\r\n"
AUTHENTICATED = b"AUTHENTICATED\r\n"

OUTPUT_LIMIT = 4 * 1024 * 1024  # unsent reply bytes before a session stops parsing
_OUT_CHECK_EVERY = 256  # reply chunks between two measurements of the pending output

log = logging.getLogger("beanstalk_py.session")

# read_u32/read_u64: skip spaces, then digits; the next number needs at least one space.
_ONE = re.compile(rb" *(\d+)")
_TWO = re.compile(rb" *(\d+) +(\d+)")
_THREE = re.compile(rb" *(\d+) +(\d+) +(\d+)")
_FOUR = re.compile(rb" *(\d+) +(\d+) +(\d+) +(\d+)")
_STRTOUL = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(\d+)")
_NAME_RUN = re.compile(rb" *([A-Za-z0-9\-+/;.$_()]*)")
_VALID_NAME = re.compile(rb"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}")


def valid_tube_name(name: bytes) -> bool:
    return _VALID_NAME.fullmatch(name) is not None


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
        "binlog",
        "blocked",
        "closed",
        "conn",
        "engine",
        "gate",
        "gone",
        "held",
        "is_producer",
        "is_worker",
        "out",
        "out_check",
        "out_limit",
        "reserved",
        "soon_at",
        "soonest",
        "use",
        "wait_deadline",
        "waiting",
        "watch",
    )

    def __init__(
        self, engine: Engine, binlog: object = None, auth_token: bytes | None = None
    ) -> None:
        self.engine = engine
        # --auth-token-file: the token this session must send first; None once authenticated
        # (or when auth is off), so the check costs one attribute test per command.
        self.gate = auth_token
        self.binlog = binlog  # only read by `stats`
        self.out: list[bytes] = []
        self.closed = False  # quit was received or the connection ended: parse nothing more
        self.gone = False  # close() ran
        self.conn: object = None  # the shell's connection object
        self.held: list[tuple[int, bytes]] = []  # output waiting for an fsync (binlog seq, bytes)
        self.use: Tube = engine.default
        engine.default.using_ct += 1
        self.watch: SwapList[Tube] = SwapList()
        self.watch.append(engine.default)
        engine.default.watching_ct += 1
        self.reserved: dict[int, Job] = {}
        self.waiting = False
        self.wait_deadline = 0.0
        self.soon_at = 0.0
        # earliest TTR deadline among ``reserved``, or -1.0 when unknown (recomputed lazily),
        # so a reserve stays O(1) for a client holding many jobs
        self.soonest = -1.0
        self.is_producer = False
        self.is_worker = False
        self._buf = b""
        self._skipping = False  # inside an over-long line
        self._need = 0  # body bytes still expected (put)
        self._discard = False  # the expected body is over the size limit
        self._body_chunks: list[bytes] = []
        self._put: tuple[int, int, int, int] = (0, 0, 0, 0)  # id, pri, delay, ttr
        # Back-pressure: parsing stops (``blocked``) once ``out`` holds ``out_limit`` bytes;
        # it is measured every few chunks (``out_check``), not on every reply.
        self.blocked = False
        self.out_limit = OUTPUT_LIMIT
        self.out_check = _OUT_CHECK_EVERY
        self._counted = 0  # chunks of ``out`` already summed into ``_out_bytes``
        self._out_bytes = 0
        engine.cur_conns += 1
        engine.total_conns += 1

    # --- output -----------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        out = self.out
        if not out:
            self.engine.dirty.append(self)
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

    def _output_full(self) -> bool:
        """Measure the pending output; True (and ``blocked``) once it reaches the limit."""
        out = self.out
        n = len(out)
        size = self._out_bytes + sum(map(len, itertools.islice(out, self._counted, n)))
        self._out_bytes = size
        self._counted = n
        if size >= self.out_limit:
            self.blocked = True
            return True
        # Next look: before the remaining room could be overrun by more than a chunk or two.
        room = (self.out_limit - size) // (self.engine.max_job_size + 64)
        self.out_check = n + max(1, min(_OUT_CHECK_EVERY, room))
        return False

    def close(self) -> None:
        """The connection is gone: return reserved jobs, leave tubes (idempotent)."""
        if self.gone:
            return
        self.gone = self.closed = True
        self.engine.session_closed(self)

    # --- input ------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Consume ``data`` (``b""`` to resume after a wait), queueing replies."""
        self.blocked = False
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
        while pos < n:
            if self.waiting or self.closed:
                break
            if len(out) >= check:
                if self._output_full():
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
            self.deliver(UNAUTHORIZED if self.gate is not None else b"JOB_TOO_BIG\r\n")
            return
        job_id, pri, delay, ttr = self._put
        if not body.endswith(b"\r\n"):
            self.deliver(b"EXPECTED_CRLF\r\n")
            return
        engine = self.engine
        if engine.draining:
            self.deliver(b"DRAINING\r\n")
            return
        self.deliver(engine.put(self, job_id, pri, delay, ttr, body))

    def _command(self, line: bytes) -> None:
        if self.gate is not None:
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
        gate = self.gate
        assert gate is not None
        if line.startswith(b"auth ") or line == b"auth":
            if hmac.compare_digest(line[5:], gate):
                self.gate = None
                self.deliver(AUTHENTICATED)
            else:
                self.deliver(UNAUTHORIZED)
                self.closed = True
            return
        if line.startswith(b"quit"):
            self.closed = True
            return
        if line.startswith(b"put ") and b"\x00" not in line:
            m = _FOUR.match(line, 4)
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
            m = _FOUR.match(rest)
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
        if not self.is_producer:
            self.is_producer = True
            engine.producers += 1
        job_id = engine.next_id
        engine.next_id = job_id + 1
        self._put = (job_id, pri, delay, ttr or 1)
        self._need = size + 2

    def _worker(self) -> None:
        if not self.is_worker:
            self.is_worker = True
            self.engine.workers += 1

    def cmd_reserve(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_RESERVE] += 1
        self._worker()
        reply = self.engine.reserve(self, None)
        if reply:
            self.deliver(reply)

    def cmd_reserve_with_timeout(self, rest: bytes) -> None:
        m = _ONE.match(rest)  # trailing bytes are ignored, as in the reference
        if m is None or int(m[1]) > INT_MAX:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_RESERVE_WITH_TIMEOUT] += 1
        self._worker()
        reply = self.engine.reserve(self, int(m[1]))
        if reply:
            self.deliver(reply)

    def _id(self, rest: bytes) -> int:
        """A lone u64 argument, or -1 (after replying BAD_FORMAT)."""
        if rest.isdigit() and len(rest) < 20:  # the usual case; always within u64
            return int(rest)
        m = _ONE.fullmatch(rest)
        if m is None or int(m[1]) > U64:
            self.deliver(BAD_FORMAT)
            return -1
        return int(m[1])

    def cmd_reserve_job(self, rest: bytes) -> None:
        job_id = self._id(rest)
        if job_id < 0:
            return
        self._worker()
        reply = self.engine.reserve_job(self, job_id)
        if reply:
            self.deliver(reply)

    def cmd_delete(self, rest: bytes) -> None:
        job_id = self._id(rest)
        if job_id < 0:
            return
        engine = self.engine
        engine.ops[OP_DELETE] += 1
        self.deliver(engine.delete(self, job_id))

    def cmd_release(self, rest: bytes) -> None:
        m = _THREE.fullmatch(rest)
        if m is None:
            self.deliver(BAD_FORMAT)
            return
        job_id, pri, delay = int(m[1]), int(m[2]), int(m[3])
        if job_id > U64 or pri > U32 or delay > U32:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_RELEASE] += 1
        self.deliver(self.engine.release(self, job_id, pri, delay))

    def cmd_bury(self, rest: bytes) -> None:
        m = _TWO.fullmatch(rest)
        if m is None or int(m[1]) > U64 or int(m[2]) > U32:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_BURY] += 1
        self.deliver(self.engine.bury(self, int(m[1]), int(m[2])))

    def cmd_touch(self, rest: bytes) -> None:
        job_id = self._id(rest)
        if job_id < 0:
            return
        self.engine.ops[OP_TOUCH] += 1
        self.deliver(self.engine.touch(self, job_id))

    def cmd_kick(self, rest: bytes) -> None:
        # The reference reads the bound with strtoul: sign, leading whitespace and trailing
        # garbage are accepted, and the result is truncated to 32 bits.
        m = _STRTOUL.match(rest)
        if m is None or int(m[2]) > U64:
            self.deliver(BAD_FORMAT)
            return
        value = int(m[2])
        if m[1] == b"-":
            value = -value & U64
        engine = self.engine
        engine.ops[OP_KICK] += 1
        self.deliver(b"KICKED %d\r\n" % engine.kick(self, value & U32))

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
        self._found(self.use.peek_ready(self.engine.jobs))

    def cmd_peek_delayed(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_PEEK_DELAYED] += 1
        self._found(self.use.peek_delayed(self.engine.jobs))

    def cmd_peek_buried(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_PEEK_BURIED] += 1
        buried = self.use.buried
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
        t = engine.tube(name)
        t.using_ct += 1
        old = self.use
        self.use = t
        old.using_ct -= 1
        engine.maybe_destroy(old)
        self.deliver(b"USING %s\r\n" % rest)

    def cmd_watch(self, rest: bytes) -> None:
        name = self._name(rest)
        if name is None:
            return
        engine = self.engine
        engine.ops[OP_WATCH] += 1
        t = engine.tube(name)
        if t not in self.watch:
            self.watch.append(t)
            t.watching_ct += 1
        self.deliver(b"WATCHING %d\r\n" % len(self.watch))

    def cmd_ignore(self, rest: bytes) -> None:
        name = self._name(rest)
        if name is None:
            return
        engine = self.engine
        engine.ops[OP_IGNORE] += 1
        t = engine.tubes.get(name)
        if t is not None and t in self.watch:
            if len(self.watch) == 1:
                self.deliver(b"NOT_IGNORED\r\n")
                return
            self.watch.remove(t)
            t.watching_ct -= 1
            engine.maybe_destroy(t)
        self.deliver(b"WATCHING %d\r\n" % len(self.watch))

    def cmd_stats(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        engine = self.engine
        engine.ops[OP_STATS] += 1
        journal = engine.journal.stats()
        self.deliver(stats.server_stats(engine, journal, engine.binlog_max_size))

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
        self.deliver(b"USING %s\r\n" % self.use.name_bytes)

    def cmd_list_tubes_watched(self, rest: bytes) -> None:
        if rest:
            self.deliver(BAD_FORMAT)
            return
        self.engine.ops[OP_LIST_TUBES_WATCHED] += 1
        self.deliver(stats.tube_list(self.watch.items))

    def cmd_pause_tube(self, rest: bytes) -> None:
        m = _NAME_RUN.match(rest)
        assert m is not None  # the pattern can match empty
        name = m[1]
        d = _ONE.fullmatch(rest, m.end())
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
        self.closed = True


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
