"""Start beanstalk servers as subprocesses for black-box tests.

``ServerProcess`` runs any argv template (the reference ``/usr/bin/beanstalkd`` or
``python -m beanstalk_py``) on a free loopback port or a UNIX socket, waits until it accepts
connections, and always terminates and reaps it. Placeholders in the template: ``{host}``,
``{port}``, ``{unix}`` (the socket path) and ``{listen}`` (``host`` or ``unix:PATH``).

Every process that imports beanstalk_py starts the build under test: ``ours_env()`` /
``ours_cwd()`` / ``ours_process()`` put ``package_root()`` (the working tree, or the installed
compiled build under ``.ci/test-compiled``) first.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import IO, Any

REFERENCE_BIN = "/usr/bin/beanstalkd"
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_PATH_ENV = "BEANSTALK_PY_TEST_PYTHONPATH"
HOST = "127.0.0.1"
START_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0

# Every live child, so that an interpreter exit never leaves one behind.
_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
        _LIVE.discard(proc)


atexit.register(_kill_leftovers)


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (bind port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def reference_available() -> bool:
    return os.access(REFERENCE_BIN, os.X_OK)


@cache
def reference_version() -> tuple[int, ...]:
    """Version of the installed reference, e.g. (1, 12); () if unknown."""
    if not reference_available():
        return ()
    try:
        out = subprocess.run(
            [REFERENCE_BIN, "-v"], capture_output=True, timeout=5, check=False
        ).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return ()
    m = re.search(r"(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else ()


def reference_argv(*extra: str) -> list[str]:
    return [REFERENCE_BIN, "-l", "{listen}", "-p", "{port}", *extra]


def ours_argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "beanstalk_py", "-l", "{listen}", "-p", "{port}", *extra]


def package_root() -> str:
    """The directory whose ``beanstalk_py`` is under test.

    ``.ci/test-compiled`` names the installed (mypyc-compiled) build in
    ``BEANSTALK_PY_TEST_PYTHONPATH``; otherwise it is this working tree.
    """
    return os.environ.get(PACKAGE_PATH_ENV) or str(REPO_ROOT)


def ours_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a process that imports beanstalk_py: the package under test first on
    PYTHONPATH (``base`` defaults to ``os.environ``)."""
    env = dict(os.environ if base is None else base)
    root = package_root()
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *rest])
    return env


def ours_cwd() -> str:
    """Working directory for such a process. ``python -m`` and ``python -c`` put the working
    directory first on sys.path, so it must not hold a different beanstalk_py (the source
    tree, under the compiled run)."""
    return package_root()


def ours_process() -> dict[str, Any]:
    """``subprocess.Popen(argv, **ours_process())``: env and cwd that start the build under test."""
    return {"env": ours_env(), "cwd": ours_cwd()}


def short_unix_path(name: str = "bs.sock") -> str:
    """A fresh UNIX socket path short enough for sun_path (<= 107 bytes)."""
    d = tempfile.mkdtemp(prefix="bspy-")
    return os.path.join(d, name)


class ServerError(RuntimeError):
    pass


class ServerProcess:
    """One server subprocess. Use as a context manager, or call ``start()`` / ``stop()``."""

    def __init__(
        self,
        argv_template: Sequence[str],
        *,
        host: str = HOST,
        unix_path: str | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.argv_template = list(argv_template)
        self.host = host
        self.unix_path = unix_path
        self.port = 0
        self.cwd = cwd if cwd is not None else ours_cwd()  # never a stray beanstalk_py
        self.env = env
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.argv: list[str] = []
        self._last_output = ""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ServerProcess:
        last_error: Exception | None = None
        for _ in range(3):  # a free port may be taken between probing and binding: retry
            self.port = 0 if self.unix_path else free_port(self.host)
            try:
                self._spawn()
                return self
            except ServerError as exc:
                last_error = exc
                self.stop()
                if self.unix_path:
                    break
        raise ServerError(str(last_error))

    def _format(self) -> list[str]:
        listen = f"unix:{self.unix_path}" if self.unix_path else self.host
        values = {
            "host": self.host,
            "port": str(self.port),
            "unix": self.unix_path or "",
            "listen": listen,
        }
        return [arg.format(**values) for arg in self.argv_template]

    def _spawn(self) -> None:
        self.argv = self._format()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
        )
        _LIVE.add(self.proc)
        deadline = time.monotonic() + self.start_timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise ServerError(
                    f"server exited with {rc} before accepting connections: {self.argv}\n"
                    f"{self.output()}"
                )
            if self._listening():
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"server did not accept connections within {self.start_timeout}s: "
                    f"{self.argv}\n{self.output()}"
                )
            time.sleep(0.01)

    def _listening(self) -> bool:
        """True once *our* process has its socket in LISTEN state.

        Read from /proc so that readiness costs no connection (a fresh server must show
        ``total-connections: 1`` to its first client) and so that a socket of some other
        process that happens to sit on the same port is never mistaken for ours. Falls back
        to a probe connect where /proc is not available.
        """
        assert self.proc is not None
        if not Path("/proc/net/tcp").exists():
            return self._can_connect()
        inodes = set()
        if self.unix_path:
            for line in _read_lines("/proc/net/unix"):
                parts = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening
                if len(parts) >= 8 and parts[7] == self.unix_path and parts[3] == "00010000":
                    inodes.add(parts[6])
        else:
            port_hex = f":{self.port:04X}"
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                for line in _read_lines(table):
                    parts = line.split()
                    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                    if len(parts) > 9 and parts[1].endswith(port_hex) and parts[3] == "0A":
                        inodes.add(parts[9])
        if not inodes:
            return False
        wanted = {f"socket:[{inode}]" for inode in inodes}
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return True
        except OSError:
            return False
        return False

    def _can_connect(self) -> bool:
        family = socket.AF_UNIX if self.unix_path else socket.AF_INET
        addr: str | tuple[str, int] = self.unix_path if self.unix_path else (self.host, self.port)
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(addr)
            except OSError:
                return False
            return True

    def output(self) -> str:
        """What the server printed so far (stdout and stderr); after ``stop()``, everything."""
        if self._log is None:
            return self._last_output
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> int | None:
        """Terminate (SIGTERM, then SIGKILL) and reap. Returns the exit status."""
        proc, self.proc = self.proc, None
        rc: int | None = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(STOP_TIMEOUT)
            rc = proc.returncode
            _LIVE.discard(proc)
        if self._log is not None:
            self._last_output = self.output()
            self._log.close()
            self._log = None
        return rc

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not running"
        return self.proc.pid

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None, "server not running"
        self.proc.send_signal(sig)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()[1:]
    except OSError:
        return []


def signal_delivered(pid: int, sig: int, timeout: float = 2.0) -> None:
    """Wait until ``sig`` is no longer pending for ``pid`` (Linux /proc).

    For a C server whose handler only sets a flag (beanstalkd's SIGUSR1), delivery means the
    handler has run before the process executes anything else, so a command sent afterwards
    sees the new state. Falls back to a short sleep where /proc is not available.
    """
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        time.sleep(0.1)
        return
    bit = 1 << (sig - 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = 0
        for line in status.read_text().splitlines():
            if line.startswith(("SigPnd:", "ShdPnd:")):
                pending |= int(line.split()[1], 16)
        if not pending & bit:
            return
        time.sleep(0.005)
    raise ServerError(f"signal {sig} still pending for pid {pid} after {timeout}s")


@contextlib.contextmanager
def running(
    argv_template: Sequence[str], *, unix_path: str | None = None, **kwargs: object
) -> Iterator[ServerProcess]:
    """``with running(reference_argv("-z", "10")) as srv: ... srv.host, srv.port``."""
    srv = ServerProcess(argv_template, unix_path=unix_path, **kwargs)  # type: ignore[arg-type]
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def drain_via_signal(srv: ServerProcess) -> None:
    """Put a reference server into drain mode the way an operator does (SIGUSR1)."""
    srv.send_signal(signal.SIGUSR1)
    signal_delivered(srv.pid, signal.SIGUSR1)


def remove_unix_dir(path: str | None) -> None:
    if path:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
