"""Tests for beanstalk_py.app.healthcheck against real loopback servers.

Fake servers run in a thread and answer ``stats`` well, badly or not at all; the reference
``/usr/bin/beanstalkd`` (skipped when missing) is the real thing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.requirements import require
from support.servers import ours_env

from beanstalk_py.app import healthcheck
from beanstalk_py.app.healthcheck import Target, main, parse_addr

BEANSTALKD = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"

STATS_BODY = (
    b"---\n"
    b"current-jobs-urgent: 0\n"
    b"current-jobs-ready: 0\n"
    b"cmd-put: 0\n"
    b"pid: 4242\n"
    b'version: "0.1.0"\n'
    b"uptime: 3\n"
    b"draining: false\n"
)

Handler = Callable[[socket.socket], None]


def read_command(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def stats_reply(body: bytes) -> bytes:
    return b"OK %d\r\n" % len(body) + body + b"\r\n"


def answer(reply: bytes) -> Handler:
    def handle(conn: socket.socket) -> None:
        assert read_command(conn) == b"stats\r\n"
        conn.sendall(reply)

    return handle


def answer_in_pieces(conn: socket.socket) -> None:
    read_command(conn)
    for i in range(0, len(reply := stats_reply(STATS_BODY)), 7):
        conn.sendall(reply[i : i + 7])


def close_at_once(conn: socket.socket) -> None:
    pass


def never_answer(conn: socket.socket) -> None:
    # Hold the connection until the client gives up and closes it.
    while conn.recv(1024):
        pass


class FakeServer:
    """Serves each accepted connection with ``handler`` on a background thread."""

    def __init__(self, listener: socket.socket, handler: Handler) -> None:
        self.listener = listener
        self.handler = handler
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        listener.settimeout(0.05)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    self.handler(conn)
                except BaseException as exc:
                    self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.listener.close()
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], str]]:
    servers: list[FakeServer] = []

    def start(handler: Handler) -> str:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        servers.append(FakeServer(listener, handler))
        return f"127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_healthy(serve: Callable[[Handler], str], capsys: pytest.CaptureFixture[str]) -> None:
    addr = serve(answer(stats_reply(STATS_BODY)))
    assert run([addr], capsys) == (0, f"healthy: {addr} version 0.1.0\n", "")


def test_healthy_reply_in_pieces(
    serve: Callable[[Handler], str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([serve(answer_in_pieces)], capsys)[0] == 0


def test_draining_is_still_healthy(
    serve: Callable[[Handler], str], capsys: pytest.CaptureFixture[str]
) -> None:
    addr = serve(answer(stats_reply(STATS_BODY.replace(b"false", b"true"))))
    code, out, _ = run([addr], capsys)
    assert code == 0
    assert out.endswith("(draining)\n")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"UNKNOWN_COMMAND\r\n", "unexpected reply b'UNKNOWN_COMMAND'"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "unexpected reply b'HTTP/1.1 400 Bad Request'"),
        (b"OK -5\r\n", "unexpected reply b'OK -5'"),
        (stats_reply(b"---\nversion: 1\n"), "stats reply has no 'draining:' field"),
        (b"OK 10\r\nshort", "connection closed by server"),
        (b"OK 4\r\nabcdXY", "stats body not terminated by CRLF"),
        (b"OK 99999999\r\n", "stats reply too large (99999999 bytes)"),
        (b"x" * 500, "unexpected reply b'xxxxxxxx"),
        (b"", "connection closed by server"),
    ],
)
def test_bad_replies(
    reply: bytes,
    reason: str,
    serve: Callable[[Handler], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    addr = serve(answer(reply))
    code, out, err = run([addr], capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"unhealthy: {addr}: {reason}")
    assert err.count("\n") == 1


def test_closed_without_reading(
    serve: Callable[[Handler], str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run([serve(close_at_once)], capsys)
    assert code == 1
    assert err.startswith("unhealthy: ")


def test_silent_server_times_out(
    serve: Callable[[Handler], str], capsys: pytest.CaptureFixture[str]
) -> None:
    addr = serve(never_answer)
    started = time.monotonic()
    code, _, err = run([addr, "--timeout", "0.3"], capsys)
    assert time.monotonic() - started < 3
    assert (code, err) == (1, f"unhealthy: {addr}: no answer within 0.3s\n")


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now.
    code, _, err = run([f"127.0.0.1:{port}", "--timeout", "2"], capsys)
    assert (code, err) == (1, f"unhealthy: 127.0.0.1:{port}: Connection refused\n")


def test_unix_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bs.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    server = FakeServer(listener, answer(stats_reply(STATS_BODY)))
    try:
        assert run([f"unix:{path}"], capsys)[0] == 0
    finally:
        server.close()
    code, _, err = run([f"unix:{tmp_path / 'missing.sock'}"], capsys)
    assert code == 1
    assert "No such file or directory" in err


def test_env_addr_and_port_flag(
    serve: Callable[[Handler], str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    addr = serve(answer(stats_reply(STATS_BODY)))
    monkeypatch.setenv(healthcheck.ENV_ADDR, addr)
    assert run([], capsys)[0] == 0
    # --port replaces the port of the address from the environment.
    port = int(addr.rsplit(":", 1)[1])
    monkeypatch.setenv(healthcheck.ENV_ADDR, "127.0.0.1:1")
    assert run(["--port", str(port)], capsys)[0] == 0
    # An explicit ADDR wins over the environment.
    monkeypatch.setenv(healthcheck.ENV_ADDR, "unix:/nonexistent")
    assert run([addr], capsys)[0] == 0


@pytest.mark.parametrize(
    "argv",
    [["--bogus"], ["a", "b"], ["host:notaport"], ["--port", "70000"], ["--timeout", "0"]],
)
def test_usage_errors_exit_1_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "error:" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert "unix:/path" in out


@pytest.mark.parametrize(
    ("addr", "port", "target"),
    [
        ("db1", None, Target("db1", 11300)),
        ("db1:11301", None, Target("db1", 11301)),
        ("db1:11301", 12000, Target("db1", 12000)),
        ("[::1]:11302", None, Target("::1", 11302)),
        ("[::1]", None, Target("::1", 11300)),
        ("::1", None, Target("::1", 11300)),
        ("unix:/run/b.sock", None, Target(unix_path="/run/b.sock")),
    ],
)
def test_parse_addr(addr: str, port: int | None, target: Target) -> None:
    assert parse_addr(addr, port) == target


@pytest.mark.parametrize(
    "addr", ["", ":11300", "db1:", "db1:0", "db1:x", "[::1", "[::1]x", "unix:", "db1:-1"]
)
def test_parse_addr_rejects(addr: str) -> None:
    with pytest.raises(ValueError):
        parse_addr(addr)


def test_parse_addr_port_with_unix() -> None:
    with pytest.raises(ValueError, match="--port"):
        parse_addr("unix:/x", 11300)


def test_module_entry_point_no_traceback(serve: Callable[[Handler], str]) -> None:
    """``python -m`` as Docker runs it: status and a single line, never a traceback."""
    env = ours_env()
    good = serve(answer(stats_reply(STATS_BODY)))
    bad = serve(answer(b"garbage\r\n"))
    for addr, status in ((good, 0), (bad, 1)):
        proc = subprocess.run(
            [sys.executable, "-m", "beanstalk_py.healthcheck", addr],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
            check=False,
        )
        assert proc.returncode == status
        assert "Traceback" not in proc.stderr
        assert len((proc.stdout + proc.stderr).splitlines()) == 1


# --- the reference server -------------------------------------------------------------------


def wait_until_accepting(
    connect: Callable[[], socket.socket], proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, "beanstalkd exited early"
        try:
            connect().close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.fixture
def beanstalkd_factory() -> Iterator[Callable[[list[str]], subprocess.Popen[bytes]]]:
    require(
        os.access(BEANSTALKD, os.X_OK), f"{BEANSTALKD}: the reference server (Debian: beanstalkd)"
    )
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([BEANSTALKD, *args], stdout=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.compat
def test_reference_beanstalkd_tcp(
    beanstalkd_factory: Callable[[list[str]], subprocess.Popen[bytes]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    proc = beanstalkd_factory(["-l", "127.0.0.1", "-p", str(port)])
    wait_until_accepting(lambda: socket.create_connection(("127.0.0.1", port), timeout=1), proc)
    code, out, err = run([f"127.0.0.1:{port}"], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"healthy: 127.0.0.1:{port} version ")
    # SIGUSR1 puts beanstalkd into drain mode: still alive, still healthy.
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "(draining)" not in out and time.monotonic() < deadline:
        code, out, _ = run(["--port", str(port)], capsys)
        assert code == 0
    assert out.endswith("(draining)\n")


@pytest.mark.compat
def test_reference_beanstalkd_unix(
    beanstalkd_factory: Callable[[list[str]], subprocess.Popen[bytes]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "beanstalkd.sock"

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return sock

    proc = beanstalkd_factory(["-l", f"unix:{path}"])
    wait_until_accepting(connect, proc)
    code, out, _ = run([f"unix:{path}"], capsys)
    assert code == 0
    assert out.startswith(f"healthy: unix:{path} version ")
