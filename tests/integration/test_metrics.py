"""/metrics scraped over HTTP from a live in-process server after a known workload."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from beanstalk_py.core.clock import ManualClock
from beanstalk_py.shell.config import Config
from beanstalk_py.shell.metrics import BATCH_SAMPLE_EVERY, OTHER_TUBE
from beanstalk_py.shell.server import Server

TIMEOUT = 5.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def srv(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    cap = getattr(request, "param", 1000)
    server = Server(Config(host="127.0.0.1", port=0, metrics_max_tubes=cap), clock=ManualClock())
    await asyncio.wait_for(server.start(), TIMEOUT)
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), TIMEOUT)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def call(self, data: bytes, lines: int = 1) -> list[bytes]:
        self.writer.write(data)
        await self.writer.drain()
        return [await asyncio.wait_for(self.reader.readline(), TIMEOUT) for _ in range(lines)]


async def connect(srv: Server) -> Client:
    return Client(*await asyncio.wait_for(asyncio.open_connection("127.0.0.1", srv.port), TIMEOUT))


async def scrape(port: int) -> Samples:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    out: Samples = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def tube(name: str) -> tuple[tuple[str, str], ...]:
    return (("tube", name),)


async def test_counters_after_workload(srv: Server) -> None:
    producer = await connect(srv)
    await producer.call(b"use emails\r\n")
    for i in range(5):
        assert await producer.call(b"put %d 0 60 3\r\nabc\r\n" % (i * 500)) == [
            b"INSERTED %d\r\n" % (i + 1)
        ]
    worker = await connect(srv)
    await worker.call(b"watch emails\r\nignore default\r\n", 2)
    reserved = await worker.call(b"reserve\r\n", 2)
    assert reserved[0] == b"RESERVED 1 3\r\n"
    await worker.call(b"reserve\r\n", 2)
    await worker.call(b"delete 2\r\n")
    await producer.call(b"pause-tube emails 30\r\n")
    await asyncio.sleep(0)

    got = await scrape(srv.port)
    assert got[("beanstalkd_cmd_put_total", ())] == 5
    assert got[("beanstalkd_cmd_reserve_total", ())] == 2
    assert got[("beanstalkd_cmd_delete_total", ())] == 1
    assert got[("beanstalkd_cmd_pause_tube_total", ())] == 1
    assert got[("beanstalkd_current_jobs_ready", ())] == 3
    assert got[("beanstalkd_current_jobs_reserved", ())] == 1
    assert got[("beanstalkd_current_jobs_urgent", ())] == 1  # job 3, pri 1000 (< 1024)
    assert got[("beanstalkd_total_jobs", ())] == 5
    assert got[("beanstalkd_current_connections", ())] == 2  # the scraper is not counted
    assert got[("beanstalkd_total_connections_total", ())] == 2
    assert got[("beanstalkd_current_producers", ())] == 1
    assert got[("beanstalkd_current_workers", ())] == 1
    assert got[("beanstalkd_current_tubes", ())] == 2
    assert got[("beanstalkd_tube_current_jobs_ready", tube("emails"))] == 3
    assert got[("beanstalkd_tube_current_jobs_reserved", tube("emails"))] == 1
    assert got[("beanstalkd_tube_current_jobs_ready", tube("default"))] == 0
    assert got[("beanstalkd_tube_current_using", tube("emails"))] == 1
    assert got[("beanstalkd_tube_current_watching", tube("emails"))] == 1
    assert got[("beanstalkd_tube_total_jobs", tube("emails"))] == 5
    assert got[("beanstalkd_tube_cmd_delete_total", tube("emails"))] == 1
    assert got[("beanstalkd_tube_cmd_pause_tube_total", tube("emails"))] == 1
    assert got[("beanstalkd_tube_pause_seconds", tube("emails"))] == 30
    assert got[("beanstalkd_tube_pause_time_left_seconds", tube("emails"))] == 30
    srv.advance(10)
    got = await scrape(srv.port)
    assert got[("beanstalkd_tube_pause_time_left_seconds", tube("emails"))] == 20
    assert got[("beanstalkd_uptime_seconds", ())] == 10
    srv.advance(70)  # the pause ended and the reserved job's TTR (60 s) ran out
    got = await scrape(srv.port)
    assert got[("beanstalkd_tube_pause_seconds", tube("emails"))] == 0
    assert got[("beanstalkd_job_timeouts_total", ())] == 1
    assert got[("beanstalkd_current_jobs_reserved", ())] == 0


async def test_metrics_match_stats(srv: Server) -> None:
    c = await connect(srv)
    await c.call(b"use t\r\nput 0 0 1 1\r\nx\r\nput 0 5 1 1\r\ny\r\n", 3)
    got = await scrape(srv.port)
    header = await c.call(b"stats\r\n")
    size = int(header[0].split()[1])
    body = await asyncio.wait_for(c.reader.readexactly(size + 2), TIMEOUT)
    fields = dict(line.split(": ", 1) for line in body.decode().splitlines()[1:] if line)
    for key in ("current-jobs-ready", "current-jobs-delayed", "total-jobs", "cmd-use"):
        name = "beanstalkd_" + key.replace("-", "_")
        value = got.get((name, ())) or got.get((name + "_total", ()))
        assert value == int(fields[key]), key
    assert fields["id"] == next(dict(k[1])["id"] for k in got if k[0] == "beanstalkd_instance_info")


@pytest.mark.parametrize("srv", [3], indirect=True)
async def test_tube_cap_folds_into_other(srv: Server) -> None:
    c = await connect(srv)
    for i, n in enumerate((4, 1, 3, 2, 5)):  # tubes q0..q4 with n ready jobs each
        await c.call(b"use q%d\r\n" % i + b"put 0 0 60 1\r\nx\r\n" * n, 1 + n)
    got = await scrape(srv.port)
    ready = {
        dict(labels)["tube"]: v
        for (name, labels), v in got.items()
        if name == "beanstalkd_tube_current_jobs_ready"
    }
    # Kept: the three tubes with most jobs; q1, q3 and default summed.
    assert ready == {"q4": 5, "q0": 4, "q2": 3, OTHER_TUBE: 3}
    assert got[("beanstalkd_metrics_tubes_folded", ())] == 3
    assert got[("beanstalkd_tube_current_using", tube(OTHER_TUBE))] == 0
    assert got[("beanstalkd_tube_current_using", tube("q4"))] == 1
    assert sum(ready.values()) == got[("beanstalkd_current_jobs_ready", ())]


async def test_sampled_batch_histogram_and_reads(srv: Server) -> None:
    c = await connect(srv)
    for _ in range(BATCH_SAMPLE_EVERY * 2):
        await c.call(b"list-tube-used\r\n")
    got = await scrape(srv.port)
    reads = got[("beanstalkd_read_batches_total", ())]
    assert reads >= BATCH_SAMPLE_EVERY * 2
    count = got[("beanstalkd_read_batch_duration_seconds_count", ())]
    assert count == reads // BATCH_SAMPLE_EVERY
    assert got[("beanstalkd_read_batch_duration_seconds_bucket", (("le", "+Inf"),))] == count
    assert got[("beanstalkd_read_batch_duration_seconds_sum", ())] > 0


async def test_command_latency_is_labelled_by_command(srv: Server) -> None:
    c = await connect(srv)
    # one command per read; 1 read in BATCH_SAMPLE_EVERY is timed, so two blocks of 2 x that
    for _ in range(BATCH_SAMPLE_EVERY * 2):
        await c.call(b"put 0 0 60 1\r\nx\r\n")
    for _ in range(BATCH_SAMPLE_EVERY * 2):
        await c.call(b"stats-tube default\r\n", lines=1)
        await asyncio.wait_for(c.reader.readuntil(b"\n\r\n"), TIMEOUT)  # the YAML body
    got = await scrape(srv.port)
    puts = got[("beanstalkd_command_duration_seconds_count", (("cmd", "put"),))]
    tube_stats = got[("beanstalkd_command_duration_seconds_count", (("cmd", "stats-tube"),))]
    total = got[("beanstalkd_read_batch_duration_seconds_count", ())]
    assert puts >= 1 and tube_stats >= 1
    assert (
        sum(
            v for (name, _), v in got.items() if name == "beanstalkd_command_duration_seconds_count"
        )
        == total
    )


async def test_process_metrics_and_no_created_series(srv: Server) -> None:
    got = await scrape(srv.port)
    assert got[("process_cpu_seconds_total", ())] > 0
    assert got[("beanstalkd_up", ())] == 1
    assert got[("beanstalkd_ready", ())] == 1
    assert not [k for k in got if k[0].endswith("_created")]
    assert got[("beanstalkd_binlog_fsync_duration_seconds_count", ())] == 0
