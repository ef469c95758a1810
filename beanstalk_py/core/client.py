"""The core's record of one connected client (beanstalkd's ``Conn``).

A ``Client`` holds what the engine needs to know about a connection: the used tube, the
watch set, the reserved jobs, whether it waits in a reserve and until when, and whether it has
acted as a producer or a worker. It never sees bytes: replies the engine produces for it
(``RESERVED`` to a waiter, ``TIMED_OUT``, ``DEADLINE_SOON``) go to its ``deliver`` and
``send_job`` sinks, and ``wake`` tells its owner that a blocking reserve ended.

Only the engine changes these fields (``Engine.connect``, ``use``, ``watch``, ``ignore``,
``reserve`` ...), so its counters (tube references, waiting, producers, workers) stay true.

Invariants:
* ``use`` and every tube in ``watch`` hold one reference each (``using_ct``/``watching_ct``);
  ``watch`` is never empty while connected.
* ``reserved`` maps the id of every job this client holds to the job (state RESERVED,
  ``job.reserver is self``).
* ``earliest_ttr`` is the smallest TTR deadline in ``reserved``, or -1.0 when unknown (it is
  recomputed lazily, so a reserve stays O(1) for a client holding many jobs).
* While ``waiting``, the client is in the ``waiting`` list of every watched tube;
  ``wait_deadline`` (0.0: none) ends the wait with TIMED_OUT and ``deadline_soon_at`` (0.0:
  none) with DEADLINE_SOON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from beanstalk_py.core.swaplist import SwapList

if TYPE_CHECKING:
    from beanstalk_py.core.job import Job
    from beanstalk_py.core.tube import Tube


def _drop_reply(data: bytes) -> None:
    """The sink of a disconnected client: nothing can reach it any more."""


def _drop_job(word: bytes, job: Job) -> None:
    """The job sink of a disconnected client."""


def _no_wake() -> None:
    """The wake-up of a disconnected client."""


class Client:
    __slots__ = (
        "connected",
        "deadline_soon_at",
        "deliver",
        "earliest_ttr",
        "is_producer",
        "is_worker",
        "reserved",
        "send_job",
        "use",
        "wait_deadline",
        "waiting",
        "wake",
        "watch",
    )

    def __init__(
        self,
        default: Tube,
        deliver: Callable[[bytes], None],
        send_job: Callable[[bytes, Job], None],
        wake: Callable[[], None],
    ) -> None:
        # deliver(reply line); send_job(word, job): "<word> <id> <bytes>\r\n" then the body;
        # wake(): a blocking reserve ended, the owner may parse again.
        self.deliver = deliver
        self.send_job = send_job
        self.wake = wake
        self.connected = True
        self.use: Tube = default
        self.watch: SwapList[Tube] = SwapList()
        self.watch.append(default)
        self.reserved: dict[int, Job] = {}
        self.waiting = False
        self.wait_deadline = 0.0
        self.deadline_soon_at = 0.0
        self.earliest_ttr = -1.0
        self.is_producer = False
        self.is_worker = False

    def detach_sinks(self) -> None:
        """Drop the owner's callbacks (after disconnect), so no reference cycle outlives it."""
        self.deliver = _drop_reply
        self.send_job = _drop_job
        self.wake = _no_wake
