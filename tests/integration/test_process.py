"""Process-level behaviour: -u drops privileges before the binlog opens; READY=1 after replay."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support.servers import ServerProcess, ours_argv, ours_env

SERVER = [sys.executable, "-m", "beanstalk_py"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(port: int, line: bytes) -> bytes:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(line)
                return c.recv(4096)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_u_drops_privileges_after_binding_and_before_the_binlog() -> None:
    nobody = pwd.getpwnam("nobody")
    # not under pytest's tmp_path: its parents are private to root
    top = Path(tempfile.mkdtemp(prefix="bq-u-"))
    top.chmod(0o755)
    binlog = top / "binlog"
    binlog.mkdir()
    os.chown(binlog, nobody.pw_uid, nobody.pw_gid)
    port = free_port()
    proc = subprocess.Popen(
        [*SERVER, "-l", "127.0.0.1", "-p", str(port), "-u", "nobody", "-b", str(binlog)],
        cwd="/",
    )
    try:
        assert ask(port, b"put 0 0 60 1\r\nx\r\n") == b"INSERTED 1\r\n"
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
        files = list(binlog.glob("binlog.*"))
        assert files and all(f.stat().st_uid == nobody.pw_uid for f in files)
    finally:
        proc.terminate()
        code = proc.wait(10)
        shutil.rmtree(top, ignore_errors=True)
    assert code == 0


def write_binlog(binlog: Path, jobs: int) -> None:
    """A binlog of ``jobs`` ready jobs in tube default, written by the real writer."""
    from beanstalk_py.binlog import Binlog
    from beanstalk_py.core.job import Job
    from beanstalk_py.core.tube import Tube
    from beanstalk_py.system import SystemClock

    clock = SystemClock()
    writer = Binlog.open(binlog, fsync_ms=None, clock=clock, max_job_size=65535)
    writer.replay()
    tube = Tube("default")
    for job_id in range(1, jobs + 1):
        assert writer.put(Job(job_id, tube, 0, 0, 60, b"x" * 20 + b"\r\n", clock.wall()))
        if job_id % 10_000 == 0:
            writer.write_pending()
    writer.close()


def test_ready_is_notified_after_the_binlog_replayed(tmp_path: Path) -> None:
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    jobs = 300_000  # a replay of a good fraction of a second: READY=1 sent early is seen early
    write_binlog(binlog, jobs)
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    port = free_port()
    server = subprocess.Popen(
        [*SERVER, "-l", "127.0.0.1", "-p", str(port), "-b", str(binlog)], env=env
    )
    try:
        message = listener.recv(4096).decode()
        assert "READY=1" in message.split("\n")
        # At the moment READY=1 arrives the replay is over: /readyz (answered with 503, not
        # held, while the binlog replays) says 200 and every job is there.
        readyz = ask(port, b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert readyz.startswith(b"HTTP/1.1 200 "), readyz
        assert b"current-jobs-ready: %d\n" % jobs in ask(port, b"stats\r\n")
        server.terminate()
        assert server.wait(10) == 0
        assert "STOPPING=1" in listener.recv(4096).decode().split("\n")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        listener.close()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)"
)
def test_sigterm_as_pid_1_is_a_graceful_exit_0(tmp_path: Path) -> None:
    # As PID 1 (a container's entrypoint) the kernel ignores signals without a handler, so
    # this checks the server installs one (beanstalkd 1.13 only exits 143 there).
    port = free_port()
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    command = [*SERVER, "-l", "127.0.0.1", "-p", str(port), "-b", str(binlog)]
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", *command])
    try:
        assert ask(port, b"put 0 0 60 4\r\nkept\r\n") == b"INSERTED 1\r\n"
        children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGTERM)  # the server, PID 1 in its namespace
        assert outer.wait(10) == 0
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait(10)
    again = subprocess.Popen([*SERVER, "-l", "127.0.0.1", "-p", str(port), "-b", str(binlog)])
    try:
        assert ask(port, b"peek 1\r\n") == b"FOUND 1 4\r\nkept\r\n"
    finally:
        again.terminate()
        again.wait(10)


def test_readyz_is_503_while_a_large_binlog_replays(tmp_path: Path) -> None:
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    jobs = 300_000  # enough for a replay of a good fraction of a second
    write_binlog(binlog, jobs)

    port = free_port()
    proc = subprocess.Popen([*SERVER, "-l", "127.0.0.1", "-p", str(port), "-b", str(binlog)])
    seen: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while not seen or seen[-1] != b"200":
            assert time.monotonic() < deadline, seen
            try:
                reply = ask(port, b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
            except OSError:
                continue
            seen.append(reply.split(b" ", 2)[1])
        assert seen[0] == b"503", seen  # answered during the replay, not after it
        assert b"OK " in ask(port, b"stats-tube default\r\n")
        stats = ask(port, b"stats\r\n")
        assert b"current-jobs-ready: %d\n" % jobs in stats
    finally:
        proc.terminate()
        proc.wait(10)


def test_deadlines_answer_waiting_clients_without_further_input(tmp_path: Path) -> None:
    """With the real clock, a timer tick alone must produce and send the replies: the end of
    a reserve-with-timeout, a delayed job becoming ready for a blocked reserve."""
    srv = ServerProcess(ours_argv(), env=ours_env()).start()
    try:
        with (
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as a,
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as b,
        ):
            t0 = time.monotonic()
            a.sendall(b"reserve-with-timeout 1\r\n")
            b.sendall(b"use d\r\nput 0 1 60 1\r\nx\r\nwatch d\r\nignore default\r\nreserve\r\n")
            assert a.recv(100) == b"TIMED_OUT\r\n"
            assert 0.9 <= time.monotonic() - t0 < 5
            want = b"USING d\r\nINSERTED 1\r\nWATCHING 2\r\nWATCHING 1\r\nRESERVED 1 1\r\nx\r\n"
            got = b""
            while len(got) < len(want):
                chunk = b.recv(100)
                assert chunk, got
                got += chunk
            assert got == want
    finally:
        srv.stop()
