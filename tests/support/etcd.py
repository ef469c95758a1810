"""Three real etcd members on 127.0.0.1 for the cluster tests.

``EtcdCluster.start()`` launches ``etcd`` three times (free ports, data dirs on /dev/shm when
it exists so fsync is cheap, ``--heartbeat-interval 100 --election-timeout 500`` as
docs/CLUSTER.md recommends), waits until every member answers ``/health`` and one of them
reports itself raft leader. Members can be killed (SIGKILL), stopped (SIGSTOP), continued and
restarted on the same data dir. ``close()`` always kills every process and removes the dirs.

A missing ``etcd`` binary skips the test locally and fails it under ``CI=true``
(``support.requirements``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from support.requirements import require_binary

if TYPE_CHECKING:  # the cluster extra may be missing: only the type is needed here
    from beanstalk_py.cluster.client import EtcdClient

ETCD_REASON = "the cluster tests' consensus store (Debian: etcd-server)"
HEARTBEAT_MS = 100
ELECTION_MS = 500


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel just handed out (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _get(self, path: str, timeout: float) -> str | None:
        try:
            with urllib.request.urlopen(self.client_url + path, timeout=timeout) as resp:
                return str(resp.read().decode())
        except OSError:
            return None

    def healthy(self, timeout: float = 0.5) -> bool:
        body = self._get("/health", timeout)
        return body is not None and '"health":"true"' in body.replace(" ", "")

    def is_raft_leader(self, timeout: float = 0.5) -> bool:
        body = self._get("/metrics", timeout)
        return body is not None and "\netcd_server_is_leader 1" in body


@dataclass
class EtcdCluster:
    binary: str
    root: Path
    members: list[Member] = field(default_factory=list)
    token: str = "bq-test"

    @classmethod
    def start(cls, size: int = 3, *, base: str | None = None) -> EtcdCluster:
        """``size`` members; their data under ``base`` (default /dev/shm, so fsyncs are cheap;
        the cluster benchmark's --etcd-disk puts it on the binlog's file system)."""
        binary = require_binary("etcd", ETCD_REASON)
        if base is None and os.path.isdir("/dev/shm"):
            base = "/dev/shm"
        root = Path(tempfile.mkdtemp(prefix="bq-etcd-", dir=base))
        cluster = cls(binary=binary, root=root, token=f"bq-{root.name}")
        try:
            # Another process may grab a port between free_ports() and etcd's bind: retry then.
            for attempt in range(3):
                ports = free_ports(2 * size)
                cluster.members = [
                    Member(
                        name=f"m{i}",
                        client_port=ports[2 * i],
                        peer_port=ports[2 * i + 1],
                        data_dir=root / f"try{attempt}-m{i}",
                        log_path=root / f"try{attempt}-m{i}.log",
                    )
                    for i in range(size)
                ]
                for m in cluster.members:
                    cluster._spawn(m)
                if cluster.wait_healthy(timeout=15.0, raise_on_timeout=False):
                    return cluster
                cluster._kill_all()
            raise RuntimeError("etcd cluster did not become healthy:\n" + cluster.logs())
        except BaseException:
            cluster.close()
            raise

    # ---- process control -------------------------------------------------------------------

    def _spawn(self, m: Member) -> None:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        args = [
            self.binary,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip
        log = open(m.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            m.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        m.stopped = False

    def kill(self, m: Member) -> None:
        """SIGKILL, as a crashed host: no goodbye to the peers, the WAL is what was fsynced."""
        if m.proc is not None and m.proc.poll() is None:
            if m.stopped:
                os.kill(m.proc.pid, signal.SIGCONT)
            m.proc.kill()
            m.proc.wait(timeout=10)
        m.stopped = False

    def stop(self, m: Member) -> None:
        assert m.proc is not None
        os.kill(m.proc.pid, signal.SIGSTOP)
        m.stopped = True

    def cont(self, m: Member) -> None:
        assert m.proc is not None
        os.kill(m.proc.pid, signal.SIGCONT)
        m.stopped = False

    def restart(self, m: Member, *, wait: bool = True) -> None:
        self.kill(m)
        self._spawn(m)
        if wait:
            self.wait_healthy()

    def _kill_all(self) -> None:
        for m in self.members:
            with contextlib.suppress(Exception):
                self.kill(m)

    def close(self) -> None:
        self._kill_all()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- observation -----------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        """The ``--cluster`` form without prefix: ``etcd://h:p,h:p,h:p``."""
        return "etcd://" + ",".join(self.endpoints)

    def running_members(self) -> list[Member]:
        return [m for m in self.members if m.running and not m.stopped]

    def wait_healthy(self, timeout: float = 10.0, *, raise_on_timeout: bool = True) -> bool:
        """Every running, non-stopped member healthy and one of them raft leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = self.running_members()
            if live and all(m.healthy() for m in live) and self.raft_leader() is not None:
                return True
            time.sleep(0.05)
        if raise_on_timeout:
            raise AssertionError("etcd cluster not healthy in time:\n" + self.logs())
        return False

    def raft_leader(self) -> Member | None:
        for m in self.running_members():
            if m.is_raft_leader():
                return m
        return None

    def wait_raft_leader(self, timeout: float = 10.0, exclude: Member | None = None) -> Member:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.raft_leader()
            if leader is not None and leader is not exclude:
                return leader
            time.sleep(0.05)
        raise AssertionError("no etcd raft leader in time:\n" + self.logs())

    def logs(self, tail: int = 2000) -> str:
        parts = []
        for m in self.members:
            try:
                text = m.log_path.read_text(errors="replace")[-tail:]
            except OSError:
                text = "(no log)"
            parts.append(f"--- {m.name} ---\n{text}")
        return "\n".join(parts)


class ClientFactory(Protocol):
    """The ``etcd_client`` fixture: ``await etcd_client(cluster, order=[1, 2, 0])``."""

    def __call__(
        self, cluster: EtcdCluster, order: Sequence[int] | None = None, **kw: Any
    ) -> Awaitable[EtcdClient]: ...
