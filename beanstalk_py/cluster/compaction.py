"""Compaction of the etcd log: drop the oldest batches, then etcd's history of them.

Protocol (the engine drives steps 1 and 2; this module does 2 and 3):

1. The leader re-appends, as ordinary batches, the records of every job still alive whose
   latest record lives in a batch <= ``upto`` (like the binlog's compaction re-writes live jobs
   into the newest file). After that no batch <= ``upto`` is needed to rebuild the queue.
2. ``compact_log(log, upto, epoch)``: ONE transaction, fenced by the epoch like an append,
   deletes ``log/<first>`` .. ``log/<upto>`` (a single delete-range operation, however many
   keys) and moves ``meta/first`` to ``upto + 1``. It refuses to delete the newest batch (so
   appends keep their "previous key exists" guard) and to move ``meta/first`` backwards (its
   mod revision is compared to the value read just before).
3. etcd's MVCC history is compacted at that transaction's revision, so the deleted values stop
   occupying the backend. Watches positioned before it get a compaction error and readers fall
   back to paged reads from ``meta/first`` (etcdlog.follow); a reader that still needs a batch
   below ``meta/first`` gets ``LogTruncated`` and must start from a full copy.

etcd limits and what follows from them (etcd 3.4 defaults):

* ``--max-request-bytes`` 1.5 MiB per request: one batch (one append transaction) carries at
  most ``etcdlog.MAX_BATCH_BYTES`` (1.5 MiB minus a 4 KiB margin). The engine must split a loop
  iteration's records into several batches, and a single job body cannot exceed that limit
  (beanstalkd's default max job size, 65535 bytes, is far below it).
* ``--max-txn-ops`` 128 operations per transaction: an append uses 1 put (3 compares, 3 gets
  on failure); compaction uses 2 operations whatever the number of keys deleted. One key per
  batch is what keeps us far from this limit: never one key per job.
* ``--quota-backend-bytes`` 2 GiB (8 GiB is etcd's suggested maximum): once the backend reaches
  it, etcd raises the NOSPACE alarm and refuses every write until an operator compacts,
  defragments (``etcdctl defrag``, per member, briefly blocking it) and disarms the alarm.
  The backend keeps deleted and superseded values until history compaction, and the space they
  used is reused but not returned to the file system until defragmentation.

Live-data limit: every live job must be present in the retained log, and step 1 writes a second
copy of the oldest live data before step 2 deletes the first. So the live data (job bodies plus
record overhead) must stay below about half the quota minus the write volume between
compactions: roughly **1 GiB with the default 2 GiB quota** (about 4 GiB at 8 GiB), far less
than a single-node binlog on disk allows. Workloads with more live data need a larger quota or
the single-node mode.
"""

from __future__ import annotations

from beanstalk_py.cluster.client import (
    cmp_create_revision,
    cmp_exists,
    cmp_mod_revision,
    op_delete_range,
    op_get,
    op_put,
)
from beanstalk_py.cluster.etcdlog import EtcdLog, Fenced, LogError


async def compact_log(log: EtcdLog, upto: int, epoch: int, *, history: bool = True) -> int:
    """Delete batches up to and including ``upto`` under ``epoch``; returns the transaction's
    revision (history is compacted to it unless ``history`` is False). Idempotent: compacting
    again to the same or a lower ``upto`` changes nothing. Raises ``Fenced`` for a stale
    epoch and ``LogError`` when ``upto`` is the newest batch (or beyond it)."""
    kv, _ = await log.client.get(log.first_key)
    first = int(kv.value) if kv is not None else 1
    if upto < first:
        return 0
    first_mod = kv.mod_revision if kv is not None else 0
    keep = log.key(upto + 1)
    res = await log.client.txn(
        [
            cmp_create_revision(log.leader_key, epoch),
            cmp_exists(keep),
            cmp_mod_revision(log.first_key, first_mod),
        ],
        [op_delete_range(log.key(first), keep), op_put(log.first_key, b"%d" % (upto + 1))],
        [op_get(log.leader_key), op_get(keep), op_get(log.first_key)],
    )
    if not res.succeeded:
        leader, kept, now_first = res.gets
        if not leader or leader[0].create_revision != epoch:
            raise Fenced(f"epoch {epoch} is no longer current; compaction refused")
        if now_first and int(now_first[0].value) >= upto + 1:
            return 0  # our own earlier attempt (reply lost) or a newer compaction did it
        if not kept:
            raise LogError(f"cannot compact through batch {upto}: it is the newest (or absent)")
        raise LogError("meta/first changed during compaction; retry")
    if history:
        await log.client.compact(res.revision)
    return res.revision
