"""Every way a job changes state, then kill -9 and restart: the restart shows what it must.

One server process on a ``-b`` directory; each job is driven down one path (the audit table in
``beanstalk_py/journal.py``), then the server is killed with SIGKILL and started again on the
same directory. A job reserved at the crash comes back ready, whatever queue it was taken
from (``reserve-job`` out of the buried FIFO or the delay heap included).
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from support.servers import ServerProcess, ours_argv, ours_env


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "server closed the connection"
            self.buf += chunk
        out, _, self.buf = self.buf.partition(b"\r\n")
        return out

    def ask(self, line: bytes, body: bytes | None = None) -> bytes:
        self.sock.sendall(line + b"\r\n" + (body + b"\r\n" if body is not None else b""))
        reply = self.line()
        if reply.startswith((b"RESERVED ", b"FOUND ", b"OK ")):
            n = int(reply.split()[-1])
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            self.buf = self.buf[n + 2 :]
        return reply

    def put(self, body: bytes, *, pri: int = 10, delay: int = 0, ttr: int = 60) -> int:
        reply = self.ask(b"put %d %d %d %d" % (pri, delay, ttr, len(body)), body)
        assert reply.startswith(b"INSERTED "), reply
        return int(reply.split()[1])

    def state(self, job_id: int) -> tuple[str, int] | None:
        """(state, pri) from stats-job, or None when the job does not exist."""
        self.sock.sendall(b"stats-job %d\r\n" % job_id)
        reply = self.line()
        if reply == b"NOT_FOUND":
            return None
        assert reply.startswith(b"OK "), reply
        n = int(reply.split()[1])
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(65536)
        text, self.buf = self.buf[:n].decode(), self.buf[n + 2 :]
        fields = dict(row.split(": ", 1) for row in text.splitlines()[1:])
        return fields["state"], int(fields["pri"])

    def close(self) -> None:
        self.sock.close()


def _start(bdir: Path) -> ServerProcess:
    return ServerProcess(ours_argv("-b", str(bdir)), env=ours_env(), start_timeout=15).start()


def _reserve_job(c: Conn, job_id: int) -> None:
    reply = c.ask(b"reserve-job %d" % job_id)
    assert reply.startswith(b"RESERVED %d " % job_id), reply


def _buried(c: Conn, body: bytes) -> int:
    job_id = c.put(body)
    _reserve_job(c, job_id)
    assert c.ask(b"bury %d 10" % job_id) == b"BURIED"
    return job_id


def test_every_state_change_survives_kill9(tmp_path: Path) -> None:
    srv = _start(tmp_path)
    expect: dict[str, tuple[int, tuple[str, int] | None]] = {}
    try:
        c = Conn(srv.port)
        holder = Conn(srv.port)  # reserves jobs and stays connected through the kill
        quitter = Conn(srv.port)  # reserves jobs, then disconnects

        # reserve-job out of the buried FIFO / the delay heap, reserved at the crash
        j = _buried(c, b"buried-then-reserved")
        _reserve_job(holder, j)
        expect["reserve-job of a buried job"] = (j, ("ready", 10))
        j = c.put(b"delayed-then-reserved", delay=3600)
        _reserve_job(holder, j)
        expect["reserve-job of a delayed job"] = (j, ("ready", 10))
        # ... and given back by a closing connection
        j = _buried(c, b"buried-reserved-conn-closed")
        _reserve_job(quitter, j)
        expect["reserve-job of a buried job, connection closed"] = (j, ("ready", 10))
        j = c.put(b"delayed-reserved-conn-closed", delay=3600)
        _reserve_job(quitter, j)
        expect["reserve-job of a delayed job, connection closed"] = (j, ("ready", 10))
        # ... and given back by the end of its time to run
        j = c.put(b"buried-reserved-ttr-expired", ttr=1)
        _reserve_job(c, j)
        assert c.ask(b"bury %d 10" % j) == b"BURIED"
        _reserve_job(holder, j)
        expect["reserve-job of a buried job, TTR expired"] = (j, ("ready", 10))
        ttr_over = time.monotonic() + 1.3
        # ... released and buried again, deleted
        j = c.put(b"delayed-reserved-released", delay=3600)
        _reserve_job(c, j)
        assert c.ask(b"release %d 5 0" % j) == b"RELEASED"
        expect["reserve-job of a delayed job, release"] = (j, ("ready", 5))
        j = _buried(c, b"buried-reserved-buried")
        _reserve_job(c, j)
        assert c.ask(b"bury %d 3" % j) == b"BURIED"
        expect["reserve-job of a buried job, bury"] = (j, ("buried", 3))
        j = _buried(c, b"buried-reserved-deleted")
        _reserve_job(c, j)
        assert c.ask(b"delete %d" % j) == b"DELETED"
        expect["reserve-job of a buried job, delete"] = (j, None)

        # the paths that were journaled before
        j = c.put(b"reserved")
        _reserve_job(holder, j)
        assert holder.ask(b"touch %d" % j) == b"TOUCHED"
        expect["reserve, touch"] = (j, ("ready", 10))
        j = c.put(b"released-delayed")
        _reserve_job(c, j)
        assert c.ask(b"release %d 7 3600" % j) == b"RELEASED"
        expect["release with delay"] = (j, ("delayed", 7))
        expect["bury"] = (_buried(c, b"buried"), ("buried", 10))
        j = _buried(c, b"kick-job")
        assert c.ask(b"kick-job %d" % j) == b"KICKED"
        expect["kick-job of a buried job"] = (j, ("ready", 10))
        j = c.put(b"kick-job-delayed", delay=3600)
        assert c.ask(b"kick-job %d" % j) == b"KICKED"
        expect["kick-job of a delayed job"] = (j, ("ready", 10))
        assert c.ask(b"use kicked") == b"USING kicked"
        j = c.put(b"kick", delay=3600)
        assert c.ask(b"kick 10") == b"KICKED 1"
        expect["kick of a delayed job"] = (j, ("ready", 10))
        assert c.ask(b"use default") == b"USING default"
        j = c.put(b"delete-delayed", delay=3600)
        assert c.ask(b"delete %d" % j) == b"DELETED"
        expect["delete of a delayed job"] = (j, None)
        j = _buried(c, b"delete-buried")
        assert c.ask(b"delete %d" % j) == b"DELETED"
        expect["delete of a buried job"] = (j, None)

        quitter.close()
        time.sleep(max(0.0, ttr_over - time.monotonic()))
        # The TTR job is back in the ready queue of the running server.
        assert c.state(expect["reserve-job of a buried job, TTR expired"][0]) == ("ready", 10)
        for name, (j, want) in expect.items():
            if name.endswith("closed"):
                assert c.state(j) == want, name
        # Every reply above was written before it was sent: SIGKILL loses nothing acknowledged.
        srv.send_signal(signal.SIGKILL)
        assert srv.proc is not None
        srv.proc.wait(10)
    finally:
        srv.stop()

    srv = _start(tmp_path)
    try:
        c = Conn(srv.port)
        got = {name: c.state(j) for name, (j, _) in expect.items()}
        assert got == {name: want for name, (_, want) in expect.items()}
    finally:
        srv.stop()


_COUNTS = (
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
)


def _counts(c: Conn, cmd: bytes) -> dict[str, str]:
    c.sock.sendall(cmd + b"\r\n")
    reply = c.line()
    assert reply.startswith(b"OK "), reply
    n = int(reply.split()[1])
    while len(c.buf) < n + 2:
        c.buf += c.sock.recv(65536)
    text, c.buf = c.buf[:n].decode(), c.buf[n + 2 :]
    fields = dict(row.split(": ", 1) for row in text.splitlines()[1:])
    return {k: fields[k] for k in _COUNTS}


def test_stats_counts_are_the_same_after_kill9_and_restart(tmp_path: Path) -> None:
    """The job counters of ``stats`` and ``stats-tube`` are rebuilt by the restore, not
    journaled: a restart must show the same urgent/ready/delayed/buried counts."""
    srv = _start(tmp_path)
    try:
        c = Conn(srv.port)
        for tube in (b"default", b"other"):
            assert c.ask(b"use " + tube) == b"USING " + tube
            for pri in (0, 0, 5, 1023, 1024, 5000):  # urgent below 1024
                c.put(b"ready", pri=pri)
            for pri in (0, 2000):
                c.put(b"delayed", pri=pri, delay=3600)
            for pri in (0, 1, 3000):
                _buried(c, b"buried-%d" % pri)
        # reserved jobs come back ready, so none is held at the kill
        before = [_counts(c, cmd) for cmd in (b"stats", b"stats-tube default", b"stats-tube other")]
        assert before[0]["current-jobs-reserved"] == "0"
        assert all(v != "0" for k, v in before[0].items() if k != "current-jobs-reserved")
        srv.send_signal(signal.SIGKILL)
        assert srv.proc is not None
        srv.proc.wait(10)
    finally:
        srv.stop()

    srv = _start(tmp_path)
    try:
        c = Conn(srv.port)
        after = [_counts(c, cmd) for cmd in (b"stats", b"stats-tube default", b"stats-tube other")]
        assert after == before
    finally:
        srv.stop()
