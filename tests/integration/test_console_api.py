"""The web console's JSON API over real sockets: every action, the token rules, bodies.

Each test starts an in-process ``Server`` (or the real process, for the binlog) and talks HTTP
to it over loopback, and checks what the actions did through the beanstalk protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.client import RawClient
from support.inprocess import running
from support.servers import ours_argv
from support.servers import running as running_process

from beanstalk_py.app.cli import EXIT_USAGE
from beanstalk_py.console.api import PREVIEW_BYTES

TIMEOUT = 5.0
ADMIN = "admin-s3cret-token"
AUTH = "auth-s3cret-token"
CONSOLE = {"X-Beanstalk-Console": "1"}


class Reply:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def json(self) -> Any:
        return json.loads(self.body)


async def http(
    port: int,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    data = b"" if body is None else json.dumps(body).encode()
    hdrs = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
    if method == "POST":
        hdrs["Content-Length"] = str(len(data))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    try:
        writer.write(head.encode() + b"\r\n" + data)
        await writer.drain()
        return Reply(await asyncio.wait_for(reader.read(), TIMEOUT))
    finally:
        writer.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_file(tmp_path: Path, name: str, token: str) -> str:
    path = tmp_path / name
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


async def beanstalk(port: int, *commands: bytes) -> list[bytes]:
    """Send each command on one connection and return each reply."""
    c = await RawClient.connect("127.0.0.1", port)
    try:
        out = []
        for cmd in commands:
            await c.send(cmd)
            out.append(await c.read_reply())
        return out
    finally:
        await c.close()


def yaml_of(reply: bytes) -> Any:
    return yaml.safe_load(reply.split(b"\r\n", 1)[1])


async def job_state(port: int, job_id: int) -> str | None:
    (reply,) = await beanstalk(port, b"stats-job %d\r\n" % job_id)
    return None if reply.startswith(b"NOT_FOUND") else yaml_of(reply)["state"]


async def stats(port: int) -> dict[str, Any]:
    (reply,) = await beanstalk(port, b"stats\r\n")
    result: dict[str, Any] = yaml_of(reply)
    return result


async def bury_in(port: int, tube: bytes, body: bytes, n: int = 1) -> list[int]:
    """Put ``n`` jobs into ``tube`` and bury them; their ids."""
    c = await RawClient.connect("127.0.0.1", port)
    try:
        ids = []
        await c.send(b"use %s\r\nwatch %s\r\nignore default\r\n" % (tube, tube))
        for _ in range(3):
            await c.read_reply()
        for _ in range(n):
            await c.send(b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body))
            ids.append(int((await c.read_reply()).split()[1]))
            await c.send(b"reserve-job %d\r\n" % ids[-1])
            await c.read_reply()
            await c.send(b"bury %d 0\r\n" % ids[-1])
            assert await c.read_reply() == b"BURIED\r\n"
        return ids
    finally:
        await c.close()


# --- read-only without options -------------------------------------------------------------


async def test_default_console_is_read_only_without_bodies() -> None:
    async with running() as srv:
        port = srv.port
        (job_id,) = await bury_in(port, b"emails", b"secret body")
        page = await http(port, "GET", "/")
        assert page.status == 200 and b"beanstalk-py console" in page.body
        assert "default-src 'self'" in page.headers["content-security-policy"]
        js = await http(port, "GET", "/ui/static/uPlot.iife.min.js")
        assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
        ov = (await http(port, "GET", "/api/overview")).json()
        assert ov["stats"]["current-jobs-buried"] == 1 and ov["binlog"]["enabled"] is False
        tubes = (await http(port, "GET", "/api/tubes")).json()
        assert {k: v for k, v in tubes["items"][1].items() if k in ("name", "buried")} == {
            "name": "emails",
            "buried": 1,
        }
        tube = await http(port, "GET", "/api/tubes/emails")
        assert tube.status == 200
        assert tube.json()["next"]["buried"]["body"] is None
        assert tube.json()["next"]["buried"]["size"] == len(b"secret body")
        assert b"secret body" not in tube.body
        job = await http(port, "GET", f"/api/jobs/{job_id}")
        assert job.json()["job"]["stats"]["state"] == "buried" and b"secret" not in job.body
        # actions are refused, even for a caller that sends the browser's headers
        kick = await http(port, "POST", "/api/tubes/emails/kick", {"bound": 1}, CONSOLE)
        assert kick.status == 403 and "--admin-token-file" in kick.json()["error"]
        assert await job_state(port, job_id) == "buried"
        # a token nobody configured is wrong, not anonymous
        assert (await http(port, "GET", "/api/overview", headers=bearer("guess"))).status == 401
        who = (await http(port, "GET", "/api/whoami")).json()
        assert who == {
            "level": "read",
            "via": "anonymous",
            "admin_enabled": False,
            "token_required": False,
        }


async def test_reads_are_not_counted_as_commands() -> None:
    async with running() as srv:
        await bury_in(srv.port, b"t", b"x")
        before = await stats(srv.port)
        for path in ("/api/overview", "/api/tubes", "/api/tubes/t", "/api/jobs/1", "/"):
            assert (await http(srv.port, "GET", path)).status == 200, path
        after = await stats(srv.port)
        assert {k: v for k, v in after.items() if k.startswith("cmd-") and k != "cmd-stats"} == {
            k: v for k, v in before.items() if k.startswith("cmd-") and k != "cmd-stats"
        }
        assert after["total-connections"] == before["total-connections"] + 1


# --- the admin token -----------------------------------------------------------------------


async def test_admin_token_rules_for_bodies_and_actions(tmp_path: Path) -> None:
    async with running(admin_token_file=token_file(tmp_path, "admin", ADMIN)) as srv:
        port = srv.port
        (job_id,) = await bury_in(port, b"t", b"hello")
        path = f"/api/jobs/{job_id}"
        # none: reads without bodies; wrong: 401; right: bodies
        assert (await http(port, "GET", path)).json()["job"]["body"] is None
        wrong = await http(port, "GET", path, headers=bearer("admin-s3cret-tokem"))
        assert wrong.status == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        right = (await http(port, "GET", path, headers=bearer(ADMIN))).json()
        assert right["job"]["body"] == {
            "size": 5,
            "kind": "text",
            "text": "hello",
            "shown": 5,
            "truncated": False,
        }
        # actions: none and wrong are refused and change nothing
        assert (await http(port, "POST", f"{path}/kick", {}, CONSOLE)).status == 403
        assert (await http(port, "POST", f"{path}/kick", {}, bearer("nope"))).status == 401
        assert await job_state(port, job_id) == "buried"
        ok = await http(port, "POST", f"{path}/kick", {}, bearer(ADMIN))
        assert ok.status == 200 and ok.json() == {"kicked": job_id}
        assert await job_state(port, job_id) == "ready"
        # GET never acts
        assert (await http(port, "GET", f"{path}/delete", headers=bearer(ADMIN))).status == 404
        assert await job_state(port, job_id) == "ready"


async def test_every_action_goes_through_the_engine(tmp_path: Path) -> None:
    async with running(admin_token_file=token_file(tmp_path, "admin", ADMIN)) as srv:
        port = srv.port
        admin = bearer(ADMIN)
        ids = await bury_in(port, b"work", b"x", n=3)
        before = await stats(port)

        # kick N: buried first, in bury order
        r = await http(port, "POST", "/api/tubes/work/kick", {"bound": 2}, admin)
        assert r.json() == {"kicked": 2}
        assert [await job_state(port, i) for i in ids] == ["ready", "ready", "buried"]
        # kick a job
        r = await http(port, "POST", f"/api/jobs/{ids[2]}/kick", {}, admin)
        assert r.status == 200 and await job_state(port, ids[2]) == "ready"
        r = await http(port, "POST", f"/api/jobs/{ids[2]}/kick", {}, admin)
        assert r.status == 404  # not buried or delayed any more
        # kick N also kicks delayed jobs when nothing is buried
        c = await RawClient.connect("127.0.0.1", port)
        await c.send(b"use work\r\nput 0 500 60 1\r\nd\r\n")
        await c.read_reply()
        delayed = int((await c.read_reply()).split()[1])
        r = await http(port, "POST", "/api/tubes/work/kick", {"bound": 10}, admin)
        assert r.json() == {"kicked": 1} and await job_state(port, delayed) == "ready"
        # delete a job; a job reserved by a client is not the console's to delete
        r = await http(port, "POST", f"/api/jobs/{ids[0]}/delete", {}, admin)
        assert r.json() == {"deleted": ids[0]} and await job_state(port, ids[0]) is None
        await c.send(b"reserve-job %d\r\n" % ids[1])
        assert (await c.read_reply()).startswith(b"RESERVED")
        r = await http(port, "POST", f"/api/jobs/{ids[1]}/delete", {}, admin)
        assert r.status == 404 and await job_state(port, ids[1]) == "reserved"
        await c.close()
        # pause and unpause
        r = await http(port, "POST", "/api/tubes/work/pause", {"delay": 120}, admin)
        assert r.json() == {"paused": 120}
        (st,) = await beanstalk(port, b"stats-tube work\r\n")
        assert yaml_of(st)["pause"] == 120 and yaml_of(st)["cmd-pause-tube"] == 1
        r = await http(port, "POST", "/api/tubes/work/pause", {"delay": 0}, admin)
        assert r.status == 200
        srv.advance(0.01)
        (st,) = await beanstalk(port, b"stats-tube work\r\n")
        assert yaml_of(st)["pause"] == 0 and yaml_of(st)["cmd-pause-tube"] == 2
        # unknown tube / job, bad input
        assert (await http(port, "POST", "/api/tubes/nope/kick", {"bound": 1}, admin)).status == 404
        assert (
            await http(port, "POST", "/api/tubes/nope/pause", {"delay": 1}, admin)
        ).status == 404
        assert (await http(port, "POST", "/api/jobs/999/delete", {}, admin)).status == 404
        bad = await http(port, "POST", "/api/tubes/work/kick", {"bound": -1}, admin)
        assert bad.status == 400
        bad = await http(port, "POST", "/api/tubes/work/kick", {"bound": "1"}, admin)
        assert bad.status == 400
        # counted in stats like the protocol commands
        after = await stats(port)
        assert after["cmd-kick"] == before["cmd-kick"] + 2  # kick-job is not cmd-kick
        assert after["cmd-delete"] == before["cmd-delete"] + 3  # incl. the refused ones
        assert after["cmd-pause-tube"] == before["cmd-pause-tube"] + 3


async def test_kick_wakes_a_waiting_reserve(tmp_path: Path) -> None:
    async with running(admin_token_file=token_file(tmp_path, "admin", ADMIN)) as srv:
        (job_id,) = await bury_in(srv.port, b"q", b"wake")
        worker = await RawClient.connect("127.0.0.1", srv.port)
        await worker.send(b"watch q\r\nreserve\r\n")
        assert await worker.read_reply() == b"WATCHING 2\r\n"
        await worker.expect_nothing(0.05)
        r = await http(srv.port, "POST", "/api/tubes/q/kick", {"bound": 1}, bearer(ADMIN))
        assert r.status == 200
        assert await worker.read_reply() == b"RESERVED %d 4\r\nwake\r\n" % job_id
        await worker.close()


# --- login cookie and cross-site requests -----------------------------------------------------


async def test_login_cookie_and_cross_site_posts(tmp_path: Path) -> None:
    async with running(admin_token_file=token_file(tmp_path, "admin", ADMIN)) as srv:
        port = srv.port
        (job_id,) = await bury_in(port, b"t", b"b")
        origin = f"http://127.0.0.1:{port}"
        # a login needs the console's header (a cross-site form cannot send it)
        assert (await http(port, "POST", "/api/login", {"token": ADMIN})).status == 403
        bad = await http(port, "POST", "/api/login", {"token": "wrong"}, CONSOLE)
        assert bad.status == 403 and "set-cookie" not in bad.headers
        login = await http(
            port,
            "POST",
            "/api/login",
            {"token": ADMIN},
            {**CONSOLE, "Origin": origin, "Sec-Fetch-Site": "same-origin"},
        )
        assert login.status == 200 and login.json() == {"level": "admin"}
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and ADMIN not in cookie
        assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        jar = {"Cookie": cookie.split(";", 1)[0]}
        got = (await http(port, "GET", f"/api/jobs/{job_id}", headers=jar)).json()
        assert got["job"]["body"]["text"] == "b"
        kick = f"/api/jobs/{job_id}/kick"
        # cross-site: the cookie alone, a foreign Origin, or a cross-site fetch are refused
        for extra in (
            {},
            {**CONSOLE, "Origin": "http://evil.example"},
            {**CONSOLE, "Sec-Fetch-Site": "cross-site"},
            {**CONSOLE, "Sec-Fetch-Site": "same-site"},
        ):
            r = await http(port, "POST", kick, {}, {**jar, **extra})
            assert r.status == 403 and r.json()["error"] == "cross-site request refused", extra
            assert await job_state(port, job_id) == "buried"
        ok = await http(
            port,
            "POST",
            kick,
            {},
            {**jar, **CONSOLE, "Origin": origin, "Sec-Fetch-Site": "same-origin"},
        )
        assert ok.status == 200 and await job_state(port, job_id) == "ready"
        # a body that is not JSON (what a cross-site form sends) is refused too
        form = await http(
            port,
            "POST",
            f"/api/jobs/{job_id}/delete",
            {},
            {**jar, **CONSOLE, "Content-Type": "text/plain"},
        )
        assert form.status == 415 and await job_state(port, job_id) == "ready"
        # logout ends the session
        out = await http(port, "POST", "/api/logout", {}, {**jar, **CONSOLE})
        assert out.status == 200 and "Max-Age=0" in out.headers["set-cookie"]
        who = (await http(port, "GET", "/api/whoami", headers=jar)).json()
        assert who["level"] == "read" and who["via"] == "anonymous"


async def test_tokens_and_bodies_are_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(admin_token_file=token_file(tmp_path, "admin", ADMIN)) as srv:
        await bury_in(srv.port, b"t", b"body-marker")
        await http(srv.port, "POST", "/api/login", {"token": ADMIN}, CONSOLE)
        await http(srv.port, "POST", "/api/login", {"token": "wrong-marker"}, CONSOLE)
        await http(srv.port, "GET", "/api/tubes/t", headers=bearer(ADMIN))
        await http(srv.port, "GET", "/api/tubes/t", headers=bearer("wrong-marker"))
    for secret in (ADMIN, "wrong-marker", "body-marker"):
        assert secret not in caplog.text


# --- bodies ----------------------------------------------------------------------------------


async def test_binary_and_huge_bodies_are_previewed_safely(tmp_path: Path) -> None:
    opts = {"admin_token_file": token_file(tmp_path, "admin", ADMIN), "max_job_size": 1 << 20}
    async with running(**opts) as srv:
        binary = bytes(range(256))
        huge = b"<script>alert(1)</script>" + b"a" * 200_000
        utf8_cut = "é".encode() * 5000  # 10000 bytes; the cut falls inside a character
        ids = [(await bury_in(srv.port, b"t", body))[0] for body in (binary, huge, utf8_cut)]
        views = [
            (await http(srv.port, "GET", f"/api/jobs/{i}", headers=bearer(ADMIN))).json()["job"]
            for i in ids
        ]
        b = views[0]["body"]
        assert b["kind"] == "binary" and b["size"] == 256 and not b["truncated"]
        assert b["hex"].startswith("00 01 02") and b["hex"].endswith("fe ff")
        h = views[1]["body"]
        assert h["kind"] == "text" and h["size"] == len(huge) and h["truncated"]
        assert h["shown"] == PREVIEW_BYTES and h["text"].startswith("<script>")
        assert views[1]["size"] == len(huge)
        u = views[2]["body"]
        assert u["kind"] == "text" and u["truncated"] and u["size"] == 10000
        assert u["text"] == "é" * (PREVIEW_BYTES // 2)


# --- the tube table ----------------------------------------------------------------------------


async def test_tube_table_pages_sorts_and_filters() -> None:
    async with running() as srv:
        c = await RawClient.connect("127.0.0.1", srv.port)
        for i in range(120):
            await c.send(b"use tube-%03d\r\n" % i + b"put 0 0 60 1\r\nx\r\n" * (i % 7 + 1))
            await c.read_reply()
            for _ in range(i % 7 + 1):
                await c.read_reply()
        r = (await http(srv.port, "GET", "/api/tubes?limit=50&offset=100")).json()
        assert r["total"] == 121 and r["matched"] == 121 and len(r["items"]) == 21
        assert r["items"][0]["name"] == "tube-099"  # "default" sorts first
        r = (await http(srv.port, "GET", "/api/tubes?sort=ready&order=desc&limit=3")).json()
        assert [t["ready"] for t in r["items"]] == [7, 7, 7]
        assert [t["name"] for t in r["items"]] == ["tube-006", "tube-013", "tube-020"]
        r = (await http(srv.port, "GET", "/api/tubes?q=TUBE-11")).json()
        assert r["matched"] == 10 and r["total"] == 121
        assert (await http(srv.port, "GET", "/api/tubes?sort=__class__")).status == 400
        r = (await http(srv.port, "GET", "/api/tubes?limit=100000")).json()
        assert len(r["items"]) == 121 and r["limit"] == 500
        await c.close()


async def test_tube_names_with_slashes_and_plus(tmp_path: Path) -> None:
    async with running(admin_token_file=token_file(tmp_path, "admin", ADMIN)) as srv:
        (job_id,) = await bury_in(srv.port, b"a/b+c", b"x")
        r = await http(srv.port, "GET", "/api/tubes/a%2Fb%2Bc")
        assert r.status == 200 and r.json()["stats"]["name"] == "a/b+c"
        r = await http(srv.port, "POST", "/api/tubes/a%2Fb%2Bc/kick", {"bound": 1}, bearer(ADMIN))
        assert r.json() == {"kicked": 1} and await job_state(srv.port, job_id) == "ready"


# --- --auth-token-file: all of HTTP behind the token ---------------------------------------


async def test_auth_token_protects_every_path_but_health(tmp_path: Path) -> None:
    opts = {
        "auth_token_file": token_file(tmp_path, "auth", AUTH),
        "admin_token_file": token_file(tmp_path, "admin", ADMIN),
    }
    async with running(**opts) as srv:
        port = srv.port
        for path in ("/healthz", "/readyz"):
            assert (await http(port, "GET", path)).status == 200
        for path in ("/metrics", "/api/overview", "/api/tubes", "/api/tubes/default", "/api/rates"):
            r = await http(port, "GET", path)
            assert r.status == 401, path
            assert b"default" not in r.body and b"beanstalkd_" not in r.body
            assert (await http(port, "GET", path, headers=bearer("wrong"))).status == 401
            assert (await http(port, "GET", path, headers=bearer(AUTH))).status == 200, path
            assert (await http(port, "GET", path, headers=bearer(ADMIN))).status == 200, path
        metrics = await http(port, "GET", "/metrics", headers=bearer(AUTH))
        assert b"beanstalkd_current_connections" in metrics.body
        # the page shell carries no data and is what shows the login form
        assert (await http(port, "GET", "/")).status == 200
        assert (await http(port, "GET", "/api/whoami")).json()["level"] == "none"
        # the auth token reads but does not act or see bodies
        r = await http(port, "POST", "/api/tubes/default/pause", {"delay": 1}, bearer(AUTH))
        assert r.status == 403
        login = await http(port, "POST", "/api/login", {"token": AUTH}, CONSOLE)
        assert login.json() == {"level": "read"}
        jar = {"Cookie": login.headers["set-cookie"].split(";", 1)[0]}
        assert (await http(port, "GET", "/metrics", headers=jar)).status == 200
        # the beanstalk side still wants `auth` first
        assert await beanstalk(port, b"list-tubes\r\n") != [b"OK"]
        (reply,) = await beanstalk(port, b"stats\r\n")
        assert not reply.startswith(b"OK")


async def test_console_on_the_metrics_listener_with_no_http(tmp_path: Path) -> None:
    from beanstalk_py.shell.httpd import start_metrics_listener

    async with running(http=False, metrics_addr="127.0.0.1:0") as srv:
        listener = await start_metrics_listener(srv, "127.0.0.1:0")
        try:
            mport = listener.sockets[0].getsockname()[1]
            assert (await http(mport, "GET", "/api/overview")).status == 200
            assert (await http(mport, "GET", "/")).status == 200
            # --no-http: the beanstalk port does not speak HTTP, POST included
            c = await RawClient.connect("127.0.0.1", srv.port)
            await c.send(b"POST /api/login HTTP/1.1\r\n\r\n")
            assert await c.read_reply() == b"UNKNOWN_COMMAND\r\n"
            await c.close()
        finally:
            listener.close()


async def test_oversized_and_chunked_posts_are_refused(tmp_path: Path) -> None:
    async with running(admin_token_file=token_file(tmp_path, "admin", ADMIN)) as srv:
        r = await http(srv.port, "POST", "/api/login", {"token": "x" * 20000}, CONSOLE)
        assert r.status == 413
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"POST /api/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        assert Reply(raw).status == 411


# --- journaled with -b (the real process, restarted) --------------------------------------------


def test_actions_are_journaled_in_the_binlog(tmp_path: Path) -> None:
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    admin = token_file(tmp_path, "admin", ADMIN)
    argv = ours_argv("-b", str(binlog), "--admin-token-file", admin)

    async def first(port: int) -> list[int]:
        ids = await bury_in(port, b"j", b"keep", n=2)
        r = await http(port, "POST", f"/api/jobs/{ids[0]}/kick", {}, bearer(ADMIN))
        assert r.status == 200
        r = await http(port, "POST", f"/api/jobs/{ids[1]}/delete", {}, bearer(ADMIN))
        assert r.status == 200
        return ids

    with running_process(argv) as srv:
        ids = asyncio.run(first(srv.port))
    with running_process(argv) as srv:

        async def check() -> list[str | None]:
            return [await job_state(srv.port, i) for i in ids]

        assert asyncio.run(check()) == ["ready", None]
    assert os.listdir(binlog)


# --- rates and the flag ------------------------------------------------------------------------


async def test_rates_come_from_the_counters_sampled_each_second() -> None:
    async with running() as srv:
        rates = srv.console_ready().rates
        rates.stop()  # sample by hand from here on: one tick per "second"
        await beanstalk(srv.port, *[b"put 0 0 60 1\r\nx\r\n"] * 6)
        rates.tick()
        await beanstalk(srv.port, b"reserve\r\n", b"delete 1\r\n")
        rates.tick()
        got = (await http(srv.port, "GET", "/api/rates")).json()
        assert set(got) == {"t", "put", "reserve", "delete", "timeout"}
        assert len(got["t"]) >= 2 and got["t"] == sorted(got["t"])
        # six puts fell into one interval, the reserve and the delete into the next
        put, reserve, delete = got["put"][-2:], got["reserve"][-2:], got["delete"][-2:]
        assert put[0] > 0 and put[1] == 0
        assert reserve[0] == 0 and reserve[1] > 0 and delete[1] > 0


def test_admin_token_file_follows_the_token_file_rules(tmp_path: Path) -> None:
    import subprocess
    import sys

    from support.servers import ours_env

    loose = tmp_path / "loose"
    loose.write_text("tok\n")
    loose.chmod(0o644)
    for path, why in (
        (loose, "readable or writable by group or others"),
        (tmp_path / "absent", "No such file"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "beanstalk_py", "-p", "0", "--admin-token-file", str(path)],
            capture_output=True,
            text=True,
            timeout=20,
            env=ours_env(),
        )
        assert proc.returncode == EXIT_USAGE, proc.stderr
        assert f"--admin-token-file {path}: " in proc.stderr and why in proc.stderr
        assert "Traceback" not in proc.stderr


async def test_login_over_tls_sets_a_secure_cookie(tmp_path: Path) -> None:
    from support.pki import client_ctx, make_pki

    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    if pki is None:
        pytest.skip("neither the cryptography package nor the openssl CLI is available")
    g = pki["good"]
    opts = {
        "tls_cert": str(g["server_cert"]),
        "tls_key": str(g["server_key"]),
        "admin_token_file": token_file(tmp_path, "admin", ADMIN),
    }
    async with running(**opts) as srv:
        body = json.dumps({"token": ADMIN}).encode()
        r, w = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", srv.port, ssl=client_ctx(g["ca"]), server_hostname="localhost"
            ),
            TIMEOUT,
        )
        w.write(
            b"POST /api/login HTTP/1.1\r\nHost: localhost\r\nX-Beanstalk-Console: 1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        reply = Reply(await asyncio.wait_for(r.read(), TIMEOUT))
        w.close()
        assert reply.status == 200
        assert "; Secure" in reply.headers["set-cookie"]
        # the plaintext cookie of the other tests has no Secure flag (see the cookie test)
