"""The engine: every tube, job, client and counter of one server, with no I/O.

One ``Engine`` owns all state (no module globals), reads time only from its ``Clock`` and
calls its ``Journal`` where a restart must be able to reproduce a change. The protocol layer
parses commands and calls the operations here with the connection's ``Client``; replies meant
for another client (RESERVED to a waiter) go to that client's sinks.

Invariants:
* ``jobs`` (a ``JobTable``: pages of consecutive ids) maps every live job id to its ``Job``;
  a job is in exactly one of: its tube's ready heap, its tube's delay heap, its tube's buried
  FIFO, or a client's ``reserved`` dict.
* Outside of an operation, no unpaused tube has both ready jobs and waiting clients: every
  place that makes a job ready or unpauses a tube offers it to the waiters at once. So a new
  ready job only ever needs matching in its own tube (no scan of all tubes, beanstalkd #561).
* Tube reference counts, ``waiting_ct``, ``producers``, ``workers`` and ``cur_conns`` change
  only here (``connect``, ``use``, ``watch``, ``ignore``, ``disconnect`` ...).
* ``timers`` (``timers.py``) holds every deadline; ``next_deadline()`` is what the shell arms
  its one timer with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from beanstalk_py.core.client import Client
from beanstalk_py.core.clock import Clock
from beanstalk_py.core.host import Host, UnknownHost
from beanstalk_py.core.job import BURIED, DELAYED, DELETED, READY, RESERVED, URGENT_THRESHOLD, Job
from beanstalk_py.core.jobtable import JobTable
from beanstalk_py.core.journal import Journal, NullJournal
from beanstalk_py.core.ops import OP_NAMES
from beanstalk_py.core.swaplist import SwapList
from beanstalk_py.core.timers import (
    TIMER_DELAY,
    TIMER_SOON,
    TIMER_TTR,
    TIMER_UNPAUSE,
    TIMER_WAIT,
    Timers,
)
from beanstalk_py.core.tube import Tube

DEADLINE_SOON_MARGIN: Final = 1.0  # seconds (beanstalkd SAFETY_MARGIN)


class Engine:
    # set together by the ``journal`` setter: the journal, its put and delete bound once (a
    # call per put or delete without a lookup by name on the Protocol), and whether it is a
    # real one (False for the NullJournal: the hot paths skip its calls)
    _journal: Journal
    _journal_put: Callable[[Job], bool]
    _journal_delete: Callable[[Job], None]
    _journaled: bool

    def __init__(
        self,
        clock: Clock,
        journal: Journal | None = None,
        *,
        max_job_size: int = 65535,
        max_jobs: int = 0,
        max_job_bytes: int = 0,
        binlog_max_size: int = 10 * 1024 * 1024,
        host: Host | None = None,
        instance_id: str = "",
    ) -> None:
        self.clock = clock
        # The readings bound once: a call of a bound callable, not a method looked up by name
        # on a Protocol-typed object (the put path reads the wall clock on every put).
        self._now: Callable[[], float] = clock.now
        self._wall: Callable[[], float] = clock.wall
        self.journal = journal if journal is not None else NullJournal()
        self.max_job_size = max_job_size
        self.max_jobs = max_jobs  # 0: unlimited
        self.max_job_bytes = max_job_bytes  # 0: unlimited; sum of bodies
        self.binlog_max_size = binlog_max_size  # -s, shown by stats even without -b
        self.jobs = JobTable()
        self.tubes: dict[str, Tube] = {}
        self.tube_list: SwapList[Tube] = SwapList()
        self.host: Host = host if host is not None else UnknownHost()
        self.next_id = 1
        self.timers = Timers(self.tubes)
        self.started = clock.now()
        if not instance_id:
            # here, not at the top: the server passes its own (importing secrets costs
            # start-up time); engines built directly, as in the unit tests, make one
            import secrets

            instance_id = secrets.token_hex(8)
        self.instance_id = instance_id  # stats "id"
        self.draining = False
        # more ``stats`` lines after beanstalkd's own (cluster mode: role, epoch, lag)
        self.stats_extra: Callable[[], list[str]] | None = None
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
        self.default = self.tube("default")

    # --- tubes ------------------------------------------------------------------------

    @property
    def journal(self) -> Journal:
        return self._journal

    @journal.setter
    def journal(self, journal: Journal) -> None:
        self._journal = journal
        self._journaled = not isinstance(journal, NullJournal)
        self._journal_put = journal.put
        self._journal_delete = journal.delete

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

    def _timer(self, when: float, kind: int, target: Job | Client | Tube) -> None:
        self.timers.add(when, kind, target, self.reserved_ct + self.delayed_ct + self.waiting_ct)

    def next_deadline(self) -> float | None:
        """The earliest pending deadline (monotonic), or None when nothing is scheduled."""
        return self.timers.next_deadline()

    def tick(self) -> float | None:
        """Run everything due at ``clock.now()``; return the next deadline or None.

        Safe to call early or often: entries not yet due are left alone.
        """
        now = self._now()
        timers = self.timers
        unpaused: list[Tube] = []
        while True:
            entry = timers.pop_due(now)
            if entry is None:
                break
            kind = entry[2]
            target = entry[3]
            if isinstance(target, Job):
                if kind == TIMER_DELAY:
                    self._delayed_to_ready(target)
                else:
                    self._ttr_expired(target)
            elif isinstance(target, Client):
                self._stop_waiting(target)
                target.deliver(self._wait_over(target, now))
            else:
                target.pause = 0
                target.pause_until = 0.0
                unpaused.append(target)
        if unpaused:
            self.offer_waiting(unpaused)
        return timers.next_deadline()

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
        self._timer(job.deadline, TIMER_DELAY, job)

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
        """Take a reserved job from its client (it still has to be queued somewhere)."""
        client = job.reserver
        assert client is not None
        del client.reserved[job.id]
        if job.deadline <= client.earliest_ttr:
            client.earliest_ttr = -1.0  # it was the earliest: recompute when next needed
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

    def _reserve(self, client: Client, job: Job) -> None:
        """Give ``job`` (already detached) to ``client`` and send it the RESERVED reply."""
        job.state = RESERVED
        job.reserver = client
        job.reserves += 1
        job.deadline = self._now() + job.ttr
        job.tube.reserved_ct += 1
        self.reserved_ct += 1
        client.reserved[job.id] = job
        if job.deadline < client.earliest_ttr:
            client.earliest_ttr = job.deadline
        self._timer(job.deadline, TIMER_TTR, job)
        client.send_job(b"RESERVED", job)

    # --- matching waiting clients with ready jobs ------------------------------------

    def _offer(self, t: Tube) -> None:
        jobs = self.jobs
        if t.pause_until and t.pause_until > self._now():
            return
        while t.waiting.items and t.ready_ct:
            job = t.peek_ready(jobs)
            assert job is not None
            self._unready(job)
            client = t.waiting.take()
            self._stop_waiting(client)
            self._reserve(client, job)

    def offer_waiting(self, tubes: list[Tube]) -> None:
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
            client = t.waiting.take()
            self._stop_waiting(client)
            self._reserve(client, best)

    @staticmethod
    def _wait_over(client: Client, now: float) -> bytes:
        """How a wait ends: DEADLINE_SOON wins over TIMED_OUT (beanstalkd conn_timeout)."""
        if client.reserved and now >= client.deadline_soon_at:
            return b"DEADLINE_SOON\r\n"
        return b"TIMED_OUT\r\n"

    def cancel_wait(self, client: Client) -> None:
        """End a blocking reserve with TIMED_OUT (the client half-closed its socket)."""
        if client.waiting:
            self._stop_waiting(client)
            client.deliver(b"TIMED_OUT\r\n")

    def _stop_waiting(self, client: Client) -> None:
        if not client.waiting:
            return
        client.waiting = False
        self.waiting_ct -= 1
        for t in client.watch.items:
            t.waiting.remove(client)
        client.wake()

    # --- clients ----------------------------------------------------------------------

    def connect(
        self,
        deliver: Callable[[bytes], None],
        send_job: Callable[[bytes, Job], None],
        wake: Callable[[], None],
    ) -> Client:
        """A new client, using and watching ``default``; see ``Client`` for the sinks."""
        default = self.default
        client = Client(default, deliver, send_job, wake)
        default.using_ct += 1
        default.watching_ct += 1
        self.cur_conns += 1
        self.total_conns += 1
        return client

    def disconnect(self, client: Client) -> None:
        """A connection ended: stop waiting, return its reserved jobs, drop its tubes."""
        if not client.connected:
            return
        client.connected = False
        self._stop_waiting(client)
        for job in list(client.reserved.values()):
            self._unreserve(job)
            self._make_ready(job)
        watch = client.watch
        while watch.items:
            t = watch.remove_at(0)
            t.watching_ct -= 1
            self.maybe_destroy(t)
        client.use.using_ct -= 1
        self.maybe_destroy(client.use)
        self.cur_conns -= 1
        if client.is_producer:
            self.producers -= 1
        if client.is_worker:
            self.workers -= 1
        client.detach_sinks()

    def withdraw(self, client: Client) -> None:
        """A connection that was no client (it spoke HTTP before any command) leaves: as
        ``disconnect``, and it is taken out of ``total-connections`` too."""
        if client.connected:
            self.disconnect(client)
            self.total_conns -= 1

    def use(self, client: Client, name: str) -> None:
        """Make ``client`` put into the tube ``name`` (created if needed)."""
        t = self.tube(name)
        t.using_ct += 1
        old = client.use
        client.use = t
        old.using_ct -= 1
        self.maybe_destroy(old)

    def watch(self, client: Client, name: str) -> int:
        """Add the tube ``name`` to the watch set; return how many tubes are watched."""
        t = self.tube(name)
        if t not in client.watch:
            client.watch.append(t)
            t.watching_ct += 1
        return len(client.watch)

    def ignore(self, client: Client, name: str) -> int:
        """Drop ``name`` from the watch set; return how many remain, or 0 if it was the last."""
        t = self.tubes.get(name)
        if t is not None and t in client.watch:
            if len(client.watch) == 1:
                return 0
            client.watch.remove(t)
            t.watching_ct -= 1
            self.maybe_destroy(t)
        return len(client.watch)

    def new_job_id(self, client: Client) -> int:
        """Allocate the id of ``client``'s next put (ids are used up even if the put fails,
        as in beanstalkd) and count the client as a producer."""
        if not client.is_producer:
            client.is_producer = True
            self.producers += 1
        job_id = self.next_id
        self.next_id = job_id + 1
        return job_id

    def mark_worker(self, client: Client) -> None:
        """Count ``client`` as a worker (it sent a reserve command)."""
        if not client.is_worker:
            client.is_worker = True
            self.workers += 1

    # --- job operations ---------------------------------------------------------------

    def put(
        self, client: Client, job_id: int, pri: int, delay: int, ttr: int, body: bytes
    ) -> bytes:
        """Create a job in the client's used tube; return the reply line."""
        if (self.max_jobs and len(self.jobs) >= self.max_jobs) or (
            self.max_job_bytes and self.body_bytes + len(body) > self.max_job_bytes
        ):
            return b"OUT_OF_MEMORY\r\n"
        t = client.use
        job = Job(job_id, t, pri, delay, ttr, body, self._wall())
        if delay:
            job.state = DELAYED
            job.deadline = self._now() + delay
        if self._journaled and not self._journal_put(job):
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

    def delete(self, client: Client, job_id: int) -> bytes:
        job = self.jobs.get(job_id)
        if job is None or (job.state == RESERVED and job.reserver is not client):
            return b"NOT_FOUND\r\n"
        self._detach(job)
        self._forget(job)
        if self._journaled:
            self._journal_delete(job)
        t = job.tube
        t.cmd_delete += 1
        self.maybe_destroy(t)
        return b"DELETED\r\n"

    def _forget(self, job: Job) -> None:
        self.jobs.pop(job.id)
        job.state = DELETED
        self.body_bytes -= len(job.body)
        job.tube.jobs_ct -= 1

    def release(self, client: Client, job_id: int, pri: int, delay: int) -> bytes:
        job = client.reserved.get(job_id)
        if job is None:
            return b"NOT_FOUND\r\n"
        old = (job.pri, job.delay, job.deadline)
        self._detach(job)
        job.pri = pri
        job.delay = delay
        job.releases += 1
        if delay:
            job.state = DELAYED
            job.deadline = self._now() + delay
        else:
            job.state = READY
        if not self.journal.update(job):
            # Not persisted: the job stays reserved by this client, unchanged.
            job.pri, job.delay, job.deadline = old
            job.releases -= 1
            self._rereserve(client, job)
            return b"OUT_OF_MEMORY\r\n"
        if delay:
            self._make_delayed(job)
        else:
            self._make_ready(job)
        return b"RELEASED\r\n"

    def _rereserve(self, client: Client, job: Job) -> None:
        job.state = RESERVED
        job.reserver = client
        job.tube.reserved_ct += 1
        self.reserved_ct += 1
        client.reserved[job.id] = job
        if job.deadline < client.earliest_ttr:
            client.earliest_ttr = job.deadline

    def bury(self, client: Client, job_id: int, pri: int) -> bytes:
        job = client.reserved.get(job_id)
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
            self._rereserve(client, job)
            return b"INTERNAL_ERROR\r\n"
        self._make_buried(job)
        return b"BURIED\r\n"

    def touch(self, client: Client, job_id: int) -> bytes:
        job = client.reserved.get(job_id)
        if job is None:
            return b"NOT_FOUND\r\n"
        if job.deadline <= client.earliest_ttr:
            client.earliest_ttr = -1.0
        job.deadline = self._now() + job.ttr
        self._timer(job.deadline, TIMER_TTR, job)
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

    def kick(self, t: Tube, bound: int) -> int:
        """Kick up to ``bound`` jobs in ``t``: buried ones if any, else delayed."""
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

    def reserve(self, client: Client, timeout: float | None) -> bytes:
        """Start a reserve for ``client``; return an immediate reply, or b"" when it waits."""
        now = self._now()
        watched = client.watch.items
        soon_at = 0.0
        if client.reserved:
            earliest = client.earliest_ttr
            if earliest < 0:
                earliest = client.earliest_ttr = min(j.deadline for j in client.reserved.values())
            soon_at = earliest - DEADLINE_SOON_MARGIN
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
            self._reserve(client, best)
            return b""
        if timeout == 0:
            client.deadline_soon_at = soon_at
            return self._wait_over(client, now)
        client.waiting = True
        self.waiting_ct += 1
        for t in watched:
            t.waiting.append(client)
        if timeout is not None:
            client.wait_deadline = now + timeout
            self._timer(client.wait_deadline, TIMER_WAIT, client)
        else:
            client.wait_deadline = 0.0
        if client.reserved:
            client.deadline_soon_at = max(soon_at, now)
            self._timer(client.deadline_soon_at, TIMER_SOON, client)
        else:
            client.deadline_soon_at = 0.0
        return b""

    def reserve_job(self, client: Client, job_id: int) -> bytes:
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
        self._reserve(client, job)
        return b""

    def pause_tube(self, t: Tube, delay: int) -> None:
        t.pause = delay
        # beanstalkd turns 0 into 1 ns: the tube resumes on the next tick ("unpause").
        t.pause_until = self._now() + (delay if delay else 1e-9)
        t.cmd_pause_tube += 1
        self._timer(t.pause_until, TIMER_UNPAUSE, t)

    # --- replication: a follower applies the leader's records (replica/apply.py) -------
    #
    # These take jobs and states as the leader's journal recorded them. Like the
    # commands, they call ``self.journal`` (put / update / delete), so a follower whose
    # engine journals to its local binlog keeps a complete local image of the replicated
    # state. They never move a cmd-* counter; ``adopt_job`` counts total-jobs (the job was
    # put on the leader). A waiting client, if any, is offered a job made ready as usual.

    def adopt_job(self, job: Job, *, count: bool = True) -> bool:
        """Take in a job the leader created: ``job.id`` is unknown here, ``job.tube`` one of
        this engine's tubes (``tube(name)``), ``job.state`` READY, BURIED (end of the tube's
        buried FIFO) or DELAYED with ``job.deadline`` on this engine's clock (ready at once if
        it passed). ``count``: add it to total-jobs (engine and tube). Returns the journal's
        answer; the job is adopted either way (the replicated log is the truth)."""
        state = job.state
        if state == DELAYED and job.deadline <= self._now():
            state = job.state = READY
        job.reserver = None
        ok = self.journal.put(job)
        self.jobs[job.id] = job
        self.body_bytes += len(job.body)
        t = job.tube
        t.jobs_ct += 1
        if count:
            t.total_jobs += 1
            self.total_jobs += 1
        self._queue(job, state)
        return ok

    def requeue(self, job: Job, state: int, pri: int, delay: int, deadline: float) -> bool:
        """Move a live job to ``state`` (READY, BURIED at the end of the FIFO, or DELAYED
        until ``deadline`` on this engine's clock, ready at once if passed) with a new
        ``pri`` and ``delay``, from wherever it is (reserved included). Returns the journal's
        answer to the UPDATE record; the move happens either way."""
        self._detach(job)
        if state == DELAYED and deadline <= self._now():
            state = READY
        job.pri = pri
        job.delay = delay
        job.state = state
        job.deadline = deadline if state == DELAYED else 0.0
        ok = self.journal.update(job)
        self._queue(job, state)
        return ok

    def _queue(self, job: Job, state: int) -> None:
        """Queue a detached job as ``state`` (DELAYED until ``job.deadline``, BURIED last)."""
        if state == DELAYED:
            self._make_delayed(job)
        elif state == BURIED:
            self._make_buried(job)
        else:
            self._make_ready(job)

    def discard_job(self, job_id: int) -> bool:
        """Delete the job ``job_id`` from any state (no owner check); False if unknown."""
        job = self.jobs.get(job_id)
        if job is None:
            return False
        self._detach(job)
        self._forget(job)
        self.journal.delete(job)
        self.maybe_destroy(job.tube)
        return True

    def raise_next_id(self, next_id: int) -> None:
        """Make the next job id at least ``next_id`` (ids never go back: promotion)."""
        if next_id > self.next_id:
            self.next_id = next_id
