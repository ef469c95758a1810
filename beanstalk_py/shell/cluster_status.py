"""What a cluster node reports about replication: ``stats``, ``/metrics`` and ``/readyz``.

app/node.py owns and updates it; the shell only reads it. ``Server.cluster`` is None outside
cluster mode, and then nothing here shows anywhere (beanstalkd's output is unchanged).
"""

from __future__ import annotations

from typing import Protocol


class AppendCounters(Protocol):
    """The leader's etcd appends (replica.journal.Shipper)."""

    appends: int
    append_seconds: float
    last_append_seconds: float
    next_seq: int
    compactions: int


class ClusterStatus:
    """Role and replication progress of this node (updated on the loop thread)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.role = "follower"  # follower, promoting, leader, stepped-down
        self.leader = ""  # the leader's node id ("" while the leader key is vacant)
        self.epoch = 0  # the newest epoch seen (the leader key's create revision)
        self.applied_seq = 0  # the last etcd log batch applied to this node's engine
        self.applied_at = 0.0  # wall time of that (0: none yet)
        self.log_end = 0  # the highest batch number known to be in the log
        self.failovers = 0  # times this process became leader
        # applied changes the local binlog refused (full disk): its image has gaps then
        self.local_refusals = 0
        self.shipper: AppendCounters | None = None  # set on the leader

    @property
    def last_batch(self) -> int:
        """The last batch this node holds: applied (follower) or committed (leader)."""
        if self.shipper is not None:
            return max(self.applied_seq, self.shipper.next_seq - 1)
        return self.applied_seq

    @property
    def lag(self) -> int:
        """Batches known to be in the log that this node has not applied (0 on the leader)."""
        return max(0, self.log_end - self.last_batch) if self.shipper is None else 0

    def stats_lines(self) -> list[str]:
        """Extra ``stats`` fields (after beanstalkd's own, so parsers are unaffected)."""
        return [
            f"cluster-node: {self.node_id}",
            f"cluster-role: {self.role}",
            f"cluster-leader: {self.leader}",
            f"cluster-epoch: {self.epoch}",
            f"cluster-last-batch: {self.last_batch}",
            f"cluster-lag-batches: {self.lag}",
        ]
