"""HTTP on the beanstalk port and on the --metrics-addr listener: routes, statuses, bad input.

Every request goes over a real loopback socket to an in-process server; every read is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from beanstalk_py.core.clock import ManualClock
from beanstalk_py.shell import httpd
from beanstalk_py.shell.config import Config
from beanstalk_py.shell.httpd import start_metrics_listener
from beanstalk_py.shell.listeners import split_host_port as parse_hostport
from beanstalk_py.shell.server import Server

TIMEOUT = 5.0


@pytest.fixture
async def srv() -> AsyncIterator[Server]:
    server = Server(Config(host="127.0.0.1", port=0), clock=ManualClock())
    await asyncio.wait_for(server.start(), TIMEOUT)
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), TIMEOUT)


async def exchange(port: int, *chunks: bytes) -> bytes:
    """Send ``chunks`` (one write each) and read until the server closes."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = response.partition(b"\r\n\r\n")
    assert sep, response
    lines = head.decode("ascii").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    assert int(headers["content-length"]) == len(body) or not body
    assert headers["connection"] == "close"
    return int(status), headers, body


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return split(await exchange(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))


async def test_healthz_and_readyz(srv: Server) -> None:
    status, headers, body = await get(srv.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    status, _, body = await get(srv.port, "/readyz")
    assert (status, body) == (200, b"ready\n")


async def test_readyz_503_during_replay_and_when_draining(srv: Server) -> None:
    srv.ready = False
    status, _, body = await get(srv.port, "/readyz")
    assert (status, body) == (503, b"replaying binlog\n")
    assert (await get(srv.port, "/healthz"))[0] == 200  # alive all the same
    srv.set_ready()
    assert (await get(srv.port, "/readyz"))[0] == 200
    srv.engine.drain()
    status, _, body = await get(srv.port, "/readyz")
    assert (status, body) == (503, b"draining\n")


async def test_metrics_content_type(srv: Server) -> None:
    status, headers, body = await get(srv.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    assert b"beanstalkd_up 1" in body


async def test_head_has_headers_only(srv: Server) -> None:
    for path, status in (("/metrics", 200), ("/healthz", 200), ("/nope", 404)):
        raw = await exchange(srv.port, f"HEAD {path} HTTP/1.1\r\n\r\n".encode())
        code, headers, body = split(raw)
        assert (code, body) == (status, b"")
        assert int(headers["content-length"]) > 0


async def test_unknown_path_and_query_string(srv: Server) -> None:
    assert (await get(srv.port, "/"))[
        0
    ] == 200  # the console (tests/integration/test_console_api.py)
    assert (await get(srv.port, "/nope"))[0] == 404
    assert (await get(srv.port, "/metricsx"))[0] == 404
    assert (await get(srv.port, "/healthz?verbose=1"))[0] == 200
    assert (await get(srv.port, "http://example:80/healthz"))[0] == 200


async def test_request_split_across_reads(srv: Server) -> None:
    raw = await exchange(srv.port, b"G", b"ET /hea", b"lthz HTTP/1.0\r\n", b"A: b\r\n", b"\r\n")
    assert split(raw)[0] == 200
    raw = await exchange(srv.port, b"HE", b"AD /healthz HTTP/1.1\n\n")  # bare LF is accepted
    assert split(raw)[:1] == (200,)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz\r\n\r\n", 400),  # HTTP/0.9 style
        (b"GET  /healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 505),
        (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"GET /\xff\x00 HTTP/1.1\r\n\r\n", 400),
    ],
)
async def test_bad_requests(srv: Server, request_bytes: bytes, status: int) -> None:
    assert split(await exchange(srv.port, request_bytes))[0] == status


async def test_oversized_head_gets_431(srv: Server) -> None:
    big = b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * httpd.MAX_HEAD + b"\r\n\r\n"
    assert split(await exchange(srv.port, big))[0] == 431


async def test_http_client_is_not_a_beanstalk_connection(srv: Server) -> None:
    await get(srv.port, "/healthz")
    await asyncio.sleep(0)
    assert srv.engine.total_conns == 0 and srv.engine.cur_conns == 0
    # A beanstalk client on the same port is unaffected.
    raw = await exchange(srv.port, b"list-tube-used\r\nquit\r\n")
    assert raw == b"USING default\r\n"


async def test_http_request_leaves_no_trace_in_stats(srv: Server) -> None:
    """What a beanstalk client sees after an HTTP request on its port: only itself."""
    await get(srv.port, "/healthz")
    await get(srv.port, "/readyz")
    raw = await exchange(srv.port, b"stats-tube default\r\nstats\r\nquit\r\n")
    text = raw.decode()
    assert "\ncurrent-using: 1\n" in text and "\ncurrent-watching: 1\n" in text
    assert "\ncurrent-connections: 1\n" in text and "\ntotal-connections: 1\n" in text


async def test_http_disabled_on_beanstalk_port() -> None:
    server = Server(Config(host="127.0.0.1", port=0, http=False), clock=ManualClock())
    await server.start()
    try:
        raw = await exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\nquit\r\n")
        assert raw.startswith(b"UNKNOWN_COMMAND\r\n")
    finally:
        await server.stop()


async def test_metrics_listener(srv: Server) -> None:
    listener = await start_metrics_listener(srv, "127.0.0.1:0")
    try:
        port = listener.sockets[0].getsockname()[1]
        assert (await get(port, "/healthz"))[0] == 200
        status, _, body = await get(port, "/metrics")
        assert status == 200 and b"beanstalkd_current_connections 0" in body
        status, headers, _ = await get(port, "/metrics", method="POST")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        assert split(await exchange(port, b"put 0 0 1 1\r\nx\r\n\r\n"))[0] == 400
        srv.ready = False
        assert (await get(port, "/readyz"))[0] == 503
    finally:
        listener.close()
        await listener.wait_closed()


async def test_slow_head_is_closed(srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpd, "HEAD_TIMEOUT", 0.05)
    raw = await exchange(srv.port, b"GET /healthz HTTP/1.1\r\n")
    assert raw == b""


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_hostport(":9100") == (None, 9100)
    assert parse_hostport("[::1]:9100") == ("::1", 9100)
    for bad in ("9100", "host:", "host:x", "host:70000"):
        with pytest.raises(ValueError):
            parse_hostport(bad)
