"""stats, stats-tube, stats-job: exact YAML (docs/COMPATIBILITY.md, "Stats formats") and counters; cttests 32, 34-38.

String quoting follows 1.13 for beanstalk-py; ``server.quoted`` carries the reference's rules
(see ``support.yamlfmt.quoted_keys``, the single place that knows the difference).
"""

from __future__ import annotations

import pytest
import yaml
from support.harness import ServerHandle
from support.transcript import MARGIN, job_stats, settled_stats, stats_of, wait_for_stat
from support.yamlfmt import (
    STATS_JOB_KEYS,
    STATS_KEYS,
    STATS_TUBE_KEYS,
    check_dict,
    check_stats,
    render,
)

ZERO_STATS = {
    k: 0
    for k in STATS_KEYS
    if k.startswith(("current-jobs-", "cmd-", "binlog-")) or k in ("job-timeouts", "total-jobs")
}


def fresh_stats(server: ServerHandle, **changes: object) -> dict[str, object]:
    expected: dict[str, object] = dict(ZERO_STATS)
    expected.update(
        {
            "cmd-stats": 1,
            "max-job-size": server.max_job_size,
            "current-tubes": 1,
            "current-connections": 1,
            "current-producers": 0,
            "current-workers": 0,
            "current-waiting": 0,
            "total-connections": 1,
            "uptime": 0,
            "binlog-max-size": 10485760,
            "draining": False,
        }
    )
    expected.update({k.replace("_", "-"): v for k, v in changes.items()})
    return expected


def job_payload(server: ServerHandle, **fields: object) -> bytes:
    """The exact stats-job payload for the given field values (in protocol order)."""
    lines = [f"{k}: {render(k, fields[k], server.quoted)}\n" for k in STATS_JOB_KEYS]
    return ("---\n" + "".join(lines)).encode()


def tube_payload(server: ServerHandle, **fields: object) -> bytes:
    lines = [f"{k}: {render(k, fields[k], server.quoted)}\n" for k in STATS_TUBE_KEYS]
    return ("---\n" + "".join(lines)).encode()


def job(server: ServerHandle, job_id: int, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "id": job_id,
        "tube": "default",
        "state": "ready",
        "pri": 0,
        "age": 0,
        "delay": 0,
        "ttr": 1,
        "time-left": 0,
        "file": 0,
        "reserves": 0,
        "timeouts": 0,
        "releases": 0,
        "buries": 0,
        "kicks": 0,
    }
    fields.update({k.replace("_", "-"): v for k, v in changes.items()})
    return job_payload(server, **fields)


def tube(server: ServerHandle, name: str, **changes: object) -> bytes:
    fields: dict[str, object] = {k: 0 for k in STATS_TUBE_KEYS}
    fields["name"] = name
    fields.update({k.replace("_", "-"): v for k, v in changes.items()})
    return tube_payload(server, **fields)


async def test_fresh_stats_exact(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"stats\r\n")
    payload = await c.read_yaml()
    check_stats(payload, fresh_stats(server), server.quoted, pid=server.pid)
    loaded = yaml.safe_load(payload)
    assert loaded["cmd-stats"] == 1 and loaded["draining"] is False


@pytest.mark.server_args(max_job_size=10, drain=True)
async def test_stats_shows_options_and_draining(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"stats\r\n")
    payload = await c.read_yaml()
    check_stats(payload, fresh_stats(server, max_job_size=10, draining=True), server.quoted)


async def test_stats_counters_after_activity(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(
        b"put 0 0 10 1\r\na\r\n"  # cmd-put 1, job 1 urgent ready
        b"put 2000 0 10 1\r\nb\r\n"  # job 2 non-urgent
        b"put 0 100 10 1\r\nc\r\n"  # job 3 delayed
        b"put 0 0 10 1\r\nxyz\r\n"  # EXPECTED_CRLF: counted, id 4 consumed
        b"put 0 0 10 1 x\r\n"  # trailing garbage: counted, BAD_FORMAT
        b"put -1 0 10 1\r\n"  # parse failure: not counted
        b"reserve\r\n"  # job 1
        b"bury 1 5\r\n"
        b"delete 99\r\n"  # counted globally
        b"touch 99\r\n"
        b"release 99 0 0\r\n"
        b"peek 1\r\npeek-ready\r\npeek-delayed\r\npeek-buried\r\n"
        b"use default\r\nwatch default\r\nignore default\r\n"
        b"kick 0\r\nlist-tubes\r\nlist-tube-used\r\nlist-tubes-watched\r\n"
        b"stats-job 2\r\nstats-tube default\r\npause-tube default 0\r\n"
    )
    expected_replies = [
        b"INSERTED 1\r\n",
        b"INSERTED 2\r\n",
        b"INSERTED 3\r\n",
        b"EXPECTED_CRLF\r\n",
        b"UNKNOWN_COMMAND\r\n",
        b"BAD_FORMAT\r\n",
        b"BAD_FORMAT\r\n",
        b"RESERVED 1 1\r\na\r\n",
        b"BURIED\r\n",
        b"NOT_FOUND\r\n",
        b"NOT_FOUND\r\n",
        b"NOT_FOUND\r\n",
        b"FOUND 1 1\r\na\r\n",
        b"FOUND 2 1\r\nb\r\n",
        b"FOUND 3 1\r\nc\r\n",
        b"FOUND 1 1\r\na\r\n",
        b"USING default\r\n",
        b"WATCHING 1\r\n",
        b"NOT_IGNORED\r\n",
        b"KICKED 0\r\n",
    ]
    for reply in expected_replies:
        await a.expect(reply)
    for _ in range(2):  # list-tubes, list-tube-used
        await a.read_reply()
    await a.read_reply()  # list-tubes-watched
    await a.read_reply()  # stats-job 2
    await a.read_reply()  # stats-tube default
    await a.expect(b"PAUSED\r\n")
    await server.advance(0.01)  # let the 1 ns pause expire
    await a.send(b"reserve-with-timeout 0\r\nreserve-job 3\r\n")
    await a.expect(b"RESERVED 2 1\r\nb\r\nRESERVED 3 1\r\nc\r\n")
    await b.send(b"reserve\r\n")
    await wait_for_stat(a, "current-waiting", "1")
    await a.send(b"stats\r\n")
    payload = await a.read_yaml()
    expected = fresh_stats(
        server,
        current_jobs_urgent=0,
        current_jobs_ready=0,
        current_jobs_reserved=2,
        current_jobs_delayed=0,
        current_jobs_buried=1,
        cmd_put=5,
        cmd_peek=1,
        cmd_peek_ready=1,
        cmd_peek_delayed=1,
        cmd_peek_buried=1,
        cmd_reserve=2,
        cmd_reserve_with_timeout=1,
        cmd_delete=1,
        cmd_release=1,
        cmd_use=1,
        cmd_watch=1,
        cmd_ignore=1,
        cmd_bury=1,
        cmd_kick=1,
        cmd_touch=1,
        cmd_stats=None,
        cmd_stats_job=1,
        cmd_stats_tube=1,
        cmd_list_tubes=1,
        cmd_list_tube_used=1,
        cmd_list_tubes_watched=1,
        cmd_pause_tube=1,
        total_jobs=3,
        current_connections=2,
        current_producers=1,
        current_workers=2,
        current_waiting=1,
        total_connections=2,
    )
    raw = check_stats(payload, {k: v for k, v in expected.items() if v is not None}, server.quoted)
    assert int(raw["cmd-stats"]) >= 2  # the wait_for_stat polls also count


async def test_stats_job_exact(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Stats formats"
    c = await server.connect()
    await c.send(b"put 5 0 0 5\r\nhello\r\nstats-job 1\r\n")
    await c.expect(b"INSERTED 1\r\n")
    payload = await c.read_yaml()
    assert payload == job(server, 1, pri=5)
    check_dict(payload, STATS_JOB_KEYS, {"tube": "default", "state": "ready"}, server.quoted)
    assert len(payload) == (145 if "tube" in server.quoted else 143)


async def test_omit_time_left(server: ServerHandle) -> None:  # cttest 32
    c = await server.connect()
    await c.send(b"put 0 0 5 1\r\na\r\nstats-job 1\r\n")
    await c.expect(b"INSERTED 1\r\n")
    payload = await c.read_yaml()
    assert b"\ntime-left: 0\n" in payload
    assert payload == job(server, 1, ttr=5)


async def test_stats_job_reserved_delayed_buried(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(
        b"use jobs\r\nput 7 0 60 1\r\na\r\nput 8 30 60 1\r\nb\r\nwatch jobs\r\nreserve\r\n"
    )
    await c.expect(b"USING jobs\r\nINSERTED 1\r\nINSERTED 2\r\nWATCHING 2\r\nRESERVED 1 1\r\na\r\n")
    await server.advance(0.5)
    await c.send(b"stats-job 1\r\n")
    assert await c.read_yaml() == job(
        server, 1, tube="jobs", state="reserved", pri=7, ttr=60, time_left=59, reserves=1
    )
    await c.send(b"stats-job 2\r\n")
    assert await c.read_yaml() == job(
        server, 2, tube="jobs", state="delayed", pri=8, delay=30, ttr=60, time_left=29
    )
    await c.send(b"bury 1 9\r\nkick 1\r\nreserve\r\nrelease 1 3 0\r\nstats-job 1\r\n")
    await c.expect(b"BURIED\r\nKICKED 1\r\nRESERVED 1 1\r\na\r\nRELEASED\r\n")
    assert await c.read_yaml() == job(
        server, 1, tube="jobs", pri=3, ttr=60, reserves=2, releases=1, buries=1, kicks=1
    )
    await server.advance(0.5 + MARGIN)
    await c.send(b"stats-job 1\r\n")
    st = await c.read_yaml()
    assert b"\nage: 1\n" in st


async def test_delayed_to_ready(server: ServerHandle) -> None:  # cttest 34
    c = await server.connect()
    await c.send(b"put 0 1 1 0\r\n\r\n")
    await c.expect(b"INSERTED 1\r\n")
    st = await stats_of(c, b"stats-tube default")
    assert (st["current-jobs-ready"], st["current-jobs-delayed"], st["total-jobs"]) == (
        "0",
        "1",
        "1",
    )
    await server.advance(1.01)
    await settled_stats(
        server.reference,
        c,
        b"stats-tube default",
        {"current-jobs-ready": "1", "current-jobs-delayed": "0", "total-jobs": "1"},
    )


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"stats-job 111ABC", b"BAD_FORMAT"),  # cttest 35
        (b"stats-job 111 222", b"BAD_FORMAT"),
        (b"stats-job 111", b"NOT_FOUND"),
        (b"stats-job -1", b"BAD_FORMAT"),
        (b"stats-job 1 ", b"BAD_FORMAT"),
        (b"stats-job", b"BAD_FORMAT"),
        (b"stats-tube", b"BAD_FORMAT"),
        (b"stats-tube ", b"BAD_FORMAT"),
        (b"stats x", b"BAD_FORMAT"),
    ],
)
async def test_stats_bad_format(server: ServerHandle, line: bytes, reply: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(reply + b"\r\n")


async def test_stats_tube(server: ServerHandle) -> None:  # cttest 36
    c = await server.connect()
    await c.send(b"use tubea\r\nput 0 0 0 1\r\nx\r\ndelete 1\r\nstats-tube tubea\r\n")
    await c.expect(b"USING tubea\r\nINSERTED 1\r\nDELETED\r\n")
    payload = await c.read_yaml()
    assert payload == tube(server, "tubea", total_jobs=1, current_using=1, cmd_delete=1)
    check_dict(payload, STATS_TUBE_KEYS, {"name": "tubea"}, server.quoted)
    await c.send(b"stats-tube default\r\n")
    assert await c.read_yaml() == tube(server, "default", current_watching=1)


async def test_stats_tube_counts(server: ServerHandle) -> None:
    a = await server.connect()
    b = await server.connect()
    await a.send(b"use q\r\nput 1 0 9 1\r\na\r\nput 5000 0 9 1\r\nb\r\nput 1 50 9 1\r\nc\r\n")
    await a.expect(b"USING q\r\nINSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n")
    await a.send(b"watch q\r\nreserve\r\nbury 1 0\r\nreserve\r\n")
    await a.expect(b"WATCHING 2\r\nRESERVED 1 1\r\na\r\nBURIED\r\nRESERVED 2 1\r\nb\r\n")
    await a.send(b"put 2 0 9 1\r\nd\r\n")
    await a.expect(b"INSERTED 4\r\n")
    await b.send(b"watch q\r\nwatch other\r\nreserve\r\n")
    await b.expect(b"WATCHING 2\r\nWATCHING 3\r\nRESERVED 4 1\r\nd\r\n")
    await b.send(b"reserve\r\n")
    await wait_for_stat(a, "current-waiting", "1")
    await a.send(b"pause-tube q 30\r\ndelete 1\r\ndelete 77\r\n")
    await a.expect(b"PAUSED\r\nDELETED\r\nNOT_FOUND\r\n")
    await server.advance(0.5)
    await a.send(b"stats-tube q\r\n")
    assert await a.read_yaml() == tube(
        server,
        "q",
        current_jobs_reserved=2,
        current_jobs_delayed=1,
        total_jobs=4,
        current_using=1,
        current_watching=2,
        current_waiting=1,
        cmd_delete=1,
        cmd_pause_tube=1,
        pause=30,
        pause_time_left=29,
    )
    await a.send(b"stats-tube other\r\n")
    assert await a.read_yaml() == tube(server, "other", current_watching=1, current_waiting=1)
    await a.send(b"stats-tube default\r\n")
    assert await a.read_yaml() == tube(
        server, "default", current_using=1, current_watching=2, current_waiting=1
    )


async def test_stats_tube_name_quoting_keeps_yaml_type(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"use 1.5\r\nstats-tube 1.5\r\n")
    await c.expect(b"USING 1.5\r\n")
    payload = await c.read_yaml()
    check_dict(payload, STATS_TUBE_KEYS, {"name": "1.5", "current-using": 1}, server.quoted)
    if "name" in server.quoted:  # 1.13 (ours): a string; 1.12 would give a float
        assert yaml.safe_load(payload)["name"] == "1.5"


@pytest.mark.parametrize("ttr", [120, 4294, 4295, 4296, 4297, 5000, 21600, 4294967295])
async def test_ttrlarge(server: ServerHandle, ttr: int) -> None:  # cttest 37
    c = await server.connect()
    await c.send(b"put 0 0 %d 0\r\n\r\n" % ttr)
    await c.expect(b"INSERTED 1\r\n")
    st = await job_stats(c, 1)
    assert st["ttr"] == str(ttr)


async def test_ttr_small(server: ServerHandle) -> None:  # cttest 38
    c = await server.connect()
    await c.send(b"put 0 0 0 1\r\na\r\n")
    await c.expect(b"INSERTED 1\r\n")
    assert (await job_stats(c, 1))["ttr"] == "1"


async def test_list_payloads_parse_as_yaml_lists(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"watch a.b\r\nuse (x)\r\nlist-tubes\r\nlist-tubes-watched\r\n")
    await c.expect(b"WATCHING 2\r\nUSING (x)\r\n")
    assert yaml.safe_load(await c.read_yaml()) == ["default", "a.b", "(x)"]
    assert yaml.safe_load(await c.read_yaml()) == ["default", "a.b"]


async def test_producer_and_worker_counts_drop_on_close(server: ServerHandle) -> None:
    a = await server.connect()
    await a.send(b"put 0 0 1 0\r\n\r\nreserve-job 1\r\n")
    await a.expect(b"INSERTED 1\r\nRESERVED 1 0\r\n\r\n")
    b = await server.connect()
    st = await stats_of(b, b"stats")
    assert (st["current-producers"], st["current-workers"], st["current-connections"]) == (
        "1",
        "1",
        "2",
    )
    await a.send(b"quit\r\n")
    await a.expect_closed()
    await wait_for_stat(b, "current-connections", "1")
    st = await stats_of(b, b"stats")
    assert (st["current-producers"], st["current-workers"], st["total-connections"]) == (
        "0",
        "0",
        "2",
    )
    assert (st["current-jobs-ready"], st["current-jobs-reserved"]) == ("1", "0")
