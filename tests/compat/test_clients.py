"""Real client libraries against a server subprocess: greenstalk, pystalk, beaneater (Ruby).

Parametrised over ``ours`` (``python -m beanstalk_py``) and ``reference`` (/usr/bin/beanstalkd)
so a failure against ours can be told apart from a test that expects too much.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import greenstalk
import pytest
from pystalk import BeanstalkClient
from support.requirements import require
from support.servers import (
    ServerProcess,
    ours_argv,
    ours_env,
    reference_argv,
    reference_available,
)

pytestmark = pytest.mark.compat

RUBY_SCRIPT = Path(__file__).parent / "ruby" / "beaneater_round_trip.rb"


@pytest.fixture(params=["ours", "reference"])
def address(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    if request.param == "reference":
        require(
            reference_available(), "/usr/bin/beanstalkd: the reference server (Debian: beanstalkd)"
        )
        proc = ServerProcess(reference_argv())
    else:
        proc = ServerProcess(ours_argv(), env=ours_env())
    with proc:
        yield proc.host, proc.port


def test_greenstalk_round_trip(address: tuple[str, int]) -> None:
    with greenstalk.Client(address, use="rt", watch="rt") as c:
        assert c.using() == "rt"
        assert c.watching() == ["rt"]
        a = c.put("alpha", priority=5, ttr=60)
        b = c.put("beta", priority=1, ttr=60)
        d = c.put("later", delay=100)
        assert (a, b, d) == (1, 2, 3)
        assert c.peek_ready().id == b
        assert c.peek_delayed().id == d
        with pytest.raises(greenstalk.NotFoundError):
            c.peek_buried()
        job = c.reserve(timeout=1)
        assert (job.id, job.body) == (b, "beta")
        st = c.stats_job(job)
        assert (st["state"], st["tube"], st["pri"], st["reserves"]) == ("reserved", "rt", 1, 1)
        c.touch(job)
        c.release(job, priority=7)
        assert c.stats_job(b)["state"] == "ready"
        job = c.reserve(timeout=1)
        assert job.id == a
        c.bury(job, priority=3)
        assert c.peek_buried().id == a
        assert c.kick(10) == 1
        job = c.reserve(timeout=1)
        assert (job.id, job.body) == (a, "alpha")
        assert c.stats_job(job)["kicks"] == 1
        c.delete(job)
        with pytest.raises(greenstalk.NotFoundError):
            c.peek(a)
        c.kick_job(d)
        assert c.stats_job(d)["state"] == "ready"
        tube = c.stats_tube("rt")
        assert (tube["name"], tube["current-jobs-ready"], tube["total-jobs"]) == ("rt", 2, 3)
        c.pause_tube("rt", 100)
        assert c.stats_tube("rt")["pause"] == 100
        with pytest.raises(greenstalk.TimedOutError):
            c.reserve(timeout=0)
        c.pause_tube("rt", 0)
        job = c.reserve(timeout=2)
        assert job.id == b
        c.delete(job)
        job = c.reserve_job(d)
        assert job.body == "later"
        c.release(job)
        assert sorted(c.tubes()) == ["default", "rt"]
        stats = c.stats()
        assert (stats["cmd-put"], stats["total-jobs"], stats["current-jobs-ready"]) == (3, 3, 1)
        assert (stats["current-tubes"], stats["current-connections"]) == (2, 1)
        assert stats["draining"] == "false"
        with pytest.raises(greenstalk.BadFormatError):
            c.use("-bad")


def test_greenstalk_fresh_stats(address: tuple[str, int]) -> None:
    """What greenstalk's own test-suite expects from a fresh server (docs/COMPATIBILITY.md, "Client expectations")."""
    with greenstalk.Client(address) as c:
        s = c.stats()
        assert (s["uptime"], s["cmd-stats"], s["current-connections"]) == (0, 1, 1)
        assert (s["total-connections"], s["current-tubes"], s["draining"]) == (1, 1, "false")


def test_pystalk_round_trip(address: tuple[str, int]) -> None:
    host, port = address
    c = BeanstalkClient(host, port, socket_timeout=10)
    try:
        c.use("rt")
        c.watch("rt")
        puts = [
            c.put_job(b"alpha", pri=5, ttr=60),
            c.put_job("beta", pri=1, ttr=60),
            c.put_job_into("rt", b"later", delay=100),
        ]
        assert puts == [(b"INSERTED", 1), (b"INSERTED", 2), (b"INSERTED", 3)]
        a, b, d = (job_id for _, job_id in puts)
        assert c.peek_ready().job_id == b
        assert c.peek_delayed().job_id == d
        job = c.reserve_job(1)
        assert (job.job_id, job.job_data) == (b, b"beta")
        st = c.stats_job(job)
        assert (st["state"], st["tube"], st["pri"]) == ("reserved", "rt", 1)
        c.release_job(job, pri=7)
        job = c.reserve_job(1)
        assert job.job_id == a
        c.bury_job(job, pri=3)
        assert c.peek_buried().job_id == a
        assert c.kick_jobs(10) == (b"KICKED", 1)
        job = c.reserve_job(1)
        assert job.job_id == a
        c.delete_job(job.job_id)
        c.kick_job(d)
        assert c.stats_job(d)["state"] == "ready"
        tube = c.stats_tube("rt")
        assert (str(tube["name"]), tube["current-jobs-ready"], tube["total-jobs"]) == ("rt", 2, 3)
        c.pause_tube("rt", 100)
        assert c.stats_tube("rt")["pause"] == 100
        c.unpause_tube("rt")
        job = c.reserve_job(2)
        assert job.job_id == b
        c.delete_job(b)
        assert sorted(c.list_tubes()) == ["default", "rt"]
        stats = c.stats()
        assert (stats["cmd-put"], stats["total-jobs"], stats["current-jobs-ready"]) == (3, 3, 1)
        assert stats["draining"] is False
    finally:
        c.close()


def _ruby_has_beaneater() -> bool:
    if shutil.which("ruby") is None:
        return False
    probe = subprocess.run(
        ["ruby", "-e", 'require "beaneater"'], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def test_beaneater_round_trip(address: tuple[str, int]) -> None:
    require(_ruby_has_beaneater(), "ruby with the beaneater gem (Debian: ruby ruby-beaneater)")
    host, port = address
    run = subprocess.run(
        ["ruby", str(RUBY_SCRIPT), f"{host}:{port}"],
        capture_output=True,
        timeout=60,
        check=False,
        text=True,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.stdout.strip().endswith("ALL OK"), run.stdout
