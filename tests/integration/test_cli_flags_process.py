"""Security and operations flags through the real command line.

Each test starts ``python -m beanstalk_py`` with the real flag and checks what a user sees over
real sockets, so a flag that is parsed and validated but never reaches the running server fails
here (the in-process tests build ``Server(Config(...))`` and cannot notice). Socket activation
runs the server under the real ``systemd-socket-activate``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.pki import client_ctx, make_pki
from support.requirements import require
from support.servers import ServerProcess, free_port, ours_env, ours_process

TIMEOUT = 5.0
TOKEN = b"tok-3f9a_flags"
Start = Callable[..., ServerProcess]


@pytest.fixture
def start(start_ours: Start) -> Start:
    return start_ours  # tests/integration/conftest.py


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    made = make_pki(tmp_path_factory.mktemp("pki"))
    require(made is not None, "the cryptography package or the openssl CLI (certificates)")
    assert made is not None
    return made


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((host, port), timeout=TIMEOUT)


def read_line(sock: socket.socket) -> bytes:
    """One reply line, or what arrived before EOF (b"" for a closed connection)."""
    buf = b""
    while not buf.endswith(b"\r\n"):
        try:
            chunk = sock.recv(1)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def call(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return read_line(sock)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def stats(port: int) -> dict[str, str]:
    with connect(port) as c:
        head = call(c, b"stats\r\n")
        assert head.startswith(b"OK "), head
        body = read_exactly(c, int(head.split()[1]) + 2).decode()
    return dict(line.split(": ", 1) for line in body.splitlines()[1:] if ": " in line)


def closed_without_reply(sock: socket.socket, data: bytes) -> bool:
    """True when the server closes the connection instead of answering ``data``."""
    try:
        sock.sendall(data)
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


# --- --auth-token-file -----------------------------------------------------------------------


def test_auth_token_file_gates_commands(start: Start, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(TOKEN + b"\n")
    token.chmod(0o600)
    srv = start("--auth-token-file", str(token))
    with connect(srv.port) as c:
        assert call(c, b"put 0 0 60 2\r\nhi\r\n") == b"UNAUTHORIZED\r\n"
        assert call(c, b"stats\r\n") == b"UNAUTHORIZED\r\n"
        assert call(c, b"auth " + TOKEN + b"\r\n") == b"AUTHENTICATED\r\n"
        assert call(c, b"put 0 0 60 2\r\nhi\r\n") == b"INSERTED 1\r\n"
    with connect(srv.port) as c:
        assert call(c, b"auth wrong-token\r\n") == b"UNAUTHORIZED\r\n"
        assert closed_without_reply(c, b"list-tube-used\r\n")
    # Without the flag, the same client is served at once (the gate comes from the flag).
    plain = start()
    with connect(plain.port) as c:
        assert call(c, b"list-tube-used\r\n") == b"USING default\r\n"


def test_auth_token_file_readable_by_others_is_refused_at_start(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(TOKEN + b"\n")
    token.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "beanstalk_py", "-p", "0", "--auth-token-file", str(token)],
        capture_output=True,
        timeout=30,
        **ours_process(),
    )
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.splitlines()[0].startswith(b"beanstalk-py: "), proc.stderr
    assert b"chmod 600" in proc.stderr
    assert b"Traceback" not in proc.stderr and TOKEN not in proc.stderr


# --- --tls-cert/--tls-key/--tls-client-ca ----------------------------------------------------


def tls_call(port: int, ctx: ssl.SSLContext, data: bytes) -> bytes:
    """One request over TLS; b"" when the server refuses the handshake or closes."""
    try:
        with (
            connect(port) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(data)
            return read_line(tls)
    except (ssl.SSLError, ConnectionError, OSError):
        return b""


def test_tls_client_ca_requires_a_client_certificate(
    start: Start, pki: dict[str, dict[str, Path]]
) -> None:
    g, o = pki["good"], pki["other"]
    srv = start(
        "--tls-cert",
        str(g["server_cert"]),
        "--tls-key",
        str(g["server_key"]),
        "--tls-client-ca",
        str(g["ca"]),
    )
    with_cert = client_ctx(g["ca"], g["client_cert"], g["client_key"])
    assert tls_call(srv.port, with_cert, b"list-tube-used\r\n") == b"USING default\r\n"
    assert tls_call(srv.port, client_ctx(g["ca"]), b"list-tube-used\r\n") == b""
    foreign = client_ctx(g["ca"], o["client_cert"], o["client_key"])
    assert tls_call(srv.port, foreign, b"list-tube-used\r\n") == b""
    # A plaintext client on the TLS port is not served either.
    with connect(srv.port) as c:
        assert b"USING" not in call(c, b"list-tube-used\r\n")


def test_tls_without_client_ca_serves_clients_without_a_certificate(
    start: Start, pki: dict[str, dict[str, Path]]
) -> None:
    # The contrast to the test above: the refusal comes from --tls-client-ca, not from TLS.
    g = pki["good"]
    srv = start("--tls-cert", str(g["server_cert"]), "--tls-key", str(g["server_key"]))
    assert tls_call(srv.port, client_ctx(g["ca"]), b"list-tube-used\r\n") == b"USING default\r\n"


def test_plain_listen_serves_plaintext_next_to_tls(
    start: Start, pki: dict[str, dict[str, Path]]
) -> None:
    g = pki["good"]
    plain_port = free_port()
    srv = start(
        "--tls-cert",
        str(g["server_cert"]),
        "--tls-key",
        str(g["server_key"]),
        "--plain-listen",
        f"127.0.0.1:{plain_port}",
    )
    assert tls_call(srv.port, client_ctx(g["ca"]), b"use t\r\n") == b"USING t\r\n"
    with connect(plain_port) as c:
        assert call(c, b"use u\r\n") == b"USING u\r\n"


# --- --allow ---------------------------------------------------------------------------------


def test_allow_closes_peers_outside_the_networks(start: Start) -> None:
    outside = start("--allow", "10.0.0.0/8", "--allow", "192.168.0.0/16")
    with connect(outside.port) as c:
        assert closed_without_reply(c, b"list-tube-used\r\n")
    inside = start("--allow", "10.0.0.0/8", "--allow", "127.0.0.0/8")
    with connect(inside.port) as c:
        assert call(c, b"list-tube-used\r\n") == b"USING default\r\n"


def test_allow_always_admits_unix_socket_clients(tmp_path: Path) -> None:
    path = str(tmp_path / "bs.sock")
    srv = ServerProcess(
        [sys.executable, "-m", "beanstalk_py", "-l", "unix:{unix}", "--allow", "10.0.0.0/8"],
        unix_path=path,
        env=ours_env(),
    )
    with srv, socket.socket(socket.AF_UNIX) as c:
        c.settimeout(TIMEOUT)
        c.connect(path)
        assert call(c, b"list-tube-used\r\n") == b"USING default\r\n"


# --- --max-connections -----------------------------------------------------------------------


def test_max_connections_closes_connections_beyond_n(start: Start) -> None:
    srv = start("--max-connections", "3")
    kept = [connect(srv.port) for _ in range(3)]
    try:
        for c in kept:
            assert call(c, b"list-tube-used\r\n") == b"USING default\r\n"
        with connect(srv.port) as extra:
            assert closed_without_reply(extra, b"list-tube-used\r\n")
        kept.pop().close()
        deadline = time.monotonic() + TIMEOUT
        while True:  # the freed slot is usable again once the server saw the close
            with connect(srv.port) as again:
                if call(again, b"list-tube-used\r\n") == b"USING default\r\n":
                    break
            assert time.monotonic() < deadline, "freed slot never reused"
            time.sleep(0.05)
    finally:
        for c in kept:
            c.close()


# --- --max-jobs ------------------------------------------------------------------------------


def test_max_jobs_answers_out_of_memory_beyond_n(start: Start) -> None:
    srv = start("--max-jobs", "3")
    with connect(srv.port) as c:
        for i in range(1, 4):
            assert call(c, b"put 0 0 60 1\r\nx\r\n") == b"INSERTED %d\r\n" % i
        assert call(c, b"put 0 0 60 1\r\nx\r\n") == b"OUT_OF_MEMORY\r\n"
        assert call(c, b"delete 1\r\n") == b"DELETED\r\n"
        assert call(c, b"put 0 0 60 1\r\nx\r\n").startswith(b"INSERTED ")


def test_max_job_bytes_answers_out_of_memory_beyond_the_bytes(start: Start) -> None:
    srv = start("--max-job-bytes", "100")
    with connect(srv.port) as c:
        assert call(c, b"put 0 0 60 60\r\n" + b"a" * 60 + b"\r\n") == b"INSERTED 1\r\n"
        assert call(c, b"put 0 0 60 60\r\n" + b"b" * 60 + b"\r\n") == b"OUT_OF_MEMORY\r\n"
        assert call(c, b"put 0 0 60 30\r\n" + b"c" * 30 + b"\r\n").startswith(b"INSERTED ")


# --- --no-http -------------------------------------------------------------------------------


GET_METRICS = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"


def test_no_http_answers_get_as_a_beanstalk_command(start: Start) -> None:
    with connect(start().port) as c:
        assert call(c, GET_METRICS).startswith(b"HTTP/1.")  # the default answers HTTP
    srv = start("--no-http")
    with connect(srv.port) as c:
        reply = call(c, GET_METRICS)
        assert reply == b"UNKNOWN_COMMAND\r\n", reply  # as beanstalkd answers "GET ..."
        # The connection is still a beanstalk connection.
        c.sendall(b"list-tube-used\r\n")
        rest = b""
        while b"USING default\r\n" not in rest:
            chunk = c.recv(4096)
            assert chunk, rest
            rest += chunk
        assert b"HTTP/" not in rest


# --- --log-format json -----------------------------------------------------------------------


def log_lines(srv: ServerProcess) -> list[str]:
    with connect(srv.port) as c:
        assert call(c, b"list-tube-used\r\n") == b"USING default\r\n"
    srv.send_signal(signal.SIGTERM)
    assert srv.proc is not None
    assert srv.proc.wait(TIMEOUT) == 0
    return [line for line in srv.output().splitlines() if line.strip()]


def test_log_format_json_writes_one_object_per_line(start: Start) -> None:
    lines = log_lines(start("-V", "--log-format", "json"))
    assert len(lines) >= 3, lines  # at least ready, accept/close, shutting down
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and {"ts", "level", "msg"} <= r.keys() for r in records)
    assert any("shutting down" in r["msg"] for r in records)
    text = log_lines(start("-V"))
    assert text and not any(line.startswith("{") for line in text)


# --- --output-limit --------------------------------------------------------------------------


# Small replies, many of them: the session measures its output every few hundred replies, so
# the limit shows once one such batch is well below it; 80 KB of commands fit the server's
# receive buffer, so the client's send never waits.
BODY = 1000
PEEKS = 10_000


def slow_reader_peeks(port: int) -> socket.socket:
    """A client that pipelines PEEKS peeks of a BODY-byte job and then reads nothing."""
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    c.settimeout(TIMEOUT)
    c.connect(("127.0.0.1", port))
    c.sendall(b"peek 1\r\n" * PEEKS)
    return c


def peeks_executed(port: int) -> int:
    return int(stats(port)["cmd-peek"])


def settle(port: int) -> int:
    """cmd-peek once it stopped moving (the server stopped reading the slow client)."""
    last = -1
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = peeks_executed(port)
        if now == last:
            return now
        last = now
    pytest.fail(f"cmd-peek still moving after {TIMEOUT}s: {last}")


def test_output_limit_stops_reading_a_client_that_does_not_read(start: Start) -> None:
    srv = start("--output-limit", "16384")
    with connect(srv.port) as c:
        assert call(c, b"put 0 0 60 %d\r\n" % BODY + b"x" * BODY + b"\r\n") == b"INSERTED 1\r\n"
    slow = slow_reader_peeks(srv.port)
    try:
        executed = settle(srv.port)  # the stats connection is served meanwhile
        # What runs is what the kernel's socket buffers absorb (~3 MB here) plus the limit.
        # Measured side by side on this machine: --output-limit 16384 -> ~2 800 peeks, the
        # 4 MB default (the flag not applied) -> ~8 300, --output-limit 0 -> all 10 000.
        assert 0 < executed < PEEKS // 2, executed
        # Catching up: once the client reads, the rest of its commands run.
        got = 0
        slow.settimeout(TIMEOUT)
        expected = PEEKS * (len(b"FOUND 1 %d\r\n" % BODY) + BODY + 2)
        while got < expected:
            chunk = slow.recv(1 << 20)
            assert chunk, f"EOF after {got} of {expected} bytes"
            got += len(chunk)
        assert peeks_executed(srv.port) == PEEKS
    finally:
        slow.close()


# --- LISTEN_FDS (systemd socket activation) --------------------------------------------------


ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"


def test_socket_activation_serves_on_the_inherited_socket(tmp_path: Path) -> None:
    require(os.access(ACTIVATE, os.X_OK), "systemd-socket-activate (Debian: systemd)")
    port, ignored_port = free_port(), free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                ACTIVATE,
                "-l",
                f"127.0.0.1:{port}",
                sys.executable,
                "-m",
                "beanstalk_py",
                "-V",
                "-l",
                "127.0.0.2",
                "-p",
                str(ignored_port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            **ours_process(),
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:  # systemd-socket-activate binds, then runs the server on first connect
            try:
                c = connect(port)
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
        with c:
            reply = call(c, b"put 0 0 60 2\r\nhi\r\n")
            assert reply == b"INSERTED 1\r\n", log.read_text()
        # A second connection: the server accepts on the inherited socket itself.
        with connect(port) as c2:
            assert call(c2, b"peek 1\r\n") == b"FOUND 1 2\r\n"
        # -l/-p were ignored: nothing listens there.
        with pytest.raises(OSError):
            connect(ignored_port, "127.0.0.2").close()
        text = log.read_text()
        assert "inherited listen fd; ignoring option: -l 127.0.0.2" in text, text
        assert f"inherited listen fd; ignoring option: -p {ignored_port}" in text, text
        assert "Traceback" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT)
    assert proc.returncode == 0, log.read_text()
    assert re.search(r"shutting down", log.read_text())
