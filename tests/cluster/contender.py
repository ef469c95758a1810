"""A leadership contender in its own process, so a test can SIGKILL or SIGSTOP it.

Usage: python contender.py ENDPOINTS PREFIX NODE_ID  (ENDPOINTS: h:p,h:p,h:p)

Campaigns, then prints one JSON line per event on stdout and answers commands on stdin:
``status``; ``append SEQ`` (raw log append under the term's epoch: etcd's fence decides);
``guarded SEQ`` (Leadership.append: the local self-fence decides first); ``exit``.
Times are time.monotonic(), comparable across processes on one host (CLOCK_MONOTONIC).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from beanstalk_py.cluster.client import EtcdClient
from beanstalk_py.cluster.config import parse_cluster_url
from beanstalk_py.cluster.etcdlog import EtcdLog, Fenced
from beanstalk_py.cluster.leadership import Election, NotLeader


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(endpoints: str, prefix: str, node: str) -> None:
    cfg = parse_cluster_url(f"etcd://{endpoints}/{prefix}")
    client = await EtcdClient.connect(cfg.endpoints)
    log = EtcdLog(client, cfg.prefix)
    ttl = int(os.environ.get("BQ_TTL", "1"))  # benchmarks/cluster_failover.py --ttl
    election = Election(client, cfg.prefix, node, f"{node}.example:11300", ttl=ttl)
    emit(event="started", now=time.monotonic())
    term = await election.campaign()
    emit(event="leader", epoch=term.epoch, won_at=term.won_at, valid_until=term.valid_until)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        # Checked before anything else runs on the command: what an engine would check
        # before sending a reply.
        leader = term.is_leader()
        words = line.split()
        if not words or words[0] == "exit":
            break
        if words[0] == "status":
            emit(event="status", is_leader=leader, lost_at=term.lost_at,
                 lost_reason=term.lost_reason, valid_until=term.valid_until,
                 now=time.monotonic())  # fmt: skip
        elif words[0] in ("append", "guarded"):
            seq = int(words[1])
            batch = f"{node}-{seq}".encode()
            try:
                if words[0] == "append":
                    await log.append(seq, batch, term.epoch, budget=3.0)
                else:
                    await term.append(log, seq, batch)
                result = "ok"
            except Fenced:
                result = "fenced"
            except NotLeader:
                result = "not-leader"
            emit(event=words[0], seq=seq, result=result, is_leader=term.is_leader())
    await term.close()
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
