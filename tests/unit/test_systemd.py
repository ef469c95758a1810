"""Tests for beanstalk_py.app.systemd with real sockets and real fd inheritance.

Socket activation is exercised in a child interpreter: the test passes real sockets to it, the
child moves them onto fds 3, 4, ... (as systemd does), sets LISTEN_PID/LISTEN_FDS and reports
what listen_fds() saw as JSON. Notification is checked against an AF_UNIX datagram socket the
test binds itself, both on a path and in the abstract namespace.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.requirements import require_binary
from support.servers import ours_env

from beanstalk_py.app import systemd

CHILD_TIMEOUT = 20.0

# Runs in the child. argv: comma-separated source fds, mode.
CHILD = r"""
import fcntl, json, os, socket, sys

sources = [int(fd) for fd in sys.argv[1].split(",") if fd]
mode = sys.argv[2]
# Park the fds high first, so moving them onto 3, 4, ... cannot clobber one another.
parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100 + i) for i, fd in enumerate(sources)]
for fd in sources:
    os.close(fd)
for i, fd in enumerate(parked):
    os.dup2(fd, 3 + i)
    os.close(fd)

pid = os.getpid() + (1 if mode == "wrong-pid" else 0)
os.environ["LISTEN_PID"] = str(pid)
os.environ["LISTEN_FDS"] = str(len(sources))
os.environ["LISTEN_FDNAMES"] = ":".join("x" * len(sources))
if mode == "bad-count":
    os.environ["LISTEN_FDS"] = "two"

from beanstalk_py.app import systemd

def describe(sock):
    return {
        "fileno": sock.fileno(),
        "family": sock.family.name,
        "type": sock.type.name,
        "listening": sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
        "inheritable": sock.get_inheritable(),
        "addr": systemd.describe(sock),
    }

def fd_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True

out = {}
try:
    if mode == "inherited":
        sock, warnings = systemd.inherited_listener(["-l 0.0.0.0", "-p 11300"])
        out["socks"] = [] if sock is None else [describe(sock)]
        out["warnings"] = warnings
    else:
        socks = systemd.listen_fds()
        out["socks"] = [describe(s) for s in socks]
        if mode == "accept":
            # The parent queued one connection on the listener before starting us.
            socks[0].settimeout(10)
            conn, _ = socks[0].accept()
            conn.sendall(b"hello from fd 3")
            conn.close()
except systemd.InheritedSocketError as exc:
    out["error"] = str(exc)
out["env"] = {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
out["fds_open"] = [fd_open(3 + i) for i in range(len(sources))]
print(json.dumps(out))
"""


def run_child(fds: list[int], mode: str = "ok") -> dict[str, Any]:
    env = ours_env()
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(map(str, fds)), mode],
        pass_fds=fds,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(tmp_path / "beanstalk.sock"))
        sock.listen(8)
        yield sock


CLEARED = {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}


def test_detects_tcp_and_unix_listeners(
    tcp_listener: socket.socket, unix_listener: socket.socket, tmp_path: Path
) -> None:
    result = run_child([tcp_listener.fileno(), unix_listener.fileno()])
    assert "error" not in result
    port = tcp_listener.getsockname()[1]
    assert result["socks"] == [
        {
            "fileno": 3,
            "family": "AF_INET",
            "type": "SOCK_STREAM",
            "listening": 1,
            "inheritable": False,
            "addr": f"127.0.0.1:{port}",
        },
        {
            "fileno": 4,
            "family": "AF_UNIX",
            "type": "SOCK_STREAM",
            "listening": 1,
            "inheritable": False,
            "addr": f"unix:{tmp_path / 'beanstalk.sock'}",
        },
    ]
    assert result["env"] == CLEARED


def test_inherited_socket_accepts_connections(tcp_listener: socket.socket) -> None:
    with socket.create_connection(tcp_listener.getsockname(), timeout=5) as client:
        run_child([tcp_listener.fileno()], mode="accept")
        client.settimeout(5)
        assert client.recv(100) == b"hello from fd 3"


def test_ipv6_listener() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("::1", 0))
        except OSError:
            pytest.skip("::1 not available")
        sock.listen(1)
        port = sock.getsockname()[1]
        result = run_child([sock.fileno()])
    assert result["socks"][0]["family"] == "AF_INET6"
    assert result["socks"][0]["addr"] == f"[::1]:{port}"


def test_wrong_listen_pid_is_ignored_and_cleared(tcp_listener: socket.socket) -> None:
    result = run_child([tcp_listener.fileno()], mode="wrong-pid")
    assert result == {"socks": [], "env": CLEARED, "fds_open": [True]}


def test_bad_listen_fds_value(tcp_listener: socket.socket) -> None:
    result = run_child([tcp_listener.fileno()], mode="bad-count")
    assert "LISTEN_FDS='two'" in result["error"]
    assert result["env"] == CLEARED


def test_non_listening_tcp_socket_rejected(tcp_listener: socket.socket) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound_only:
        bound_only.bind(("127.0.0.1", 0))
        result = run_child([tcp_listener.fileno(), bound_only.fileno()])
    assert result["error"] == "inherited fd 4 is not a listening socket"
    assert "socks" not in result
    # Nothing was closed behind the caller's back, fd 3 included.
    assert result["fds_open"] == [True, True]
    assert result["env"] == CLEARED


def test_datagram_socket_rejected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        result = run_child([udp.fileno()])
    assert "expected SOCK_STREAM" in result["error"]


def test_non_socket_fd_rejected() -> None:
    read_end, write_end = os.pipe()
    try:
        result = run_child([read_end])
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result["error"].startswith("inherited fd 3 is not a socket")
    assert result["fds_open"] == [True]


def test_inherited_listener_uses_first_and_warns(
    tcp_listener: socket.socket, unix_listener: socket.socket
) -> None:
    result = run_child([unix_listener.fileno(), tcp_listener.fileno()], mode="inherited")
    assert [s["family"] for s in result["socks"]] == ["AF_UNIX"]
    assert result["warnings"] == [
        "inherited more than one listen socket; ignoring all but the first",
        "inherited listen fd; ignoring option: -l 0.0.0.0",
        "inherited listen fd; ignoring option: -p 11300",
    ]
    # The ignored second socket is closed in the child.
    assert result["fds_open"] == [True, False]


def test_listen_fds_without_variables_returns_empty() -> None:
    env: dict[str, str] = {"LISTEN_FDS": "1"}
    assert systemd.listen_fds(env) == []
    assert env == {}
    assert systemd.inherited_listener(["-l x"], environ={}) == (None, [])


def test_listen_fds_zero_fds() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}
    assert systemd.listen_fds(env) == []
    assert env == {}


@pytest.mark.parametrize("value", ["", "-1", "+5", " 5", "5x"])
def test_malformed_listen_pid(value: str) -> None:
    with pytest.raises(systemd.InheritedSocketError):
        systemd.listen_fds({"LISTEN_PID": value, "LISTEN_FDS": "1"})


def test_real_systemd_socket_activate(tmp_path: Path) -> None:
    """systemd's own tool passes the socket; our child accepts on it and answers."""
    require_binary("systemd-socket-activate", "socket activation (Debian: systemd)")
    path = tmp_path / "activate.sock"
    env = ours_env()
    script = (
        "from beanstalk_py.app import systemd\n"
        "sock, warnings = systemd.inherited_listener()\n"
        "sock.settimeout(10)\n"
        "conn, _ = sock.accept()\n"
        "conn.sendall(systemd.describe(sock).encode())\n"
        "conn.close()\n"
    )
    proc = subprocess.Popen(
        # -E: the tool passes the children no environment of its own accord, and the child
        # must import the package under test (not whatever the cwd or site-packages hold).
        [
            "systemd-socket-activate",
            "-l",
            str(path),
            "-E",
            f"PYTHONPATH={env['PYTHONPATH']}",
            sys.executable,
            "-c",
            script,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "socket never appeared"
            time.sleep(0.02)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(path))
            reply = b""
            while chunk := client.recv(200):
                reply += chunk
        assert reply == f"unix:{path}".encode()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()


# --- sd_notify -------------------------------------------------------------------------------


@pytest.fixture
def notify_path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"beanstalk-py-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def test_notify_path(notify_path_socket: socket.socket) -> None:
    assert systemd.ready() is True
    assert notify_path_socket.recv(4096) == b"READY=1"
    assert systemd.status("replaying binlog\nsecond line") is True
    assert notify_path_socket.recv(4096) == b"STATUS=replaying binlog second line"
    assert systemd.stopping() is True
    assert notify_path_socket.recv(4096) == b"STOPPING=1"
    # Unlike LISTEN_*, NOTIFY_SOCKET stays for later notifications.
    assert "NOTIFY_SOCKET" in os.environ


def test_notify_abstract(notify_abstract_socket: socket.socket) -> None:
    assert systemd.ready("12 jobs restored") is True
    assert notify_abstract_socket.recv(4096) == b"READY=1\nSTATUS=12 jobs restored"


def test_notify_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.ready() is False


@pytest.mark.parametrize("value", ["", "vsock:2:1234", "relative/path"])
def test_notify_unsupported_address(value: str) -> None:
    assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": value}) is False


def test_notify_missing_socket(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}
    assert systemd.notify("READY=1", environ=env) is False
