"""A follower's hot engine (replica/apply.py): the leader's batches applied to a live engine
give the state a restart of the leader would show, and what a binlog replay of the same
records gives. Real engines and binlogs, ManualClock; no mocks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.replica_helpers import Tee, open_binlog, replayed_engine, snapshot

from beanstalk_py.core.client import Client
from beanstalk_py.core.clock import ManualClock
from beanstalk_py.core.engine import Engine
from beanstalk_py.core.job import BURIED, DELAYED, READY, RESERVED
from beanstalk_py.protocol.session import Pending, Session
from beanstalk_py.replica.apply import Applier
from beanstalk_py.replica.batch import BadBatch, BatchRecorder, decode


class Cluster:
    """A leader engine journaling to a BatchRecorder and a real binlog, and a follower
    engine (on the same clock) applying the batches as they are taken."""

    def __init__(self, tmp: Path, *, follower_journal: bool = False) -> None:
        self.clock = ManualClock()
        self.rec = BatchRecorder(self.clock)
        self.leader_dir = tmp / "leader"
        self.binlog = open_binlog(self.leader_dir, self.clock)
        self.binlog.replay()
        self.leader = Engine(self.clock, Tee(self.rec, self.binlog), max_job_size=70000)
        self.pending = Pending()
        self.follower_dir = tmp / "follower"
        self.fbinlog = None
        if follower_journal:
            self.fbinlog = open_binlog(self.follower_dir, self.clock)
            self.fbinlog.replay()
        self.follower = Engine(self.clock, self.fbinlog, max_job_size=70000)
        self.applier = Applier(self.follower, self.clock)
        self.batches: list[bytes] = []

    def session(self) -> Session:
        return Session(self.leader, self.pending)

    def ship(self) -> None:
        """One loop iteration's records: one batch, applied on the follower."""
        batch = self.rec.take(self.leader.next_id)
        if batch is not None:
            self.batches.append(batch)
            self.applier.apply(batch)

    def restarted_leader(self) -> Engine:
        self.binlog.write_pending()
        self.binlog.close()
        return replayed_engine(self.leader_dir, self.clock)


def cmd(s: Session, line: bytes, body: bytes | None = None) -> bytes:
    s.feed(line + b"\r\n" + (body + b"\r\n" if body is not None else b""))
    return s.take_output()


def put(s: Session, pri: int, delay: int, body: bytes, ttr: int = 60) -> int:
    reply = cmd(s, b"put %d %d %d %d" % (pri, delay, ttr, len(body)), body)
    m = re.fullmatch(rb"INSERTED (\d+)\r\n", reply)
    assert m, reply
    return int(m.group(1))


def reserve(s: Session) -> int:
    reply = cmd(s, b"reserve-with-timeout 0")
    m = re.match(rb"RESERVED (\d+) ", reply)
    assert m, reply
    return int(m.group(1))


def stats_of(s: Session, line: bytes) -> dict[str, str]:
    reply = cmd(s, line).decode()
    return dict(row.split(": ", 1) for row in reply.splitlines() if ": " in row and row[0] != "-")


COUNTS = (
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
)


def test_follower_equals_a_restarted_leader(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    p, w = c.session(), c.session()
    cmd(w, b"watch emails")
    cmd(w, b"watch big")
    # several commands per batch
    cmd(p, b"use emails")
    e1 = put(p, 5, 0, b"e1")  # urgent
    e2 = put(p, 2000, 0, b"e2")
    put(p, 100, 30, b"e3")  # delayed
    cmd(p, b"use big")
    big = put(p, 3000, 0, bytes(range(256)) * 240)  # 60 KB, binary
    binary = put(p, 3000, 0, b"\x00\r\n\xff" * 10)
    c.ship()
    cmd(p, b"use default")
    d1 = put(p, 10, 10, b"d1")
    d2 = put(p, 10, 50, b"d2")
    late = put(p, 10, 200, b"late")
    u = put(p, 0, 0, b"u")
    c.ship()
    # one command per batch
    assert reserve(w) == u
    assert cmd(w, b"release %d 7 0" % u) == b"RELEASED\r\n"  # new pri, no delay
    c.ship()
    assert reserve(w) == e1
    assert cmd(w, b"release %d 2 20" % e1) == b"RELEASED\r\n"  # delay and new pri
    c.ship()
    assert reserve(w) == u
    assert cmd(w, b"bury %d 4000" % u) == b"BURIED\r\n"
    c.ship()
    assert reserve(w) == e2
    assert cmd(w, b"bury %d 1" % e2) == b"BURIED\r\n"
    c.ship()
    assert reserve(w) == big
    assert cmd(w, b"bury %d 3000" % big) == b"BURIED\r\n"
    c.ship()
    assert reserve(w) == binary
    assert cmd(w, b"touch %d" % binary) == b"TOUCHED\r\n"
    c.ship()  # nothing recorded
    # kick-job of a buried and of a delayed job; kick in a tube
    assert cmd(p, b"kick-job %d" % u) == b"KICKED\r\n"
    assert cmd(p, b"kick-job %d" % d2) == b"KICKED\r\n"
    c.ship()
    assert cmd(p, b"use big") == b"USING big\r\n"
    assert cmd(p, b"kick 1") == b"KICKED 1\r\n"
    c.ship()
    # reserve-job out of buried and out of delayed
    assert cmd(w, b"reserve-job %d" % e2).startswith(b"RESERVED")
    assert cmd(w, b"reserve-job %d" % d1).startswith(b"RESERVED")
    c.ship()
    # buried again, in an order unlike the ids'
    assert cmd(w, b"bury %d 50" % d1) == b"BURIED\r\n"
    assert cmd(w, b"bury %d 60" % e2) == b"BURIED\r\n"
    assert reserve(w) == d2
    assert cmd(w, b"bury %d 70" % d2) == b"BURIED\r\n"
    # put and delete in one batch; deletes from ready, buried, reserved
    gone = put(p, 1, 0, b"gone")
    assert cmd(p, b"delete %d" % gone) == b"DELETED\r\n"
    c.ship()
    cmd(p, b"use emails")
    extra = put(p, 9, 0, b"extra")
    assert reserve(w) == extra
    assert cmd(w, b"delete %d" % extra) == b"DELETED\r\n"
    c.ship()
    # a TTR expiry on the leader writes nothing: the follower keeps it ready all along
    c.clock.advance(61)
    c.leader.tick()
    c.follower.tick()
    assert c.leader.jobs[binary].state == READY and c.leader.jobs[binary].timeouts == 1
    assert c.follower.jobs[binary].state == READY and c.follower.jobs[binary].timeouts == 0

    assert c.applier.records_applied == sum(len(decode(b)[1]) for b in c.batches)
    assert c.applier.next_id == c.follower.next_id == c.leader.next_id
    # the follower is what a restart of the leader shows: the leader's state with reserved
    # jobs ready (reserves and timeouts are not recorded) ...
    assert snapshot(c.follower, counters=False) == snapshot(c.leader, counters=False)
    assert [j.state for j in c.follower.jobs.values()].count(RESERVED) == 0
    assert c.follower.default.buried and list(c.follower.default.buried) == [d1, d2]
    assert list(c.follower.tubes["emails"].buried) == [e2]
    # ... and exactly what a binlog replay of the leader's records restores
    restarted = c.restarted_leader()
    assert snapshot(c.follower) == snapshot(restarted)
    assert c.follower.jobs[big].body == bytes(range(256)) * 240 + b"\r\n"
    # no cmd-* counter moved; total-jobs counts the adopted puts
    assert c.follower.ops == [0] * len(c.follower.ops)
    assert c.follower.total_jobs == len(c.follower.jobs) + 2  # gone, extra
    assert c.follower.tubes["emails"].total_jobs == 4

    # what clients see: stats and stats-tube, once the leader's connections are gone
    p.close()
    w.close()
    fs, ls = Session(c.follower), Session(c.leader)
    assert sorted(c.follower.tubes) == sorted(c.leader.tubes) == ["big", "default", "emails"]
    for name in c.leader.tubes:
        f, lead = (
            stats_of(fs, b"stats-tube " + name.encode()),
            stats_of(ls, b"stats-tube " + name.encode()),
        )
        assert [f[k] for k in COUNTS] == [lead[k] for k in COUNTS], name
    f, lead = stats_of(fs, b"stats"), stats_of(ls, b"stats")
    assert [f[k] for k in (*COUNTS, "current-tubes")] == [
        lead[k] for k in (*COUNTS, "current-tubes")
    ]
    assert f["cmd-put"] == "0" and f["total-jobs"] == lead["total-jobs"] == "11"

    # delayed jobs become ready on the follower when its clock passes their time
    assert c.follower.jobs[late].state == DELAYED and c.follower.delayed_ct == 1
    assert cmd(fs, b"peek-delayed") == cmd(ls, b"peek-delayed") == b"FOUND %d 4\r\nlate\r\n" % late
    c.clock.advance(138)
    c.follower.tick()
    assert c.follower.jobs[late].state == DELAYED
    c.clock.advance(1)
    c.follower.tick()
    c.leader.tick()
    assert c.follower.jobs[late].state == READY and c.follower.delayed_ct == 0
    assert snapshot(c.follower, counters=False) == snapshot(c.leader, counters=False)
    # buried order is the leader's: kick takes the same jobs in the same order
    for name in ("default", "emails", "default"):
        for s in (fs, ls):
            cmd(s, b"use " + name.encode())
        assert cmd(fs, b"peek-buried") == cmd(ls, b"peek-buried")
        assert cmd(fs, b"kick 1") == cmd(ls, b"kick 1") == b"KICKED 1\r\n"
    assert not c.follower.buried_ct and not c.leader.buried_ct


# --- property: random operations, follower == binlog replay of the same records ----------

Op = tuple[str, int, int, int, int]


def op(name: str, *args: st.SearchStrategy[int]) -> st.SearchStrategy[Op]:
    """An operation and its four integer arguments (unused ones 0)."""
    padded = [*args, *[st.just(0)] * (4 - len(args))]
    return st.tuples(st.just(name), *padded)


PUT = op(
    "put",
    st.integers(0, 2),  # tube
    st.sampled_from([0, 5, 1023, 1024, 5000]),  # pri
    st.sampled_from([0, 0, 3, 40]),  # delay
    st.integers(0, 40),  # body length
)
RESERVE = op("reserve")
# puts, reserves and buries weigh more: most sequences have jobs to act on, buried ones
# several per tube
OPS = st.lists(
    st.one_of(
        PUT,
        PUT,
        PUT,
        PUT,
        RESERVE,
        RESERVE,
        op("reserve_bury", st.sampled_from([0, 3000])),
        op("reserve_bury", st.sampled_from([0, 3000])),
        op("release", st.integers(0, 50), st.sampled_from([0, 1, 2000])),
        op("release_delay", st.integers(0, 50), st.sampled_from([2, 30])),
        op("bury", st.integers(0, 50), st.sampled_from([0, 3000])),
        op("kick", st.integers(0, 2), st.integers(1, 3)),
        op("kick_job", st.integers(0, 50)),
        op("reserve_job", st.integers(0, 50)),
        op("touch", st.integers(0, 50)),
        op("delete", st.integers(0, 50)),
        op("disconnect"),
        op("advance", st.sampled_from([1, 5, 61])),
        op("ship"),
    ),
    min_size=40,
    max_size=120,
)
TUBES = ("default", "emails", "t-2")


def drive(c: Cluster, ops: list[Op]) -> None:
    """Run ``ops`` on the leader through its engine (as the protocol would), shipping
    batches where asked and at the end."""
    e = c.leader
    out: list[bytes] = []

    def connect() -> Client:
        client = e.connect(out.append, lambda head, job: out.append(head), lambda: None)
        for name in TUBES:
            e.watch(client, name)
        return client

    def pick(i: int, among: list[int]) -> int | None:
        return among[i % len(among)] if among else None

    client = connect()
    for kind, a, b, d, n in ops:
        ids = sorted(e.jobs)
        held = sorted(client.reserved)
        if kind == "put":
            e.use(client, TUBES[a])
            body = bytes((i * 37) % 256 for i in range(n)) + b"\r\n"
            e.put(client, e.new_job_id(client), b, d, 60, body)
        elif kind == "reserve":
            e.reserve(client, 0)
        elif kind == "reserve_bury":
            e.reserve(client, 0)
            for got in set(client.reserved) - set(held):
                e.bury(client, got, a)
        elif kind in ("release", "release_delay"):
            job_id = pick(a, held)
            if job_id is not None:
                if kind == "release":
                    e.release(client, job_id, b, 0)
                else:
                    e.release(client, job_id, 7, b)
        elif kind == "bury":
            job_id = pick(a, held)
            if job_id is not None:
                e.bury(client, job_id, b)
        elif kind == "kick":
            e.kick(e.tube(TUBES[a]), b)
        elif kind in ("kick_job", "reserve_job", "delete"):
            job_id = pick(a, ids)
            if job_id is None:
                continue
            if kind == "kick_job":
                e.kick_job(job_id)
            elif kind == "reserve_job":
                e.reserve_job(client, job_id)
            else:
                e.delete(client, job_id)
        elif kind == "touch":
            job_id = pick(a, held)
            if job_id is not None:
                e.touch(client, job_id)
        elif kind == "disconnect":
            e.disconnect(client)
            client = connect()
        elif kind == "advance":
            c.clock.advance(a)
            e.tick()
            c.follower.tick()
        elif kind == "ship":
            c.ship()
            # at every batch the follower shows the leader's state as a restart would
            assert snapshot(c.follower, counters=False) == snapshot(e, counters=False)
    c.ship()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_follower_equals_binlog_replay(
    tmp_path_factory: pytest.TempPathFactory, ops: list[Op]
) -> None:
    tmp = tmp_path_factory.mktemp("run")
    c = Cluster(tmp, follower_journal=True)
    drive(c, ops)
    c.follower.tick()
    restarted = c.restarted_leader()
    assert snapshot(c.follower) == snapshot(restarted)
    assert c.applier.next_id == restarted.next_id == c.leader.next_id
    # the follower's own binlog restores the same state (a complete local image)
    assert c.fbinlog is not None
    c.fbinlog.write_pending()
    c.fbinlog.close()
    assert snapshot(replayed_engine(c.follower_dir, c.clock)) == snapshot(c.follower)


# --- next_id, rejected batches, split batches, the follower's binlog ------------------------


def test_next_id_covers_every_id_the_leader_handed_out(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    s = c.session()
    a = put(s, 1, 0, b"a")
    b = put(s, 1, 0, b"b")
    assert cmd(s, b"delete %d" % b) == b"DELETED\r\n"  # put and deleted in the same batch
    c.ship()
    assert c.applier.next_id == c.follower.next_id == b + 1
    # ids whose every record was dropped (compaction): only the header knows them
    for _ in range(5):
        put(s, 1, 0, b"x")
    c.rec.take(0)  # those records never reach the follower
    cmd(s, b"kick-job %d" % a)  # not buried: no record, nothing pending
    assert not c.rec.pending
    put(s, 1, 0, b"last")
    last = c.leader.next_id - 1
    c.ship()
    assert last == b + 6
    assert sorted(c.follower.jobs) == [a, last]
    assert c.applier.next_id == c.follower.next_id == c.leader.next_id == last + 1
    # a batch whose header says more than its records: the header wins
    c.rec.put(c.leader.jobs[a])  # a re-append of a live job
    batch = c.rec.take(1000)
    assert batch is not None
    c.applier.apply(batch)
    assert c.applier.next_id == c.follower.next_id == 1000
    # ids never go back: an older header does not lower it
    c.rec.put(c.leader.jobs[a])
    batch = c.rec.take(5)
    assert batch is not None
    c.applier.apply(batch)
    assert c.applier.next_id == c.follower.next_id == 1000
    # ids seen count too, whatever the header says
    fresh = Applier(Engine(ManualClock()))
    c.rec.put(c.leader.jobs[last])
    batch = c.rec.take(1)
    assert batch is not None
    fresh.apply(batch)
    assert fresh.next_id == fresh.engine.next_id == last + 1
    # promotion: the follower's engine hands out ids above every one the leader used
    fs = Session(c.follower)
    assert cmd(fs, b"put 0 0 1 1", b"n") == b"INSERTED 1000\r\n"


def test_a_rejected_batch_leaves_the_follower_unchanged(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    s = c.session()
    first = put(s, 5, 0, b"first")
    put(s, 5, 0, b"second")
    c.ship()
    before = snapshot(c.follower)
    assert before["total"] == 2
    # a batch whose first records are fine and whose last one is damaged
    third = put(s, 1, 0, b"third")
    assert reserve(s) == third
    assert cmd(s, b"bury %d 1" % third) == b"BURIED\r\n"
    cmd(s, b"delete %d" % (first + 1))
    batch = c.rec.take(c.leader.next_id)
    assert batch is not None and len(decode(batch)[1]) == 3
    for i in (0, 7, 21, 30, len(batch) // 2, len(batch) - 1):
        bad = bytearray(batch)
        bad[i] ^= 0x01
        with pytest.raises(BadBatch):
            c.applier.apply(bytes(bad))
        assert snapshot(c.follower) == before
        assert c.applier.next_id == c.follower.next_id == first + 2
        assert c.applier.records_applied == 2 and c.applier.batches_applied == 1
    c.applier.apply(batch)  # the good copy still applies
    assert sorted(c.follower.jobs) == [first, third]
    assert c.follower.jobs[third].state == BURIED


def test_split_batches_apply_like_the_whole() -> None:
    clock = ManualClock()
    whole_rec, split_rec = BatchRecorder(clock), BatchRecorder(clock)
    leader = Engine(clock, Tee(whole_rec, split_rec), max_job_size=70000)
    s = Session(leader)
    cmd(s, b"watch other")
    ids = []
    for i, n in enumerate((10, 2000, 1, 60000, 90, 3, 1500, 700)):
        if i == 5:
            cmd(s, b"use other")
        ids.append(put(s, i % 3, 20 if i % 4 == 1 else 0, bytes([65 + i]) * n))
    r = reserve(s)
    assert cmd(s, b"bury %d 9" % r) == b"BURIED\r\n"
    r2 = reserve(s)
    assert cmd(s, b"release %d 5 30" % r2) == b"RELEASED\r\n"
    assert cmd(s, b"delete %d" % ids[2]) == b"DELETED\r\n"
    assert cmd(s, b"kick-job %d" % r) == b"KICKED\r\n"
    r3 = reserve(s)
    assert cmd(s, b"bury %d 9" % r3) == b"BURIED\r\n"
    whole = whole_rec.take(leader.next_id)
    limit = 62000
    parts = split_rec.take_all(leader.next_id, limit)
    assert whole is not None and len(parts) == 3 and all(len(p) <= limit for p in parts)
    one, split = Engine(ManualClock()), Engine(ManualClock())
    Applier(one).apply(whole)
    applier = Applier(split)
    for part in parts:
        applier.apply(part)
    assert snapshot(one) == snapshot(split)
    assert snapshot(split, counters=False) == snapshot(leader, counters=False)
    assert applier.records_applied == len(decode(whole)[1]) == 8 + 5
    assert applier.next_id == split.next_id == leader.next_id


def test_the_follower_s_binlog_restores_its_state(tmp_path: Path) -> None:
    c = Cluster(tmp_path, follower_journal=True)
    s = c.session()
    cmd(s, b"watch other")
    ids = [put(s, i % 3, 30 if i % 4 == 0 else 0, b"j%d" % i * 500) for i in range(12)]
    c.ship()
    r1, r2, r3 = reserve(s), reserve(s), reserve(s)
    assert cmd(s, b"bury %d 9" % r2) == b"BURIED\r\n"
    assert cmd(s, b"bury %d 8" % r1) == b"BURIED\r\n"
    assert cmd(s, b"release %d 3 5" % r3) == b"RELEASED\r\n"
    assert cmd(s, b"delete %d" % ids[5]) == b"DELETED\r\n"
    c.ship()
    assert cmd(s, b"kick-job %d" % ids[0]) == b"KICKED\r\n"  # delayed -> ready
    assert cmd(s, b"reserve-job %d" % r2).startswith(b"RESERVED")  # out of buried
    assert cmd(s, b"bury %d 1" % r2) == b"BURIED\r\n"
    cmd(s, b"use other")
    put(s, 1, 0, b"other")
    c.ship()
    assert c.fbinlog is not None
    c.fbinlog.write_pending()
    c.fbinlog.close()
    image = replayed_engine(c.follower_dir, c.clock)
    assert snapshot(image) == snapshot(c.follower)
    assert list(image.default.buried) == list(c.leader.default.buried) == [r1, r2]
    assert image.jobs[r3].state == DELAYED and image.jobs[ids[0]].state == READY
    assert image.next_id == c.follower.next_id


def test_a_delay_that_passed_before_the_batch_arrived_is_ready_at_once(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    s = c.session()
    job = put(s, 1, 5, b"late")
    batch = c.rec.take(c.leader.next_id)
    assert batch is not None
    c.clock.advance(6)  # the follower lags behind the job's ready time
    c.applier.apply(batch)
    assert c.follower.jobs[job].state == READY  # no tick needed
    assert (c.follower.ready_ct, c.follower.delayed_ct) == (1, 0)
    # a release with a delay that passed likewise
    c.leader.tick()
    assert reserve(s) == job
    assert cmd(s, b"release %d 2 3" % job) == b"RELEASED\r\n"
    batch = c.rec.take(c.leader.next_id)
    assert batch is not None
    c.clock.advance(4)
    c.applier.apply(batch)
    assert c.follower.jobs[job].state == READY and c.follower.jobs[job].pri == 2
    assert (c.follower.ready_ct, c.follower.delayed_ct, c.follower.urgent_ct) == (1, 0, 1)


def test_a_re_append_replaces_the_job_s_state(tmp_path: Path) -> None:
    """A FULL record of a known id (compaction copying a live job forward) carries its
    current state, even when the records in between were compacted away."""
    c = Cluster(tmp_path)
    s = c.session()
    a = put(s, 1, 0, b"a")
    b = put(s, 1, 0, b"b")
    c.ship()
    assert reserve(s) == a
    assert cmd(s, b"bury %d 5" % a) == b"BURIED\r\n"
    assert reserve(s) == b
    assert cmd(s, b"release %d 3000 50" % b) == b"RELEASED\r\n"
    c.rec.take(0)  # those UPDATE records never reach the follower
    job_a, job_b = c.leader.jobs[a], c.leader.jobs[b]
    c.rec.put(job_a)
    c.rec.put(job_b)
    c.ship()
    assert snapshot(c.follower, counters=False) == snapshot(c.leader, counters=False)
    assert c.follower.jobs[a].state == BURIED and c.follower.jobs[b].state == DELAYED
    assert c.follower.total_jobs == 2  # a re-append is not a new job
    # a FULL record with other contents for a known id replaces the job as a whole
    job_a.body = b"other\r\n"
    c.rec.put(job_a)
    c.ship()
    assert c.follower.jobs[a].body == b"other\r\n"
    assert c.follower.body_bytes == len(b"other\r\n") + len(b"b\r\n")
    assert c.follower.total_jobs == 2 and c.follower.buried_ct == 1


def test_a_snapshot_keeps_the_leader_s_bury_order(tmp_path: Path) -> None:
    """record_live_jobs (compaction's re-append of every live job) keeps each tube's bury
    order on a follower that holds the jobs and on one that starts from the snapshot."""
    c = Cluster(tmp_path)
    s = c.session()
    cmd(s, b"watch other")
    ids = [put(s, 1, 0, b"j%d" % i) for i in range(6)]
    cmd(s, b"use other")
    ids.append(put(s, 1, 0, b"o"))
    put(s, 1, 100, b"delayed")
    got = [reserve(s) for _ in range(5)]
    for job_id in (got[3], got[0], got[4], got[2]):  # bury order unlike the ids'
        assert cmd(s, b"bury %d 5" % job_id) == b"BURIED\r\n"
    c.ship()
    buried = list(c.leader.default.buried)
    assert buried == [got[3], got[0], got[4], got[2]]
    assert c.rec.record_live_jobs(c.leader) == len(c.leader.jobs)
    snap = c.rec.take(c.leader.next_id)
    assert snap is not None
    c.applier.apply(snap)  # a follower that holds every job already
    fresh = Engine(ManualClock())
    Applier(fresh).apply(snap)  # one that starts from the snapshot
    for follower in (c.follower, fresh):
        assert list(follower.default.buried) == buried
        assert snapshot(follower, counters=False) == snapshot(c.leader, counters=False)
