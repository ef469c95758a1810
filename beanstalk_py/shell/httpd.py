"""A minimal HTTP/1.1 responder for ``/metrics``, ``/healthz``, ``/readyz`` and the console.

It serves two kinds of sockets: beanstalk connections whose first bytes were ``GET `` or
``HEAD `` (``Connection._become_http`` hands them over) and the optional ``--metrics-addr``
listener (``start_metrics_listener``). It runs on the server's loop thread, so reading engine
state needs no locks.

Invariants:

* One request per connection: the response carries ``Connection: close`` and the socket is
  closed once it is written. Bytes after the request head (a pipelined request, a body) are
  ignored; a GET or HEAD carries no body we need.
* The request head (request line and headers) is at most ``MAX_HEAD`` bytes and must arrive
  within ``HEAD_TIMEOUT`` seconds; otherwise 431 (too big) or a silent close (too slow).
* Client input never raises out of ``feed``: malformed heads get 400, a wrong HTTP version
  505, other methods 405, unknown paths 404. ``HEAD`` gets the GET headers without a body.
* Only POST (the console's actions) has a body: ``Content-Length`` of at most ``MAX_BODY``
  bytes (413 beyond, 411 for a chunked one), read before the request is answered.
* With ``--auth-token-file`` every path but ``/healthz`` and ``/readyz`` needs a token
  (``Authorization: Bearer``, or the console's login cookie); the console
  (``beanstalk_py.console``) decides, the page shell excepted so that it can show its login.
* ``/readyz`` is 503 while the binlog replays (``server.ready`` False), while draining and
  after a binlog failure; in cluster mode its body names the role (``leader``/``follower``),
  and it is 503 while the node has no leader to serve or relay to; ``/healthz`` is 200
  while the process serves (503 after a binlog failure, when it is about to exit).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, cast

from beanstalk_py.shell.listeners import split_host_port

if TYPE_CHECKING:
    from beanstalk_py.shell.metrics import ServerView

log = logging.getLogger("beanstalk_py.metrics")

MAX_HEAD = 8192
MAX_BODY = 8192
HEAD_TIMEOUT = 10.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_TEXT = "text/plain; charset=utf-8"
# RFC 9110 token characters for the method and header names.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# method SP request-target (visible ASCII only) SP HTTP-version
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/(\d)\.(\d)")
_END = re.compile(rb"\r?\n\r?\n")


class HttpHandler:
    """One HTTP connection: buffer the head, answer once, close."""

    __slots__ = ("_buf", "_done", "_timer", "server", "transport")

    def __init__(self, server: ServerView, transport: asyncio.Transport) -> None:
        self.server = server
        self.transport = transport
        self._buf = bytearray()
        self._done = False
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            HEAD_TIMEOUT, self._too_slow
        )

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        buf = self._buf
        buf += data
        m = _END.search(buf, 0, MAX_HEAD + 4)
        if m is None:
            if len(buf) > MAX_HEAD:
                self._respond(431, b"request head too large\n")
            return
        need = _body_length(buf, m.start())
        if need is None:
            self._respond(411, b"send a Content-Length\n")
            return
        if need > MAX_BODY:
            self._respond(413, b"request body too large\n")
            return
        if len(buf) < m.end() + need:
            return  # the rest of the body is on its way
        try:
            status, ctype, body, extra = self._handle(
                bytes(buf[: m.start()]), bytes(buf[m.end() : m.end() + need])
            )
        except Exception:
            # A bug here must not kill the connection silently or spam a traceback per scrape.
            log.exception("http request failed")
            status, ctype, body, extra = 500, _TEXT, b"internal error\n", ""
        head_only = buf.startswith(b"HEAD ")
        self._respond(status, body, ctype=ctype, extra=extra, head_only=head_only)

    def close(self) -> None:
        """The connection is gone: drop the timer."""
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if not self._done:
            self._done = True
            self.transport.close()

    def _handle(self, head: bytes, body: bytes = b"") -> tuple[int, str, bytes, str]:
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        m = _REQUEST_LINE.fullmatch(lines[0])
        if m is None:
            return 400, _TEXT, b"bad request line\n", ""
        if m[3] != b"1":
            return 505, _TEXT, b"HTTP/1.x only\n", ""
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or _TOKEN.fullmatch(name) is None:
                return 400, _TEXT, b"bad header line\n", ""
            headers[name.decode("ascii").lower()] = value.strip().decode("latin-1")
        method = m[1]
        path = m[2]
        if path.startswith((b"http://", b"https://")):  # absolute-form: keep only the path
            slash = path.find(b"/", path.index(b"//") + 2)
            path = path[slash:] if slash >= 0 else b"/"
        path, _, query = path.partition(b"?")
        if method not in (b"GET", b"HEAD", b"POST"):
            return 405, _TEXT, b"method not allowed\n", "Allow: GET, HEAD, POST\r\n"
        if path in (b"/healthz", b"/readyz"):
            if method == b"POST":
                return 405, _TEXT, b"method not allowed\n", "Allow: GET, HEAD\r\n"
            return self._route(path)
        # Everything else is behind the console's access rules (beanstalk_py.console.auth).
        from beanstalk_py.console.api import Request

        console = self.server.console_ready()
        tls = self.transport.get_extra_info("sslcontext") is not None
        req = Request(
            method.decode(), path.decode("ascii"), query.decode("ascii"), headers, body, tls
        )
        if path == b"/metrics":
            ident = console.identify(req)
            if ident is None or ident.level == 0:
                return 401, _TEXT, b"token required\n", _WWW_AUTH
            if method == b"POST":
                return 405, _TEXT, b"method not allowed\n", "Allow: GET, HEAD\r\n"
            return self._route(path)
        resp = console.handle(req)
        return resp.status, resp.ctype, resp.body, resp.headers

    def _route(self, path: bytes) -> tuple[int, str, bytes, str]:
        server = self.server
        if path == b"/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            from beanstalk_py.shell.metrics import exporter_for

            return 200, CONTENT_TYPE_LATEST, exporter_for(server).render(), ""
        if path == b"/healthz":
            if server.failed:
                return 503, _TEXT, b"failed\n", ""
            return 200, _TEXT, b"ok\n", ""
        if path == b"/readyz":
            if server.failed:
                return 503, _TEXT, b"failed\n", ""
            cluster = server.cluster
            if cluster is not None:
                # Followers serve too (they relay to the leader); a node between roles or
                # without a leader to relay to does not.
                line = f"{cluster.role} {cluster.node_id} leader={cluster.leader or '-'}\n"
                ok = cluster.role == "leader" or (cluster.role == "follower" and cluster.leader)
                return (200 if ok else 503), _TEXT, line.encode(), ""
            if not server.ready:
                return 503, _TEXT, b"replaying binlog\n", ""
            if server.engine.draining:
                return 503, _TEXT, b"draining\n", ""
            return 200, _TEXT, b"ready\n", ""
        return 404, _TEXT, b"not found\n", ""

    def _respond(
        self,
        status: int,
        body: bytes,
        *,
        ctype: str = _TEXT,
        extra: str = "",
        head_only: bool = False,
    ) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n"
        ).encode("ascii")
        tr = self.transport
        if tr.is_closing():
            return
        tr.write(head if head_only else head + body)
        tr.close()


_WWW_AUTH = 'WWW-Authenticate: Bearer realm="beanstalk-py"\r\n'
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:[ \t]*(\d{1,12})[ \t]*\r?(?:\n|$)", re.I)


_CHUNKED = re.compile(rb"\ntransfer-encoding:", re.I)


def _body_length(buf: bytearray, end: int) -> int | None:
    """Body bytes after the head (0 unless POST); None: a chunked body (not supported)."""
    if not buf.startswith(b"POST "):
        return 0
    m = _CONTENT_LENGTH.search(buf, 0, end)
    if m is not None:
        return int(m[1])
    return None if _CHUNKED.search(buf, 0, end) else 0


class _MetricsProtocol(asyncio.Protocol):
    """A socket of the ``--metrics-addr`` listener: HTTP only, any method reaches the handler."""

    def __init__(self, server: ServerView) -> None:
        self.server = server
        self.handler: HttpHandler | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler = HttpHandler(self.server, cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        assert self.handler is not None
        self.handler.feed(data)

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handler is not None:
            self.handler.close()


async def start_metrics_listener(server: ServerView, addr: str) -> asyncio.Server:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``addr`` (``--metrics-addr``).

    The caller closes the returned server at shutdown. Raises ValueError for a malformed
    address and OSError when it cannot listen.
    """
    host, port = split_host_port(addr)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: _MetricsProtocol(server), host=host, port=port, reuse_address=True
    )
    for sock in srv.sockets:
        log.info("metrics listening on %s", sock.getsockname())
    return srv
