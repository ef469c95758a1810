"""Three real beanstalk-py nodes replicated through three real etcd members (issue 11).

Producers and consumers talk to every node (followers relay to the leader) while the leader is
killed (-9) or stopped (SIGSTOP beyond its lease), an etcd member dies, or a follower restarts.
What must hold, checked against what the clients were told:

* every acknowledged put (``INSERTED``) is there exactly once at the end, unless its delete was
  acknowledged; no acknowledged delete comes back; no job id is ever given to two bodies;
  bodies and priorities are intact;
* another node leads within a few seconds of the leader's death;
* a deposed leader acknowledges nothing after it lost leadership.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from support.etcd import EtcdCluster
from support.nodes import Node, NodeCluster

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def nodes(etcd_fresh: EtcdCluster, prefix: str) -> Iterator[NodeCluster]:
    cluster = NodeCluster.start(etcd_fresh, prefix)
    try:
        cluster.leader()
        cluster.followers_ready()
        yield cluster
    finally:
        cluster.close()


class Closed(Exception):
    """The connection ended before the reply: the outcome is unknown."""


class Client:
    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise Closed(str(exc)) from exc
            if not chunk:
                raise Closed("EOF")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _body(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise Closed(str(exc)) from exc
            if not chunk:
                raise Closed("EOF")
            self.buf += chunk
        body, self.buf = self.buf[:n], self.buf[n + 2 :]
        return body

    def ask(self, request: bytes) -> tuple[bytes, bytes | None]:
        try:
            self.sock.sendall(request)
        except OSError as exc:
            raise Closed(str(exc)) from exc
        line = self._line()
        words = line.split()
        if words and words[0] in (b"RESERVED", b"FOUND", b"OK"):
            return line, self._body(int(words[-1]))
        return line, None

    def put(self, body: bytes, pri: int = 100, delay: int = 0) -> bytes:
        return self.ask(b"put %d %d 60 %d\r\n%s\r\n" % (pri, delay, len(body), body))[0]


@dataclass
class Ledger:
    """What the clients were told, from every thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    inserted: dict[bytes, int] = field(default_factory=dict)  # body -> id (acknowledged)
    deleted: dict[int, bytes] = field(default_factory=dict)  # id -> body (acknowledged)
    # deletes whose reply never came (the node died): the job may or may not be gone
    maybe_deleted: dict[int, bytes] = field(default_factory=dict)
    seen: dict[int, bytes] = field(default_factory=dict)  # every id -> body a reply named
    reuse: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def saw(self, job_id: int, body: bytes) -> None:
        with self.lock:
            old = self.seen.setdefault(job_id, body)
            if old != body:
                self.reuse.append(f"id {job_id}: {old!r} and {body!r}")


def pri_of(body: bytes) -> int:
    return int(body.split(b"-")[2])


def producer(name: str, cluster: NodeCluster, ledger: Ledger, stop: threading.Event) -> None:
    rng = random.Random(name)
    client: Client | None = None
    for i in itertools.count():
        if stop.is_set():
            break
        if client is None:
            node = rng.choice([n for n in cluster.nodes if n.running() and not n.stopped])
            try:
                client = Client(node.address, timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
        pri = rng.randrange(0, 5000)
        body = b"%s-%d-%d-" % (name.encode(), i, pri) + b"x" * rng.randrange(0, 300)
        try:
            reply = client.put(body, pri)
        except Closed:
            client.close()
            client = None  # unknown outcome: the put may or may not be there
            continue
        if reply.startswith(b"INSERTED "):
            job_id = int(reply.split()[1])
            with ledger.lock:
                ledger.inserted[body] = job_id
            ledger.saw(job_id, body)
        else:
            with ledger.lock:
                ledger.errors.append(f"put: {reply!r}")
    if client is not None:
        client.close()


def consumer(name: str, cluster: NodeCluster, ledger: Ledger, stop: threading.Event) -> None:
    rng = random.Random(name)
    client: Client | None = None
    while not stop.is_set():
        if client is None:
            node = rng.choice([n for n in cluster.nodes if n.running() and not n.stopped])
            try:
                client = Client(node.address, timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
        try:
            line, body = client.ask(b"reserve-with-timeout 0\r\n")
            if not line.startswith(b"RESERVED"):
                time.sleep(0.005)
                continue
            assert body is not None
            job_id = int(line.split()[1])
            ledger.saw(job_id, body)
        except Closed:
            client.close()
            client = None
            continue
        try:
            reply, _ = client.ask(b"delete %d\r\n" % job_id)
        except Closed:
            with ledger.lock:
                ledger.maybe_deleted[job_id] = body
            client.close()
            client = None
            continue
        if reply == b"DELETED":
            with ledger.lock:
                ledger.deleted[job_id] = body
        else:
            with ledger.lock:
                ledger.errors.append(f"delete {job_id}: {reply!r}")
    if client is not None:
        client.close()


@contextlib.contextmanager
def workload(
    cluster: NodeCluster, ledger: Ledger, producers: int = 4, consumers: int = 2
) -> Iterator[None]:
    stop = threading.Event()
    threads = [
        threading.Thread(target=producer, args=(f"p{i}", cluster, ledger, stop))
        for i in range(producers)
    ] + [
        threading.Thread(target=consumer, args=(f"c{i}", cluster, ledger, stop))
        for i in range(consumers)
    ]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a client thread hung"


def drain(node: Node, ledger: Ledger) -> dict[bytes, int]:
    """Every job left, from the leader: body -> id (asserting no body twice), pri checked."""
    left: dict[bytes, int] = {}
    client = Client(node.address)
    try:
        while True:
            line, body = client.ask(b"reserve-with-timeout 0\r\n")
            if line == b"TIMED_OUT":
                return left
            assert line.startswith(b"RESERVED"), line
            assert body is not None
            job_id = int(line.split()[1])
            ledger.saw(job_id, body)
            assert body not in left, f"{body!r} twice: ids {left[body]} and {job_id}"
            left[body] = job_id
            _, yaml = client.ask(b"stats-job %d\r\n" % job_id)
            assert yaml is not None and f"pri: {pri_of(body)}\n".encode() in yaml, yaml
            assert client.ask(b"delete %d\r\n" % job_id)[0] == b"DELETED"
    finally:
        client.close()


def check(ledger: Ledger, left: dict[bytes, int]) -> None:
    assert not ledger.reuse, ledger.reuse[:5]
    assert not ledger.errors, ledger.errors[:5]
    deleted_bodies = {body: job_id for job_id, body in ledger.deleted.items()}
    back = [body for body in left if body in deleted_bodies]
    assert not back, f"{len(back)} acknowledged deletes came back: {back[:3]}"
    maybe = set(ledger.maybe_deleted.values())
    lost = [
        b for b in ledger.inserted if b not in left and b not in deleted_bodies and b not in maybe
    ]
    assert not lost, f"{len(lost)} acknowledged puts lost: {lost[:3]}"
    for body, job_id in ledger.inserted.items():
        if body not in maybe:
            assert left.get(body, deleted_bodies.get(body)) == job_id, body


def wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------


def test_a_follower_relays_to_the_leader_and_reports_its_role(nodes: NodeCluster) -> None:
    leader = nodes.leader()
    followers = [n for n in nodes.nodes if n is not leader]
    a = Client(followers[0].address)
    b = Client(followers[1].address)
    try:
        reply = a.put(b"through-a-1-7", pri=7)
        assert reply.startswith(b"INSERTED "), reply
        job_id = int(reply.split()[1])
        line, body = b.ask(b"reserve-with-timeout 5\r\n")
        assert (line, body) == (b"RESERVED %d 13" % job_id, b"through-a-1-7")
        # stats go to the leader too: its role shows in the extra fields
        _, yaml = b.ask(b"stats\r\n")
        assert yaml is not None and b"cluster-role: leader\n" in yaml, yaml
        assert f"cluster-node: {leader.name}\n".encode() in yaml
        assert b.ask(b"delete %d\r\n" % job_id)[0] == b"DELETED"
    finally:
        a.close()
        b.close()
    # Every node answers its own /readyz and /metrics (never relayed)
    for n in followers:
        status, text = n.http("/readyz")
        assert status == 200 and text.startswith(f"follower {n.name} leader={leader.name}")
    wait_until(
        lambda: all(n.metric("beanstalkd_cluster_lag_batches") == 0 for n in followers),
        10,
        "followers to apply every batch",
    )
    assert leader.metric("beanstalkd_cluster_epoch") == followers[0].metric(
        "beanstalkd_cluster_epoch"
    )
    assert followers[0].metric("beanstalkd_cluster_relayed_connections_accepted_total") == 1
    assert followers[0].metric("beanstalkd_cluster_relayed_connections") == 0  # a is closed


def test_kill_9_of_the_leader_under_load_loses_nothing_acknowledged(
    nodes: NodeCluster,
) -> None:
    ledger = Ledger()
    failovers: list[float] = []
    with workload(nodes, ledger):
        for _ in range(2):
            time.sleep(1.5)
            old = nodes.leader()
            t0 = time.monotonic()
            nodes.kill(old)
            new = nodes.leader(exclude=old)
            failovers.append(time.monotonic() - t0)
            nodes.spawn(old)  # it comes back as a follower
            time.sleep(1.0)
        time.sleep(1.0)
    leader = nodes.leader()
    left = drain(leader, ledger)
    check(ledger, left)
    assert len(ledger.inserted) > 200, "the workload barely ran"
    assert max(failovers) < 5.0, failovers
    print(f"failover after kill -9 (s): {[round(f, 2) for f in failovers]}")
    assert new is not None


def test_a_stopped_leader_acknowledges_nothing_after_losing_leadership(
    nodes: NodeCluster,
) -> None:
    old = nodes.leader()
    direct = Client(old.address, timeout=20)
    try:
        assert direct.put(b"before-0-1", 1).startswith(b"INSERTED")
        nodes.stop(old)
        # Sent while it is stopped: it reads this only after SIGCONT, when it is deposed.
        direct.sock.sendall(b"put 1 0 60 9\r\nafter-0-1\r\n")
        new = nodes.leader(exclude=old, timeout=15)
        nodes.cont(old)
        try:
            answer = direct._line()
        except Closed:
            answer = b""
        assert not answer.startswith(b"INSERTED"), answer
    finally:
        direct.close()
    # The new leader has the job acknowledged before the stop and not the other one.
    client = Client(new.address)
    try:
        reserved, body = client.ask(b"reserve-with-timeout 0\r\n")
        assert body == b"before-0-1", (reserved, body)
        assert client.ask(b"reserve-with-timeout 0\r\n")[0] == b"TIMED_OUT"
    finally:
        client.close()
    # ... and the old one comes back as a follower
    wait_until(lambda: old.role() == "follower", 20, "the deposed leader to follow")


def test_a_restarted_follower_catches_up_and_can_take_over(nodes: NodeCluster) -> None:
    leader = nodes.leader()
    follower = next(n for n in nodes.nodes if n is not leader)
    nodes.kill(follower)
    client = Client(leader.address)
    ids = []
    try:
        for i in range(300):
            reply = client.put(b"catch-%d-5-" % i + b"y" * 1000, 5)
            ids.append(int(reply.split()[1]))
        for job_id in ids[:100]:
            assert client.ask(b"delete %d\r\n" % job_id)[0] == b"DELETED"
    finally:
        client.close()
    nodes.spawn(follower)
    wait_until(
        lambda: follower.metric("beanstalkd_current_jobs_ready") == 200,
        20,
        "the restarted follower to hold the 200 live jobs",
    )
    # Kill every other node: the caught-up follower must be able to lead with all of them.
    for n in nodes.nodes:
        if n is not follower:
            nodes.kill(n)
    assert nodes.leader(timeout=15) is follower
    ledger = Ledger()
    left = drain(follower, ledger)
    assert sorted(left.values()) == ids[100:]
    # and new ids continue above every id handed out before
    client = Client(follower.address)
    try:
        reply = client.put(b"new-0-1", 1)
        assert int(reply.split()[1]) > ids[-1]
    finally:
        client.close()


def test_a_follower_started_under_load_catches_up_without_restarting(
    nodes: NodeCluster,
) -> None:
    """Its catch-up spans several pages of the log while producers keep appending: the
    watch after the pages must start where they were read, or it finds a hole and the node
    restarts (and, under steady load, rebuilds from the whole log again and again)."""
    leader = nodes.leader()
    follower = next(n for n in nodes.nodes if n is not leader)
    nodes.kill(follower)
    client = Client(leader.address)
    try:
        for i in range(150):  # one batch each: several catch-up pages (PAGE_KEYS)
            client.put(b"early-%d-7-" % i, 7)
    finally:
        client.close()
    offset = follower.log_path.stat().st_size
    ledger = Ledger()
    with workload(nodes, ledger, producers=4, consumers=0):
        time.sleep(0.3)
        nodes.spawn(follower)
        wait_until(lambda: follower.role() == "follower", 20, "the follower to start")
        time.sleep(2.0)
    ready = leader.metric("beanstalkd_current_jobs_ready")
    wait_until(
        lambda: follower.metric("beanstalkd_current_jobs_ready") == ready,
        20,
        f"the follower to hold the leader's {ready} jobs",
    )
    with follower.log_path.open("rb") as f:
        f.seek(offset)
        since = f.read().decode(errors="replace")
    assert since.count("listening on") == 1, nodes.logs()
    assert "restarting" not in since, since[-3000:]
    assert len(ledger.inserted) > 50  # the producers did keep appending


def test_kill_9_of_the_etcd_raft_leader_under_load_loses_nothing(
    nodes: NodeCluster,
) -> None:
    ledger = Ledger()
    etcd = nodes.etcd
    with workload(nodes, ledger):
        time.sleep(1.5)
        member = etcd.wait_raft_leader()
        etcd.kill(member)
        etcd.wait_raft_leader(exclude=member)
        time.sleep(2.0)
        before = len(ledger.inserted)
        time.sleep(1.5)
        assert len(ledger.inserted) > before, "writes did not resume after the etcd failover"
        etcd.restart(member)
        time.sleep(1.0)
    left = drain(nodes.leader(), ledger)
    check(ledger, left)


def test_a_follower_behind_a_compacted_log_rebuilds_from_it(
    etcd_fresh: EtcdCluster, prefix: str
) -> None:
    # Compaction after every 20 KB: the log is compacted many times while a follower is down.
    cluster = NodeCluster.start(etcd_fresh, prefix, 3, "--cluster-compact-bytes", "20000")
    try:
        leader = cluster.leader()
        cluster.followers_ready()
        follower = next(n for n in cluster.nodes if n is not leader)
        cluster.kill(follower)
        client = Client(leader.address)
        kept: list[int] = []
        try:
            for i in range(400):
                reply = client.put(b"compact-%d-9-" % i + b"z" * 500, 9)
                job_id = int(reply.split()[1])
                if i % 4:
                    assert client.ask(b"delete %d\r\n" % job_id)[0] == b"DELETED"
                else:
                    kept.append(job_id)
                if i % 100 == 99:
                    time.sleep(1.2)  # the leader checks the log's size once a second
        finally:
            client.close()
        wait_until(
            lambda: (leader.metric("beanstalkd_cluster_log_compactions_total") or 0) >= 2,
            10,
            "compactions",
        )
        cluster.spawn(follower)
        wait_until(
            lambda: follower.metric("beanstalkd_current_jobs_ready") == len(kept),
            20,
            "the follower to rebuild the 100 live jobs from the compacted log",
        )
        for n in cluster.nodes:
            if n is not follower:
                cluster.kill(n)
        assert cluster.leader(timeout=15) is follower
        left = drain(follower, Ledger())
        assert sorted(left.values()) == kept
    finally:
        cluster.close()


def test_clients_connected_before_any_leader_is_known_are_served(
    etcd_fresh: EtcdCluster, prefix: str
) -> None:
    cluster = NodeCluster.start(etcd_fresh, prefix)
    clients: list[Client] = []
    try:
        for node in cluster.nodes:  # as soon as each listens, before roles are settled
            deadline = time.monotonic() + 15
            while True:
                try:
                    clients.append(Client(node.address, timeout=20))
                    break
                except OSError:
                    assert time.monotonic() < deadline, cluster.logs()
                    time.sleep(0.005)
        for i, client in enumerate(clients):
            reply = client.put(b"early-%d-3" % i, 3)
            assert reply.startswith(b"INSERTED "), (reply, cluster.logs())
        leader = cluster.leader()
        left = drain(leader, Ledger())
        assert sorted(left) == [b"early-%d-3" % i for i in range(3)]
    finally:
        for client in clients:
            client.close()
        cluster.close()


def test_sigterm_of_the_leader_hands_over_at_once_and_keeps_the_jobs(
    etcd_fresh: EtcdCluster, prefix: str
) -> None:
    # A 5 s lease: a successor that had to wait for it to expire would take 5 s or more.
    nodes = NodeCluster.start(etcd_fresh, prefix, 3, "--lease-ttl", "5")
    try:
        leader = nodes.leader()
        nodes.followers_ready()
        client = Client(leader.address)
        try:
            assert client.put(b"kept-0-2", 2).startswith(b"INSERTED")
        finally:
            client.close()
        assert leader.proc is not None
        leader.proc.terminate()
        assert leader.proc.wait(10) == 0
        # It resigned (revoked its lease): the successor did not wait for the TTL.
        successor = nodes.leader(exclude=leader, timeout=3.0)
        left = drain(successor, Ledger())
        assert list(left) == [b"kept-0-2"]
    finally:
        nodes.close()


def test_a_follower_promoted_before_its_local_fsync_answers_at_once(
    etcd_fresh: EtcdCluster, prefix: str
) -> None:
    # -f 5000: a follower has written the applied batches to its local binlog but not fsynced
    # them when it wins. Group commit's turn numbers of that binlog must not leak into the
    # new journal's (a reply held for a turn that never comes: the node hung, spinning).
    nodes = NodeCluster.start(etcd_fresh, prefix, 3, "-f", "5000")
    try:
        old = nodes.leader()
        nodes.followers_ready()
        client = Client(old.address)
        try:
            assert client.put(b"one-0-4", 4).startswith(b"INSERTED")
        finally:
            client.close()
        wait_until(
            lambda: all(
                n.metric("beanstalkd_current_jobs_ready") == 1 for n in nodes.nodes if n is not old
            ),
            10,
            "the followers to apply the put",
        )
        nodes.kill(old)
        new = nodes.leader(exclude=old)
        client = Client(new.address, timeout=5)
        try:
            line, body = client.ask(b"list-tubes\r\n")
            assert line.startswith(b"OK") and body == b"---\n- default\n", (line, body)
            assert client.put(b"two-0-4", 4).startswith(b"INSERTED")
        finally:
            client.close()
    finally:
        nodes.close()


def test_a_deposed_leader_hands_out_no_job_after_its_lease_lapsed(nodes: NodeCluster) -> None:
    # A reserve changes nothing in the log, so only the leader's own check of its lease
    # (Server.fence) keeps the old leader from giving out a job the new leader also has.
    old = nodes.leader()
    direct = Client(old.address, timeout=20)
    try:
        assert direct.put(b"once-0-1", 1).startswith(b"INSERTED")
        nodes.stop(old)
        direct.sock.sendall(b"reserve-with-timeout 0\r\n")
        nodes.leader(exclude=old, timeout=15)
        nodes.cont(old)
        try:
            answer = direct._line()
        except Closed:
            answer = b""
        assert not answer.startswith(b"RESERVED"), answer
    finally:
        direct.close()
