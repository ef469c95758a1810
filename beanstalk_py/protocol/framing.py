"""Framing: command lines and job bodies out of a byte stream, replies into an output queue.

``Framer`` is the byte-level half of a session (beanstalkd prot.c, with two fixes listed in
the README's compatibility notes); ``session.Session`` supplies the commands.

* A command line ends at the first ``\\r\\n`` and may be at most 224 bytes including it. A
  longer line is discarded up to its ``\\r\\n`` and answered ``BAD_FORMAT`` once.
* After a command asks for a body (``expect_body``), the next ``bytes + 2`` bytes are the
  body, whatever they contain; a body to drop (over the size limit, or before ``auth``) is
  read and discarded, then ``on_body_dropped`` answers.
* Nothing is parsed while ``paused()`` (a reserve waits) or ``closing``; the unparsed bytes
  stay buffered for the next ``feed``.
* Output back-pressure: parsing stops (``output_full``) once ``out`` holds ``out_limit``
  bytes; it is measured every few chunks (``out_check``), not on every reply.
"""

from __future__ import annotations

import itertools
import logging
import sys
from typing import Final

from beanstalk_py.core.job import Job
from beanstalk_py.protocol.arguments import LINE_MAX
from beanstalk_py.protocol.replies import BAD_FORMAT, INTERNAL_ERROR

OUTPUT_LIMIT: Final = 4 * 1024 * 1024  # unsent reply bytes before a session stops parsing
_OUT_CHECK_EVERY: Final = 256  # reply chunks between two measurements of the pending output

log = logging.getLogger("beanstalk_py.session")


class Framer:
    __slots__ = (
        "_body_chunks",
        "_buf",
        "_counted",
        "_discard",
        "_need",
        "_out_bytes",
        "_skipping",
        "closing",
        "max_chunk",
        "out",
        "out_check",
        "out_limit",
        "output_full",
    )

    def __init__(self, max_chunk: int) -> None:
        self.out: list[bytes] = []
        # quit was received, the token was wrong or the connection ended: parse nothing more,
        # and the shell closes the connection once the replies are out
        self.closing = False
        self._buf = b""
        self._skipping = False  # inside an over-long line
        self._need = 0  # body bytes still expected
        self._discard = False  # the expected body is dropped
        self._body_chunks: list[bytes] = []
        self.output_full = False
        self.out_limit = OUTPUT_LIMIT
        self.out_check = _OUT_CHECK_EVERY
        self.max_chunk = max_chunk  # the largest reply chunk expected (a job body and header)
        self._counted = 0  # chunks of ``out`` already summed into ``_out_bytes``
        self._out_bytes = 0

    # --- what a session supplies --------------------------------------------------------

    def on_line(self, line: bytes) -> None:
        """One command line, without its CRLF."""
        raise NotImplementedError

    def on_body(self, body: bytes) -> None:
        """The body asked for by ``expect_body``, CRLF included (if the client sent one)."""
        raise NotImplementedError

    def on_body_dropped(self) -> None:
        """The body asked for by ``expect_body(..., drop=True)`` was read and dropped."""
        raise NotImplementedError

    def paused(self) -> bool:
        """True while parsing must wait (a reserve is blocked)."""
        raise NotImplementedError

    def on_output(self) -> None:
        """``out`` just stopped being empty."""
        raise NotImplementedError

    def expect_body(self, size: int, drop: bool) -> None:
        """The next ``size`` bytes after this line are a body (``drop``: read and discard)."""
        self._need = size
        self._discard = drop

    # --- output -----------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        out = self.out
        if not out:
            self.on_output()
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
        room = (self.out_limit - size) // self.max_chunk
        self.out_check = n + max(1, min(_OUT_CHECK_EVERY, room))
        return False

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
        while pos < n:
            if self.closing or self.paused():
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
                self.on_line(line)
            except Exception as exc:
                self._internal_error(line, exc)
            if self._need:
                avail = n - pos
                need = self._need
                if avail >= need:
                    chunk = data[pos : pos + need]
                    pos += need
                    self._need = 0
                    self._body_done(chunk)
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
        self._body_done(body)
        return data[need:]

    def _body_done(self, body: bytes) -> None:
        try:
            if self._discard:
                self._discard = False
                self._body_chunks.clear()
                self.on_body_dropped()
            else:
                self.on_body(body)
        except Exception as exc:
            self._internal_error(b"put", exc)

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
