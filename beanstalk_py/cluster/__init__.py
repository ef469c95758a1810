"""Cluster mode: three or more nodes replicated through etcd v3 (see docs/CLUSTER.md).

Modules, one job each:

* ``config``     -- parse ``--cluster etcd://h:p,h:p,h:p/prefix`` (stdlib only);
* ``client``     -- typed etcd calls over gRPC with short deadlines, retries and failover;
* ``etcdlog``    -- the replicated log of batches, fenced by the leader's epoch;
* ``leadership`` -- election on a leased key, epoch = its create revision, self-fencing;
* ``compaction`` -- dropping the oldest batches and etcd history; etcd's limits.

Only ``config`` may be imported without the optional etcd client (``beanstalk-py[cluster]``);
the others import ``grpc`` and ``aetcd``. Nothing here imports the rest of beanstalk_py:
batches are opaque bytes.
"""
