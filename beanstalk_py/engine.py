"""The engine: every tube, job and counter of one server, with no I/O.

One ``Engine`` owns all state (no module globals), reads time only from its ``Clock`` and
calls its ``Journal`` where a restart must be able to reproduce a change. Sessions (one per
connection, ``session.py``) parse commands and call the operations here.

Invariants:
* ``jobs`` maps every live job id to its ``Job``; a job is in exactly one of: its tube's ready
  heap, its tube's delay heap, its tube's buried FIFO, or a session's ``reserved`` dict.
* Outside of an operation, no unpaused tube has both ready jobs and waiting sessions: every
  place that makes a job ready or unpauses a tube offers it to the waiters at once. So a new
  ready job only ever needs matching in its own tube (no scan of all tubes, beanstalkd #561).
* ``timers`` is one heap of ``(when, seq, kind, obj)`` for every deadline (delays, TTRs,
  reserve timeouts, DEADLINE_SOON, unpause). Entries are validated when they come due, so
  cancelling is free; ``next_deadline()`` is what the shell arms its one timer with.
"""

from __future__ import annotations

import heapq
import itertools
import os
from typing import TYPE_CHECKING, Final

from beanstalk_py.clock import Clock
from beanstalk_py.job import BURIED, DELAYED, DELETED, READY, RESERVED, URGENT_THRESHOLD, Job
from beanstalk_py.journal import Journal, NullJournal
from beanstalk_py.tube import SwapList, Tube

# Module-level Final aliases: mypyc keeps them in C statics (no attribute lookup per call).
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop
_heapify: Final = heapq.heapify

if TYPE_CHECKING:
    from beanstalk_py.session import Session

# timer kinds
T_DELAY = 0  # a delayed job becomes ready
T_TTR = 1  # a reserved job's time to run is over
T_WAIT = 2  # a reserve-with-timeout runs out
T_SOON = 3  # a waiting session's reserved job enters its last second
T_UNPAUSE = 4  # a paused tube resumes

# Indices into Engine.ops: the cmd-* counters in the order `stats` prints them.
OP_NAMES = (
    "put",
    "peek",
    "peek-ready",
    "peek-delayed",
    "peek-buried",
    "reserve",
    "reserve-with-timeout",
    "delete",
    "release",
    "use",
    "watch",
    "ignore",
    "bury",
    "kick",
    "touch",
    "stats",
    "stats-job",
    "stats-tube",
    "list-tubes",
    "list-tube-used",
    "list-tubes-watched",
    "pause-tube",
)
(
    OP_PUT,
    OP_PEEK,
    OP_PEEK_READY,
    OP_PEEK_DELAYED,
    OP_PEEK_BURIED,
    OP_RESERVE,
    OP_RESERVE_WITH_TIMEOUT,
    OP_DELETE,
    OP_RELEASE,
    OP_USE,
    OP_WATCH,
    OP_IGNORE,
    OP_BURY,
    OP_KICK,
    OP_TOUCH,
    OP_STATS,
    OP_STATS_JOB,
    OP_STATS_TUBE,
    OP_LIST_TUBES,
    OP_LIST_TUBE_USED,
    OP_LIST_TUBES_WATCHED,
    OP_PAUSE_TUBE,
) = range(len(OP_NAMES))

DEADLINE_SOON_MARGIN = 1.0  # seconds (beanstalkd SAFETY_MARGIN)


class Engine:
    def __init__(
        self,
        clock: Clock,
        journal: Journal | None = None,
        *,
        max_job_size: int = 65535,
        max_jobs: int = 0,
        max_job_bytes: int = 0,
        binlog_max_size: int = 10 * 1024 * 1024,
    ) -> None:
        self.clock = clock
        self.journal: Journal = journal if journal is not None else NullJournal()
        self.max_job_size = max_job_size
        self.max_jobs = max_jobs  # 0: unlimited
        self.max_job_bytes = max_job_bytes  # 0: unlimited; sum of bodies
        self.binlog_max_size = binlog_max_size  # -s, shown by stats even without -b
        self.jobs: dict[int, Job] = {}
        self.tubes: dict[str, Tube] = {}
        self.tube_list: SwapList[Tube] = SwapList()
        self.next_id = 1
        self.timers: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self.started = clock.now()
        self.instance_id = os.urandom(8).hex()
        self.draining = False
        # cmd-* counters (OP_* indices) and the other stats counters
        self.ops = [0] * len(OP_NAMES)
        self.job_timeouts = 0
        self.total_jobs = 0
        self.ready_ct = 0
        self.urgent_ct = 0
        self.reserved_ct = 0
        self.delayed_ct = 0
        self.buried_ct = 0
        self.body_bytes = 0
        self.cur_conns = 0
        self.total_conns = 0
        self.producers = 0
        self.workers = 0
        self.waiting_ct = 0
        # sessions with output to write, and sessions whose blocking reserve just ended
        self.dirty: list[Session] = []
        self.resumed: list[Session] = []
        self.default = self.tube("default")

    # --- tubes ------------------------------------------------------------------------

    def tube(self, name: str) -> Tube:
        """The tube called ``name``, created if needed."""
        t = self.tubes.get(name)
        if t is None:
            t = self.tubes[name] = Tube(name)
            self.tube_list.append(t)
        return t

    def maybe_destroy(self, t: Tube) -> None:
        """Drop ``t`` once nothing refers to it (beanstalkd's refcount reaching zero)."""
        if t.jobs_ct or t.using_ct or t.watching_ct or t is self.default:
            return
        if self.tubes.get(t.name) is t:
            del self.tubes[t.name]
            self.tube_list.remove(t)

    def drain(self) -> None:
        """Enter drain mode (SIGUSR1): every later put is answered DRAINING."""
        self.draining = True

    # --- timers -----------------------------------------------------------------------

    def _timer(self, when: float, kind: int, obj: object) -> None:
        timers = self.timers
        if len(timers) > 4 * (self.reserved_ct + self.delayed_ct + self.waiting_ct) + 1024:
            self._purge_timers()
        _heappush(timers, (when, next(self._seq), kind, obj))

    def _timer_live(self, when: float, kind: int, obj: object) -> bool:
        if kind in (T_TTR, T_DELAY):
            assert isinstance(obj, Job)
            return obj.deadline == when and obj.state == (RESERVED if kind == T_TTR else DELAYED)
        if kind == T_WAIT:
            return obj.waiting and obj.wait_deadline == when  # type: ignore[attr-defined,no-any-return]
        if kind == T_SOON:
            return obj.waiting and obj.soon_at == when  # type: ignore[attr-defined,no-any-return]
        assert isinstance(obj, Tube)
        return obj.pause_until == when and self.tubes.get(obj.name) is obj

    def _purge_timers(self) -> None:
        live = [e for e in self.timers if self._timer_live(e[0], e[2], e[3])]
        _heapify(live)
        self.timers = live

    def next_deadline(self) -> float | None:
        """The earliest pending deadline (monotonic), or None when nothing is scheduled."""
        timers = self.timers
        while timers:
            when, _, kind, obj = timers[0]
            if self._timer_live(when, kind, obj):
                return when
            _heappop(timers)
        return None

    def tick(self) -> float | None:
        """Run everything due at ``clock.now()``; return the next deadline or None.

        Safe to call early or often: entries not yet due are left alone.
        """
        now = self.clock.now()
        timers = self.timers
        unpaused: list[Tube] = []
        while timers and timers[0][0] <= now:
            when, _, kind, obj = _heappop(timers)
            if not self._timer_live(when, kind, obj):
                continue
            if kind == T_DELAY:
                assert isinstance(obj, Job)
                self._delayed_to_ready(obj)
            elif kind == T_TTR:
                assert isinstance(obj, Job)
                self._ttr_expired(obj)
            elif kind in (T_WAIT, T_SOON):
                self._stop_waiting(obj)  # type: ignore[arg-type]
                obj.deliver(self._wait_over(obj, now))  # type: ignore[arg-type,attr-defined]
            else:
                assert isinstance(obj, Tube)
                obj.pause = 0
                obj.pause_until = 0.0
                unpaused.append(obj)
        if unpaused:
            self._offer_many(unpaused)
        return self.next_deadline()

    def _delayed_to_ready(self, job: Job) -> None:
        t = job.tube
        t.delayed_ct -= 1
        self.delayed_ct -= 1
        self._make_ready(job)

    def _ttr_expired(self, job: Job) -> None:
        job.timeouts += 1
        self.job_timeouts += 1
        self._unreserve(job)
        self._make_ready(job)

    # --- job state transitions --------------------------------------------------------

    def _make_ready(self, job: Job) -> None:
        """Put ``job`` in its tube's ready heap and hand it to a waiter if one exists."""
        t = job.tube
        job.state = READY
        t.push_ready(job, self.jobs)
        t.ready_ct += 1
        self.ready_ct += 1
        if job.pri < URGENT_THRESHOLD:
            t.urgent_ct += 1
            self.urgent_ct += 1
        if t.waiting.items:
            self._offer(t)

    def _make_delayed(self, job: Job) -> None:
        """Queue ``job`` as delayed until ``job.deadline`` (already set by the caller)."""
        t = job.tube
        job.state = DELAYED
        t.push_delayed(job, self.jobs)
        t.delayed_ct += 1
        self.delayed_ct += 1
        self._timer(job.deadline, T_DELAY, job)

    def _make_buried(self, job: Job) -> None:
        t = job.tube
        job.state = BURIED
        t.buried[job.id] = job
        self.buried_ct += 1

    def _unready(self, job: Job) -> None:
        """Take a ready job out of the counts (its heap key goes stale)."""
        t = job.tube
        t.ready_ct -= 1
        self.ready_ct -= 1
        if job.pri < URGENT_THRESHOLD:
            t.urgent_ct -= 1
            self.urgent_ct -= 1

    def _unreserve(self, job: Job) -> None:
        """Take a reserved job from its session (it still has to be queued somewhere)."""
        sess: Session = job.reserver
        del sess.reserved[job.id]
        if job.deadline <= sess.soonest:
            sess.soonest = -1.0  # it was the earliest: recompute when next needed
        job.tube.reserved_ct -= 1
        self.reserved_ct -= 1
        job.reserver = None

    def _detach(self, job: Job) -> None:
        """Remove ``job`` from whatever queue holds it (not from ``jobs``)."""
        state = job.state
        if state == READY:
            self._unready(job)
        elif state == DELAYED:
            job.tube.delayed_ct -= 1
            self.delayed_ct -= 1
        elif state == BURIED:
            del job.tube.buried[job.id]
            self.buried_ct -= 1
        elif state == RESERVED:
            self._unreserve(job)

    def _reserve(self, sess: Session, job: Job) -> None:
        """Give ``job`` (already detached) to ``sess`` and queue the RESERVED reply."""
        job.state = RESERVED
        job.reserver = sess
        job.reserves += 1
        job.deadline = self.clock.now() + job.ttr
        job.tube.reserved_ct += 1
        self.reserved_ct += 1
        sess.reserved[job.id] = job
        if job.deadline < sess.soonest:
            sess.soonest = job.deadline
        self._timer(job.deadline, T_TTR, job)
        sess.send_job(b"RESERVED", job)

    # --- matching waiting sessions with ready jobs ------------------------------------

    def _offer(self, t: Tube) -> None:
        jobs = self.jobs
        if t.pause_until and t.pause_until > self.clock.now():
            return
        while t.waiting.items and t.ready_ct:
            job = t.peek_ready(jobs)
            assert job is not None
            self._unready(job)
            sess: Session = t.waiting.take()  # type: ignore[assignment]
            self._stop_waiting(sess)
            self._reserve(sess, job)

    def _offer_many(self, tubes: list[Tube]) -> None:
        """Match waiters across several newly eligible tubes, best (pri, id) first."""
        jobs = self.jobs
        while True:
            best: Job | None = None
            for t in tubes:
                if t.waiting.items and t.ready_ct and self.tubes.get(t.name) is t:
                    j = t.peek_ready(jobs)
                    if j is not None and (best is None or (j.pri, j.id) < (best.pri, best.id)):
                        best = j
            if best is None:
                return
            t = best.tube
            self._unready(best)
            sess: Session = t.waiting.take()  # type: ignore[assignment]
            self._stop_waiting(sess)
            self._reserve(sess, best)

    @staticmethod
    def _wait_over(sess: Session, now: float) -> bytes:
        """How a wait ends: DEADLINE_SOON wins over TIMED_OUT (beanstalkd conn_timeout)."""
        if sess.reserved and now >= sess.soon_at:
            return b"DEADLINE_SOON\r\n"
        return b"TIMED_OUT\r\n"

    def cancel_wait(self, sess: Session) -> None:
        """End a blocking reserve with TIMED_OUT (the client half-closed its socket)."""
        if sess.waiting:
            self._stop_waiting(sess)
            sess.deliver(b"TIMED_OUT\r\n")

    def _stop_waiting(self, sess: Session) -> None:
        if not sess.waiting:
            return
        sess.waiting = False
        self.waiting_ct -= 1
        for t in sess.watch.items:
            t.waiting.remove(sess)
        self.resumed.append(sess)

    # --- operations called by sessions ------------------------------------------------

    def put(self, sess: Session, job_id: int, pri: int, delay: int, ttr: int, body: bytes) -> bytes:
        """Create a job in the session's used tube; return the reply line."""
        if (self.max_jobs and len(self.jobs) >= self.max_jobs) or (
            self.max_job_bytes and self.body_bytes + len(body) > self.max_job_bytes
        ):
            return b"OUT_OF_MEMORY\r\n"
        t = sess.use
        job = Job(job_id, t, pri, delay, ttr, body, self.clock.wall())
        if delay:
            job.state = DELAYED
            job.deadline = self.clock.now() + delay
        if not self.journal.put(job):
            return b"OUT_OF_MEMORY\r\n"
        self.jobs[job_id] = job
        self.body_bytes += len(body)
        t.jobs_ct += 1
        t.total_jobs += 1
        self.total_jobs += 1
        if delay:
            self._make_delayed(job)
        else:
            self._make_ready(job)
        return b"INSERTED %d\r\n" % job_id

    def delete(self, sess: Session, job_id: int) -> bytes:
        job = self.jobs.get(job_id)
        if job is None or (job.state == RESERVED and job.reserver is not sess):
            return b"NOT_FOUND\r\n"
        self._detach(job)
        self._forget(job)
        self.journal.delete(job)
        t = job.tube
        t.cmd_delete += 1
        self.maybe_destroy(t)
        return b"DELETED\r\n"

    def _forget(self, job: Job) -> None:
        del self.jobs[job.id]
        job.state = DELETED
        self.body_bytes -= len(job.body)
        job.tube.jobs_ct -= 1

    def release(self, sess: Session, job_id: int, pri: int, delay: int) -> bytes:
        job = sess.reserved.get(job_id)
        if job is None:
            return b"NOT_FOUND\r\n"
        old = (job.pri, job.delay, job.deadline)
        self._detach(job)
        job.pri = pri
        job.delay = delay
        job.releases += 1
        if delay:
            job.state = DELAYED
            job.deadline = self.clock.now() + delay
        else:
            job.state = READY
        if not self.journal.update(job):
            # Not persisted: the job stays reserved by this session, unchanged.
            job.pri, job.delay, job.deadline = old
            job.releases -= 1
            self._rereserve(sess, job)
            return b"OUT_OF_MEMORY\r\n"
        if delay:
            self._make_delayed(job)
        else:
            self._make_ready(job)
        return b"RELEASED\r\n"

    def _rereserve(self, sess: Session, job: Job) -> None:
        job.state = RESERVED
        job.reserver = sess
        job.tube.reserved_ct += 1
        self.reserved_ct += 1
        sess.reserved[job.id] = job
        if job.deadline < sess.soonest:
            sess.soonest = job.deadline

    def bury(self, sess: Session, job_id: int, pri: int) -> bytes:
        job = sess.reserved.get(job_id)
        if job is None:
            return b"NOT_FOUND\r\n"
        old_pri = job.pri
        self._detach(job)
        job.pri = pri
        job.buries += 1
        job.state = BURIED
        if not self.journal.update(job):
            job.pri = old_pri
            job.buries -= 1
            self._rereserve(sess, job)
            return b"INTERNAL_ERROR\r\n"
        self._make_buried(job)
        return b"BURIED\r\n"

    def touch(self, sess: Session, job_id: int) -> bytes:
        job = sess.reserved.get(job_id)
        if job is None:
            return b"NOT_FOUND\r\n"
        if job.deadline <= sess.soonest:
            sess.soonest = -1.0
        job.deadline = self.clock.now() + job.ttr
        self._timer(job.deadline, T_TTR, job)
        return b"TOUCHED\r\n"

    def _kick(self, job: Job) -> bool:
        """Make a buried or delayed job ready; False if the journal refused the change."""
        old_state = job.state
        self._detach(job)
        job.kicks += 1
        job.state = READY
        if not self.journal.update(job):
            job.kicks -= 1
            job.state = old_state
            if old_state == BURIED:
                # Back to the head of the FIFO, where it was.
                self._make_buried(job)
                job.tube.buried.move_to_end(job.id, last=False)
            else:
                job.tube.delayed_ct += 1
                self.delayed_ct += 1
            return False
        self._make_ready(job)
        return True

    def kick(self, sess: Session, bound: int) -> int:
        """Kick up to ``bound`` jobs in the used tube: buried ones if any, else delayed."""
        t = sess.use
        jobs = self.jobs
        n = 0
        if t.buried:
            while n < bound and t.buried:
                job = next(iter(t.buried.values()))
                if not self._kick(job):
                    break
                n += 1
            return n
        while n < bound:
            delayed = t.peek_delayed(jobs)
            if delayed is None or not self._kick(delayed):
                break
            n += 1
        return n

    def kick_job(self, job_id: int) -> bytes:
        job = self.jobs.get(job_id)
        if job is None or job.state not in (BURIED, DELAYED) or not self._kick(job):
            return b"NOT_FOUND\r\n"
        return b"KICKED\r\n"

    def reserve(self, sess: Session, timeout: float | None) -> bytes:
        """Start a reserve for ``sess``; return an immediate reply, or b"" when it waits."""
        now = self.clock.now()
        watched = sess.watch.items
        soon_at = 0.0
        if sess.reserved:
            soonest = sess.soonest
            if soonest < 0:
                soonest = sess.soonest = min(j.deadline for j in sess.reserved.values())
            soon_at = soonest - DEADLINE_SOON_MARGIN
            if now >= soon_at and not any(t.ready_ct for t in watched):
                return b"DEADLINE_SOON\r\n"
        jobs = self.jobs
        best: Job | None = None
        for t in watched:
            if t.ready_ct and not (t.pause_until and t.pause_until > now):
                j = t.peek_ready(jobs)
                if j is not None and (best is None or (j.pri, j.id) < (best.pri, best.id)):
                    best = j
        if best is not None:
            self._unready(best)
            self._reserve(sess, best)
            return b""
        if timeout == 0:
            sess.soon_at = soon_at
            return self._wait_over(sess, now)
        sess.waiting = True
        self.waiting_ct += 1
        for t in watched:
            t.waiting.append(sess)
        if timeout is not None:
            sess.wait_deadline = now + timeout
            self._timer(sess.wait_deadline, T_WAIT, sess)
        else:
            sess.wait_deadline = 0.0
        if sess.reserved:
            sess.soon_at = max(soon_at, now)
            self._timer(sess.soon_at, T_SOON, sess)
        else:
            sess.soon_at = 0.0
        return b""

    def reserve_job(self, sess: Session, job_id: int) -> bytes:
        job = self.jobs.get(job_id)
        if job is None or job.state == RESERVED:
            return b"NOT_FOUND\r\n"
        state = job.state
        if state != READY:
            # Out of the buried FIFO or the delay heap: the last record says buried/delayed,
            # and a restart must bring the job back ready, not strand it there again.
            job.state = RESERVED
            ok = self.journal.update(job)
            job.state = state
            if not ok:
                return b"INTERNAL_ERROR\r\n"  # not persisted: the job stays where it is
        self._detach(job)
        self._reserve(sess, job)
        return b""

    def pause_tube(self, t: Tube, delay: int) -> None:
        t.pause = delay
        # beanstalkd turns 0 into 1 ns: the tube resumes on the next tick ("unpause").
        t.pause_until = self.clock.now() + (delay if delay else 1e-9)
        t.cmd_pause_tube += 1
        self._timer(t.pause_until, T_UNPAUSE, t)

    def session_closed(self, sess: Session) -> None:
        """A connection ended: stop waiting, return its reserved jobs, drop its tubes."""
        self._stop_waiting(sess)
        for job in list(sess.reserved.values()):
            self._unreserve(job)
            self._make_ready(job)
        watch = sess.watch
        while watch.items:
            t = watch.remove_at(0)
            t.watching_ct -= 1
            self.maybe_destroy(t)
        sess.use.using_ct -= 1
        self.maybe_destroy(sess.use)
        self.cur_conns -= 1
        if sess.is_producer:
            self.producers -= 1
        if sess.is_worker:
            self.workers -= 1

    # --- replay -----------------------------------------------------------------------

    def restore_many(
        self, jobs: dict[int, Job], tubes: list[Tube], buried: list[Job], next_id: int
    ) -> None:
        """Adopt the jobs a binlog replay built, in bulk (no journal calls, no counters of
        this run such as total-jobs).

        ``jobs`` holds every job by id with its final state: READY, BURIED, or DELAYED with
        ``deadline`` on this engine's clock (a passed one comes back ready). Each job's
        ``tube`` is one of ``tubes``; a tube whose name the engine already knows is merged
        into the engine's own, the others are adopted if they hold a job. ``buried`` lists
        the buried jobs in bury order. Ready ids are appended per (tube, pri) and heapified
        once, delayed entries and their timers likewise."""
        remap: dict[Tube, Tube] = {}
        for t in tubes:
            known = self.tubes.get(t.name)
            if known is not None and known is not t:
                remap[t] = known
        if self.jobs:
            self.jobs.update(jobs)
        else:
            self.jobs = jobs
        now = self.clock.now()
        ready: dict[Tube, dict[int, list[int]]] = {}
        delayed: dict[Tube, list[tuple[float, int]]] = {}
        timers = self.timers
        seq = self._seq
        body_bytes = 0
        last_tube: Tube | None = None
        last_pri = -1
        level: list[int] = []
        for job in jobs.values():
            body_bytes += len(job.body)
            t = job.tube
            if remap and t in remap:
                t = job.tube = remap[t]
            state = job.state
            if state == DELAYED:
                deadline = job.deadline
                if deadline > now:
                    entries = delayed.get(t)
                    if entries is None:
                        entries = delayed[t] = []
                    entries.append((deadline, job.id))
                    timers.append((deadline, next(seq), T_DELAY, job))
                    continue
                job.state = READY
            elif state != READY:
                continue  # BURIED: below, in bury order
            pri = job.pri
            if pri != last_pri or t is not last_tube:
                levels = ready.get(t)
                if levels is None:
                    levels = ready[t] = {}
                found = levels.get(pri)
                if found is None:
                    found = levels[pri] = []
                level = found
                last_tube = t
                last_pri = pri
            level.append(job.id)
        self.body_bytes += body_bytes
        used: set[Tube] = set()
        for t, levels in ready.items():
            used.add(t)
            n = urgent = 0
            for pri, ids in levels.items():
                k = len(ids)
                t.add_ready_ids(pri, ids)
                n += k
                if pri < URGENT_THRESHOLD:
                    urgent += k
            t.ready_ct += n
            t.urgent_ct += urgent
            t.jobs_ct += n
            self.ready_ct += n
            self.urgent_ct += urgent
        for t, entries in delayed.items():
            used.add(t)
            t.delayed.extend(entries)
            _heapify(t.delayed)
            t.delayed_ct += len(entries)
            t.jobs_ct += len(entries)
            self.delayed_ct += len(entries)
        if delayed:
            _heapify(timers)
        for job in buried:
            t = job.tube
            if remap and t in remap:
                t = job.tube = remap[t]
            used.add(t)
            job.state = BURIED
            t.buried[job.id] = job
            t.jobs_ct += 1
            self.buried_ct += 1
        for t in tubes:  # adopt the new tubes that hold jobs, in the replay's order
            if t in used and t.name not in self.tubes:
                self.tubes[t.name] = t
                self.tube_list.append(t)
        self.next_id = max(self.next_id, next_id)
        waiting = [t for t in ready if t.waiting.items]
        if waiting:
            self._offer_many(waiting)
