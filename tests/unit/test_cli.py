"""The command line: beanstalkd's flags and exit codes, and clear errors without tracebacks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beanstalk_py import __version__
from beanstalk_py.app.cli import _fsync_after_no_fsync, command
from beanstalk_py.shell.build_info import core_kind

SERVER = [sys.executable, "-m", "beanstalk_py"]


def parse(*args: str) -> dict[str, object]:
    ctx = command.make_context("beanstalk-py", list(args))
    return dict(ctx.params)


def config_for(*args: str):  # type: ignore[no-untyped-def]
    from beanstalk_py.app.cli import build_config

    return build_config(parse(*args))


def run(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_clustered_and_attached_flags(tmp_path: Path) -> None:
    cfg = config_for("-VVb", str(tmp_path), "-f0", "-p11301", "-z", "100", "-s", "4096")
    assert cfg.verbose == 2
    assert cfg.binlog_dir == tmp_path
    assert cfg.fsync_ms == 0
    assert cfg.port == 11301
    assert cfg.max_job_size == 100
    assert cfg.binlog_size == 4096


def test_listen_forms() -> None:
    assert config_for("-l", "unix:/tmp/x.sock").unix_path == "/tmp/x.sock"
    assert config_for("-l", "::1").host == "::1"
    assert config_for("-l", "[::1]").host == "::1"
    assert config_for("-l", "localhost").host == "localhost"
    assert config_for().host is None and config_for().port == 11300


def test_f_and_capital_f_apply_in_order() -> None:
    assert _fsync_after_no_fsync(["-F", "-f", "10"]) is True
    assert _fsync_after_no_fsync(["-f", "10", "-F"]) is False
    assert _fsync_after_no_fsync(["-Ff10"]) is True
    assert _fsync_after_no_fsync(["-b", "F", "-F"]) is False


def test_version_and_help() -> None:
    out = run("-v")
    assert out.returncode == 0 and out.stdout.startswith("beanstalk-py ")
    out = run("-h")
    assert out.returncode == 0 and "-b, --binlog-dir DIR" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-x"], "No such option"),
        (["-p"], "requires an argument"),
        (["-z", "10k"], "invalid size: 10k"),
        (["-p", "http"], "invalid port"),
        (["-p", "65536"], "invalid port"),
        (["-p", "65536", "--no-http"], "invalid port"),
        (["-b", "/nonexistent/dir"], "does not exist"),
        (["stray"], "unexpected extra argument"),
        (["--node-id", "a"], "--node-id needs --cluster"),
        (["--cluster", "http://h:1/p", "--node-id", "a", "--advertise", "h:1"], "etcd://"),
        (["--cluster", "etcd://127.0.0.1:2379/p", "--advertise", "h:1"], "--node-id"),
        (["--cluster", "etcd://127.0.0.1:2379/p", "--node-id", "a"], "--advertise"),
        (
            ["--cluster", "etcd://127.0.0.1:2379/p", "--node-id", "a", "--advertise", "h"],
            "expected HOST:PORT",
        ),
        (
            [
                *("--cluster", "etcd://127.0.0.1:2379/p", "--node-id", "a"),
                *("--advertise", "h:1", "-z", "2000000"),
            ],
            "-z must be at most 1048576",
        ),
    ],
)
def test_usage_errors_exit_5_without_traceback(args: list[str], message: str) -> None:
    out = run(*args)
    assert out.returncode == 5
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_max_job_size_is_clamped_with_a_warning() -> None:
    cfg = config_for("-z", "99999999999")
    assert cfg.max_job_size == 1073741824


def test_version_and_verbose_start_say_which_core_runs() -> None:
    # The subprocess imports the same package as this test (source tree or compiled install).
    out = run("-v")
    assert f"(core: {core_kind()}," in out.stdout
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = run("-V", "-l", "127.0.0.1", "-p", str(busy.getsockname()[1]))
    assert f"beanstalk-py {__version__} (core: {core_kind()})" in out.stderr


def test_port_in_use_exits_111() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run("-l", "127.0.0.1", "-p", str(port))
    assert out.returncode == 111
    assert "cannot listen" in out.stderr and "Traceback" not in out.stderr


def test_unix_socket_replaces_a_stale_socket_but_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bq.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    proc = subprocess.Popen([*SERVER, "-l", f"unix:{path}"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as c:
                    c.settimeout(5)
                    c.connect(str(path))
                    c.sendall(b"list-tube-used\r\n")
                    assert c.recv(100) == b"USING default\r\n"
                break
            except (ConnectionRefusedError, FileNotFoundError):
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(5)
    regular = tmp_path / "file"
    regular.write_text("keep me")
    out = run("-l", f"unix:{regular}")
    assert out.returncode == 111 and "not a socket" in out.stderr
    assert regular.read_text() == "keep me"


def test_second_server_on_a_locked_binlog_dir_exits_10(tmp_path: Path) -> None:
    port = free_port()
    first = subprocess.Popen([*SERVER, "-l", "127.0.0.1", "-p", str(port), "-b", str(tmp_path)])
    try:
        deadline = time.monotonic() + 5
        while not (tmp_path / "lock").exists() or not any(tmp_path.glob("binlog.*")):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        out = run("-l", "127.0.0.1", "-p", str(free_port()), "-b", str(tmp_path))
        assert out.returncode == 10
        assert "lock" in out.stderr and "Traceback" not in out.stderr
    finally:
        first.terminate()
        assert first.wait(5) == 0


def test_c_and_n_are_accepted_with_a_warning() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*SERVER, "-c", "-n", "-l", "127.0.0.1", "-p", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    c.sendall(b"list-tube-used\r\n")  # a reply means startup is over
                    assert c.recv(100) == b"USING default\r\n"
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=5)
    assert "-c flag was removed" in err and "-n flag was removed" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_unknown_user_exits_33() -> None:
    out = run("-l", "127.0.0.1", "-p", str(free_port()), "-u", "no-such-user-xyz")
    assert out.returncode == 33 and "no such user" in out.stderr


def test_cluster_flags_reach_the_config() -> None:
    cfg = config_for(
        *("--cluster", "etcd://10.0.0.1:2379,10.0.0.2:2379/prod", "--node-id", "a"),
        *("--advertise", "10.0.0.1:11300", "--lease-ttl", "1"),
        *("--cluster-compact-bytes", "1000000"),
    )
    assert cfg.cluster == "etcd://10.0.0.1:2379,10.0.0.2:2379/prod"
    assert (cfg.node_id, cfg.advertise, cfg.lease_ttl) == ("a", "10.0.0.1:11300", 1)
    assert cfg.cluster_compact_bytes == 1_000_000
    assert config_for().cluster is None


def test_cluster_without_the_extra_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    # What a server installed without 'beanstalk-py[cluster]' sees: aetcd cannot be imported.
    monkeypatch.setitem(sys.modules, "aetcd", None)
    monkeypatch.delitem(sys.modules, "beanstalk_py.cluster.client", raising=False)
    with pytest.raises(click.UsageError, match=r"pip install 'beanstalk-py\[cluster\]'"):
        config_for("--cluster", "etcd://127.0.0.1:2379/p", "--node-id", "a", "--advertise", "h:1")
