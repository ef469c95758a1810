"""Restart a real server process on the same -b directory after kill -9."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from support.servers import ServerProcess, ours_argv, ours_env
from support.syncclient import Conn


def start(bdir: Path, *flags: str) -> ServerProcess:
    return ServerProcess(ours_argv("-b", str(bdir), *flags), env=ours_env()).start()


@pytest.mark.slow
def test_jobs_survive_kill9(tmp_path: Path) -> None:
    srv = start(tmp_path, "-s", "65536")
    try:
        with Conn(srv.port) as c:
            ids = []
            for i in range(300):
                reply = c.put(b"j%04d" % i, pri=i)
                assert reply.startswith(b"INSERTED"), reply
                ids.append(int(reply.split()[1]))
            for i in ids[:200]:
                assert c.cmd(b"delete %d" % i)[0] == b"DELETED"
            assert c.cmd(b"reserve-with-timeout 0")[0].startswith(b"RESERVED")
            time.sleep(0.05)
    finally:
        srv.send_signal(signal.SIGKILL)
        srv.stop()
    srv = start(tmp_path, "-s", "65536")
    try:
        with Conn(srv.port) as c:
            assert c.stats_job(ids[250])["state"] == "ready"
            assert c.cmd(b"peek %d" % ids[10])[0] == b"NOT_FOUND"
            reply = c.put(b"x")
            assert int(reply.split()[1]) == ids[-1] + 1  # ids never repeat
    finally:
        srv.stop()
