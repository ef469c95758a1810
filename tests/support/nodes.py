"""Three real beanstalk-py nodes in cluster mode on 127.0.0.1, over a real etcd cluster.

Each node is ``python -m beanstalk_py -l 127.0.0.1 -p PORT -b DIR --cluster URL --node-id nI
--advertise 127.0.0.1:PORT --lease-ttl 1`` (the build under test, ``support.servers``). Roles
are read from each node's own ``/readyz`` (its body names the role), which never goes through
the relay.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.etcd import EtcdCluster
from support.servers import HOST, free_port, ours_process

LEASE_TTL = 1


@dataclass
class Node:
    name: str
    port: int
    binlog: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def http(self, path: str, timeout: float = 0.5) -> tuple[int, str]:
        """(status, body) of a GET on the node's own port; (0, "") if it does not answer."""
        try:
            with socket.create_connection(self.address, timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return 0, ""
        head, _, body = data.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return 0, ""
        return int(parts[1]), body.decode(errors="replace")

    def role(self) -> str:
        status, body = self.http("/readyz")
        return body.split(" ", 1)[0] if status else ""

    def metric(self, name: str) -> float | None:
        status, body = self.http("/metrics", timeout=2.0)
        if status != 200:
            return None
        for line in body.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None


@dataclass
class NodeCluster:
    etcd: EtcdCluster
    prefix: str
    root: Path
    nodes: list[Node] = field(default_factory=list)
    extra: tuple[str, ...] = ()

    @classmethod
    def start(cls, etcd: EtcdCluster, prefix: str, size: int = 3, *extra: str) -> NodeCluster:
        root = Path(tempfile.mkdtemp(prefix="bq-nodes-"))
        cluster = cls(etcd, prefix, root, extra=extra)
        for i in range(size):
            d = root / f"n{i}"
            d.mkdir()
            node = Node(f"n{i}", free_port(), d, root / f"n{i}.log")
            cluster.nodes.append(node)
            cluster.spawn(node)
        return cluster

    @property
    def url(self) -> str:
        return f"{self.etcd.url}/{self.prefix}"

    def argv(self, node: Node) -> list[str]:
        return [
            *("python", "-m", "beanstalk_py", "-l", HOST, "-p", str(node.port)),
            *("-b", str(node.binlog), "--cluster", self.url, "--node-id", node.name),
            *("--advertise", f"{HOST}:{node.port}", "--lease-ttl", str(LEASE_TTL)),
            "-V",
            *self.extra,
        ]

    def spawn(self, node: Node) -> None:
        import sys

        argv = self.argv(node)
        argv[0] = sys.executable
        out = open(node.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            node.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                **ours_process(),
            )  # fmt: skip
        finally:
            out.close()
        node.stopped = False

    def kill(self, node: Node) -> None:
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(10)

    def stop(self, node: Node) -> None:
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGSTOP)
        node.stopped = True

    def cont(self, node: Node) -> None:
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGCONT)
        node.stopped = False

    def leader(self, timeout: float = 15.0, exclude: Node | None = None) -> Node:
        """The node whose /readyz says leader (waiting for one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n is not exclude and n.running() and not n.stopped and n.role() == "leader":
                    return n
            time.sleep(0.02)
        raise AssertionError(f"no leader within {timeout:.1f} s:\n{self.logs()}")

    def followers_ready(self, timeout: float = 15.0) -> list[Node]:
        """Wait until every other running node is a follower that knows the leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            others = [n for n in self.nodes if n.running() and not n.stopped]
            states = [n.http("/readyz") for n in others]
            followers = [n for n, (st, body) in zip(others, states, strict=True)
                         if st == 200 and body.startswith("follower")]  # fmt: skip
            if len(followers) == len(others) - 1:
                return followers
            time.sleep(0.02)
        raise AssertionError("followers not ready:\n" + self.logs())

    def logs(self, tail: int = 3000) -> str:
        out = []
        for n in self.nodes:
            with contextlib.suppress(OSError):
                out.append(f"--- {n.name} ---\n" + n.log_path.read_text(errors="replace")[-tail:])
        return "\n".join(out)

    def close(self) -> None:
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                if n.stopped:
                    self.cont(n)
                n.proc.terminate()
        for n in self.nodes:
            if n.proc is not None:
                try:
                    n.proc.wait(5)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait(5)
