"""Replication of the engine's journal records between cluster nodes (docs/CLUSTER.md).

``batch``: the batch format and the leader's ``BatchRecorder`` journal; ``apply``: a
follower's ``Applier``, applying batches to a live engine. Imports core and binlog's format
only; the node orchestration (app/shell) imports this layer.
"""
