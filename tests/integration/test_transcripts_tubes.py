"""Tubes: use/watch/ignore/list-*, name rules, lifetime and list order (docs/COMPATIBILITY.md:
"Argument parsing", "Commands", "Tube lifetime and list order").

cttests 18, 52, 53 and the tube quirks of COMPATIBILITY.md, "Quirks pinned by tests".
"""

from __future__ import annotations

import pytest
from support.harness import ServerHandle
from support.transcript import stats_of
from support.yamlfmt import list_reply

NAME_200 = b"x" * 200


async def test_underscore(server: ServerHandle) -> None:  # cttest 18
    c = await server.connect()
    await c.send(b"use x_y\r\n")
    await c.expect(b"USING x_y\r\n")


async def test_list_tube(server: ServerHandle) -> None:  # cttest 52
    c = await server.connect()
    await c.send(b"watch w\r\n")
    await c.expect(b"WATCHING 2\r\n")
    await c.send(b"use u\r\n")
    await c.expect(b"USING u\r\n")
    await c.send(b"list-tubes\r\n")
    await c.expect(b"OK 22\r\n---\n- default\n- w\n- u\n\r\n")
    await c.send(b"list-tube-used\r\n")
    await c.expect(b"USING u\r\n")
    await c.send(b"list-tubes-watched\r\n")
    await c.expect(b"OK 18\r\n---\n- default\n- w\n\r\n")
    await c.send(b"ignore default\r\n")
    await c.expect(b"WATCHING 1\r\n")
    await c.send(b"list-tubes-watched\r\n")
    await c.expect(b"OK 8\r\n---\n- w\n\r\n")
    await c.send(b"ignore w\r\n")
    await c.expect(b"NOT_IGNORED\r\n")


async def test_use_tube_long(server: ServerHandle) -> None:  # cttest 53
    c = await server.connect()
    await c.send(b"use " + NAME_200 + b"\r\n")
    await c.expect(b"USING " + NAME_200 + b"\r\n")
    await c.send(b"use " + NAME_200 + b"x\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


@pytest.mark.parametrize("verb", [b"use", b"watch", b"ignore", b"stats-tube"])
@pytest.mark.parametrize(
    "name",
    [
        b" foo",  # COMPATIBILITY.md Quirks: no leading-space skipping
        b"foo ",  # no trailing text
        b"-foo",
        b"a*b",
        b"a b",
        b"a\tb",
        b"a:b",
        b"a#b",
        b"\xc3\xa9",
        NAME_200 + b"x",
    ],
)
async def test_bad_tube_names(server: ServerHandle, verb: bytes, name: bytes) -> None:
    c = await server.connect()
    await c.send(verb + b" " + name + b"\r\n")
    await c.expect(b"BAD_FORMAT\r\n")


@pytest.mark.parametrize(
    "name", [b"(a);$.+/_", b"fo-o", b"A-Za-z0-9", b"1.5", b"$", b"x", b"Default", NAME_200]
)
async def test_good_tube_names(server: ServerHandle, name: bytes) -> None:
    c = await server.connect()
    await c.send(b"use " + name + b"\r\nwatch " + name + b"\r\nlist-tubes\r\n")
    await c.expect(b"USING " + name + b"\r\nWATCHING 2\r\n")
    await c.expect(list_reply(["default", name.decode()]))


async def test_watch_existing_is_noop_and_ignore_rules(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"watch default\r\nwatch a\r\nwatch a\r\n")
    await c.expect(b"WATCHING 1\r\nWATCHING 2\r\nWATCHING 2\r\n")
    await c.send(b"ignore nonexist\r\nlist-tubes\r\n")  # not created by ignore
    await c.expect(b"WATCHING 2\r\n" + list_reply(["default", "a"]))
    await c.send(b"ignore a\r\nignore a\r\nignore default\r\n")
    await c.expect(b"WATCHING 1\r\nWATCHING 1\r\nNOT_IGNORED\r\n")


async def test_stats_tube_and_pause_do_not_create(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"stats-tube nope\r\npause-tube nope 1\r\nlist-tubes\r\n")
    await c.expect(b"NOT_FOUND\r\nNOT_FOUND\r\n" + list_reply(["default"]))


async def test_list_tubes_swap_remove_on_destroy(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Tube lifetime and list order"
    holders = []
    for name in (b"t1", b"t2", b"t3", b"t4"):
        h = await server.connect()
        await h.send(b"use " + name + b"\r\n")
        await h.expect(b"USING " + name + b"\r\n")
        holders.append(h)
    c = await server.connect()
    await c.send(b"list-tubes\r\n")
    await c.expect(list_reply(["default", "t1", "t2", "t3", "t4"]))
    await holders[1].send(b"use default\r\n")  # t2 loses its last reference
    await holders[1].expect(b"USING default\r\n")
    await c.send(b"list-tubes\r\n")
    await c.expect(list_reply(["default", "t1", "t4", "t3"]))
    await c.send(b"use t2\r\nlist-tubes\r\n")  # re-created at the end
    await c.expect(b"USING t2\r\n" + list_reply(["default", "t1", "t4", "t3", "t2"]))


async def test_list_tubes_watched_swap_remove_on_ignore(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Tube lifetime and list order"
    c = await server.connect()
    await c.send(b"watch t1\r\nwatch t2\r\nwatch t3\r\nwatch t4\r\n")
    await c.expect(b"WATCHING 2\r\nWATCHING 3\r\nWATCHING 4\r\nWATCHING 5\r\n")
    await c.send(b"ignore default\r\nlist-tubes-watched\r\n")
    await c.expect(b"WATCHING 4\r\n" + list_reply(["t4", "t1", "t2", "t3"]))
    await c.send(b"ignore t2\r\nlist-tubes-watched\r\n")
    await c.expect(b"WATCHING 3\r\n" + list_reply(["t4", "t1", "t3"]))
    await c.send(b"list-tubes\r\n")  # default survives; t2 is gone
    await c.expect(list_reply(["default", "t1", "t4", "t3"]))


async def test_disconnect_destroys_tubes_in_watch_list_order(server: ServerHandle) -> None:
    """On close the watch list is emptied by removing element 0 (swap-remove) each time."""
    a = await server.connect()
    await a.send(b"watch t1\r\nwatch t2\r\nwatch t3\r\nwatch t4\r\n")
    await a.expect(b"WATCHING 2\r\nWATCHING 3\r\nWATCHING 4\r\nWATCHING 5\r\n")
    c = await server.connect()
    await c.send(b"watch t5\r\nwatch t6\r\n")  # created after a's tubes, survive
    await c.expect(b"WATCHING 2\r\nWATCHING 3\r\n")
    await c.send(b"list-tubes\r\n")
    await c.expect(list_reply(["default", "t1", "t2", "t3", "t4", "t5", "t6"]))
    await a.send(b"quit\r\n")
    await a.expect_closed()
    # a's watch list [default,t1,t2,t3,t4] loses element 0 each time: default, t4, t3, t2, t1.
    # Destroying t4, t3, t2, t1 in that order (swap-remove) leaves t5 before t6; the
    # opposite order would leave t6 before t5.
    await c.send(b"list-tubes\r\n")
    await c.expect(list_reply(["default", "t5", "t6"]))


async def test_tube_lives_while_jobs_or_refs_exist(server: ServerHandle) -> None:
    a = await server.connect()
    await a.send(b"use keep\r\nput 0 0 10 1\r\nk\r\nuse default\r\n")
    await a.expect(b"USING keep\r\nINSERTED 1\r\nUSING default\r\n")
    await a.send(b"list-tubes\r\n")
    await a.expect(list_reply(["default", "keep"]))  # the job holds it
    await a.send(b"delete 1\r\nlist-tubes\r\nstats-tube keep\r\n")
    await a.expect(b"DELETED\r\n" + list_reply(["default"]) + b"NOT_FOUND\r\n")


async def test_destroyed_tube_loses_counters_and_pause(server: ServerHandle) -> None:
    a = await server.connect()
    await a.send(b"use p\r\nput 0 0 10 1\r\nx\r\ndelete 1\r\npause-tube p 100\r\n")
    await a.expect(b"USING p\r\nINSERTED 1\r\nDELETED\r\nPAUSED\r\n")
    st = await stats_of(a, b"stats-tube p")
    assert (st["total-jobs"], st["cmd-delete"], st["cmd-pause-tube"], st["pause"]) == (
        "1",
        "1",
        "1",
        "100",
    )
    await a.send(b"use default\r\nuse p\r\n")
    await a.expect(b"USING default\r\nUSING p\r\n")
    st = await stats_of(a, b"stats-tube p")
    assert (st["total-jobs"], st["cmd-delete"], st["cmd-pause-tube"], st["pause"]) == (
        "0",
        "0",
        "0",
        "0",
    )


async def test_paused_tube_vanishes_when_last_watcher_ignores(server: ServerHandle) -> None:
    a = await server.connect()
    await a.send(b"watch pz\r\npause-tube pz 100\r\nignore pz\r\nstats-tube pz\r\n")
    await a.expect(b"WATCHING 2\r\nPAUSED\r\nWATCHING 1\r\nNOT_FOUND\r\n")


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"pause-tubedefault 0", b"PAUSED"),  # COMPATIBILITY.md Quirks: no space needed
        (b"pause-tube   default   5", b"PAUSED"),
        (b"pause-tube default10", b"BAD_FORMAT"),  # digits belong to the name
        (b"pause-tube default 10 ", b"BAD_FORMAT"),
        (b"pause-tube default 10x", b"BAD_FORMAT"),
        (b"pause-tube default -1", b"BAD_FORMAT"),
        (b"pause-tube default 4294967296", b"BAD_FORMAT"),
        (b"pause-tube default 4294967295", b"PAUSED"),
        (b"pause-tube default", b"BAD_FORMAT"),
        (b"pause-tube -x 1", b"BAD_FORMAT"),
        (b"pause-tube a*b 1", b"BAD_FORMAT"),
        (b"pause-tube " + NAME_200 + b"x 1", b"BAD_FORMAT"),
        (b"pause-tube missing 1", b"NOT_FOUND"),
    ],
)
async def test_pause_tube_parsing(server: ServerHandle, line: bytes, reply: bytes) -> None:
    c = await server.connect()
    await c.send(line + b"\r\n")
    await c.expect(reply + b"\r\n")


async def test_pause_tube_bad_name_is_still_counted(server: ServerHandle) -> None:
    # docs/COMPATIBILITY.md, "Quirks pinned by tests"
    c = await server.connect()
    await c.send(b"pause-tube -x 1\r\n")
    await c.expect(b"BAD_FORMAT\r\n")
    assert (await stats_of(c, b"stats"))["cmd-pause-tube"] == "1"
    st = await stats_of(c, b"stats-tube default")
    assert st["cmd-pause-tube"] == "0"


async def test_use_releases_previous_tube(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"use a\r\nuse b\r\nlist-tubes\r\nlist-tube-used\r\n")
    await c.expect(b"USING a\r\nUSING b\r\n" + list_reply(["default", "b"]) + b"USING b\r\n")


async def test_pause_zero_unpauses_and_reports_zero(server: ServerHandle) -> None:
    c = await server.connect()
    await c.send(b"put 0 0 10 1\r\nx\r\npause-tube default 60\r\npause-tube default 0\r\n")
    await c.expect(b"INSERTED 1\r\nPAUSED\r\nPAUSED\r\n")
    st = await stats_of(c, b"stats-tube default")
    assert (st["pause"], st["pause-time-left"], st["cmd-pause-tube"]) == ("0", "0", "2")
    await server.advance(0.01)
    await c.send(b"reserve-with-timeout 1\r\n")
    await c.expect(b"RESERVED 1 1\r\nx\r\n")
