"""The console's HTTP routes: the page, its static files and the JSON API under ``/api/``.

``Console.handle`` turns one parsed ``Request`` into a ``Response``; the HTTP framing (one
request per connection, size limits) is ``beanstalk_py.http``'s job.

Invariants:

* Job bodies leave the server only for ``ADMIN`` callers, as a preview: UTF-8 text without
  control characters as text, anything else as hex, at most ``PREVIEW_BYTES`` bytes, with the
  full size. The page renders them with ``textContent`` only.
* Actions are POST with a JSON body, need ``ADMIN``, and pass ``auth.same_origin`` unless they
  came with a Bearer token. Reads are GET/HEAD.
* The tube table is paged, sorted and filtered here, so a page never carries more than
  ``MAX_LIMIT`` rows however many tubes exist.
* Nothing here logs a token or a body.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from beanstalk_py.console import auth
from beanstalk_py.console.backend import ConsoleBackend, JobView, TubeRow
from beanstalk_py.console.rates import RateSampler

PREVIEW_BYTES = 4096
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
U32 = 0xFFFFFFFF

_JSON = "application/json"
_STATIC_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
}
# Every console response: no caching of data, no framing, no sniffing, our own origin only.
SECURITY_HEADERS = (
    "Cache-Control: no-store\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; frame-ancestors 'none'; form-action 'self'\r\n"
)
SORT_KEYS = frozenset(TubeRow.__dataclass_fields__)
PEEK_STATES = ("ready", "delayed", "buried")


@dataclass(slots=True)
class Request:
    method: str
    path: str  # still percent-encoded; segments are decoded one by one
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""
    tls: bool = False  # the connection is TLS: the session cookie gets ``Secure``


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    ctype: str = _JSON
    headers: str = ""  # extra header lines, each ending in CRLF


def _json(status: int, obj: object, headers: str = "") -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return Response(status, body, _JSON, headers)


def _error(status: int, message: str, headers: str = "") -> Response:
    return _json(status, {"error": message}, headers)


_UNAUTHORIZED = 'WWW-Authenticate: Bearer realm="beanstalk-py"\r\n'


def preview(body: bytes) -> dict[str, Any]:
    """A body shown safely: text when it is printable UTF-8, hex otherwise; truncated."""
    head = body[:PREVIEW_BYTES]
    truncated = len(body) > len(head)
    text: str | None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut through a multi-byte character is not binary.
        text = None
        if truncated and exc.start >= len(head) - 3:
            try:
                text = head[: exc.start].decode("utf-8")
            except UnicodeDecodeError:
                text = None
    if text is not None and all(c >= " " or c in "\t\n\r" for c in text) and "\x7f" not in text:
        shown = len(text.encode("utf-8"))
        return {
            "size": len(body),
            "kind": "text",
            "text": text,
            "shown": shown,
            "truncated": len(body) > shown,
        }
    return {
        "size": len(body),
        "kind": "binary",
        "hex": head.hex(" "),
        "shown": len(head),
        "truncated": truncated,
    }


def _static_files() -> dict[str, bytes]:
    """Every file of ``static/`` (they ship inside the package; read once, on first use)."""
    root = os.path.join(os.path.dirname(__file__), "static")
    files: dict[str, bytes] = {}
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if os.path.isfile(path) and not name.startswith("."):
            with open(path, "rb") as f:
                files[name] = f.read()
    return files


class Console:
    __slots__ = ("_static", "auth", "backend", "rates")

    def __init__(self, backend: ConsoleBackend, access: auth.ConsoleAuth) -> None:
        self.backend = backend
        self.auth = access
        self.rates = RateSampler(backend)
        self._static: dict[str, bytes] | None = None

    # --- entry points -----------------------------------------------------------------

    def identify(self, req: Request) -> auth.Identity | None:
        return self.auth.identify(req.headers)

    def handle(self, req: Request) -> Response:
        resp = self._dispatch(req)
        resp.headers = SECURITY_HEADERS + resp.headers
        return resp

    def _dispatch(self, req: Request) -> Response:
        path = req.path
        if path in ("/", "/ui", "/ui/"):
            return self._get_static(req, "index.html")
        if path.startswith("/ui/static/"):
            return self._get_static(req, path[len("/ui/static/") :])
        if not path.startswith("/api/"):
            return _error(404, "not found")
        parts = [unquote(p) for p in path[len("/api/") :].split("/")]
        if parts == ["login"]:
            return self._login(req)
        if parts == ["logout"]:
            return self._logout(req)
        ident = self.identify(req)
        if ident is None:
            return _error(401, "wrong token", _UNAUTHORIZED)
        if parts == ["whoami"]:
            return self._need_get(req) or self._whoami(ident)
        if ident.level < auth.READ:
            return _error(401, "token required", _UNAUTHORIZED)
        if req.method == "POST":
            return self._action(req, ident, parts)
        if req.method not in ("GET", "HEAD"):
            return _error(405, "method not allowed", "Allow: GET, HEAD, POST\r\n")
        return self._read(req, ident, parts)

    # --- static -----------------------------------------------------------------------

    def _get_static(self, req: Request, name: str) -> Response:
        bad = self._need_get(req)
        if bad is not None:
            return bad
        if self._static is None:
            self._static = _static_files()
        data = self._static.get(name)
        if data is None:
            return _error(404, "not found")
        ext = name.rsplit(".", 1)[-1]
        return Response(200, data, _STATIC_TYPES.get(ext, "application/octet-stream"))

    @staticmethod
    def _need_get(req: Request) -> Response | None:
        if req.method in ("GET", "HEAD"):
            return None
        return _error(405, "method not allowed", "Allow: GET, HEAD\r\n")

    # --- login ------------------------------------------------------------------------

    def _whoami(self, ident: auth.Identity) -> Response:
        return _json(
            200,
            {
                "level": auth.LEVEL_NAMES[ident.level],
                "via": ident.via,
                "admin_enabled": self.auth.admin_token is not None,
                "token_required": self.auth.read_needs_token,
            },
        )

    def _login(self, req: Request) -> Response:
        if req.method != "POST":
            return _error(405, "method not allowed", "Allow: POST\r\n")
        if not auth.same_origin(req.headers):
            return _error(403, "cross-site request refused")
        data = _json_body(req)
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            return _error(400, 'expected {"token": "..."}')
        got = self.auth.login(token.strip().encode("utf-8", "surrogateescape"))
        if got is None:
            return _error(403, "wrong token")
        level, sid = got
        cookie = (
            f"Set-Cookie: {auth.COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={int(auth.SESSION_TTL)}{'; Secure' if req.tls else ''}\r\n"
        )
        return _json(200, {"level": auth.LEVEL_NAMES[level]}, cookie)

    def _logout(self, req: Request) -> Response:
        if req.method != "POST":
            return _error(405, "method not allowed", "Allow: POST\r\n")
        if not auth.same_origin(req.headers):
            return _error(403, "cross-site request refused")
        self.auth.logout(req.headers)
        cookie = f"Set-Cookie: {auth.COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0\r\n"
        return _json(200, {"level": "none"}, cookie)

    # --- reads ------------------------------------------------------------------------

    def _read(self, req: Request, ident: auth.Identity, parts: list[str]) -> Response:
        b = self.backend
        admin = ident.level >= auth.ADMIN
        if parts == ["overview"]:
            return _json(200, b.overview())
        if parts == ["rates"]:
            return _json(200, self.rates.as_json())
        if parts == ["tubes"]:
            return self._tubes(req)
        if len(parts) == 2 and parts[0] == "tubes":
            stats = b.tube(parts[1])
            if stats is None:
                return _error(404, "no such tube")
            peeks = {s: _job_json(b.peek(parts[1], s), admin) for s in PEEK_STATES}
            return _json(200, {"stats": stats, "next": peeks, "bodies": admin})
        if len(parts) == 2 and parts[0] == "jobs":
            job_id = _int(parts[1], 2**64 - 1)
            view = b.job(job_id) if job_id is not None else None
            if view is None:
                return _error(404, "no such job")
            return _json(200, {"job": _job_json(view, admin), "bodies": admin})
        return _error(404, "not found")

    def _tubes(self, req: Request) -> Response:
        q = parse_qs(req.query)
        offset = _int(q.get("offset", ["0"])[0], 2**31) or 0
        limit = _int(q.get("limit", [str(DEFAULT_LIMIT)])[0], MAX_LIMIT)
        limit = DEFAULT_LIMIT if limit is None else limit
        sort = q.get("sort", ["name"])[0]
        if sort not in SORT_KEYS:
            return _error(400, f"sort must be one of {sorted(SORT_KEYS)}")
        desc = q.get("order", ["asc"])[0] == "desc"
        needle = q.get("q", [""])[0].lower()
        b = self.backend
        names: list[str]
        if sort == "name":
            names = b.tube_names()
            total = len(names)
            if needle:
                names = [n for n in names if needle in n.lower()]
            names.sort(reverse=desc)
        else:
            col = b.tube_column(sort)
            total = len(col)
            if needle:
                col = [c for c in col if needle in c[1].lower()]
            # ties in name order, whatever the direction
            if desc:
                col.sort(key=lambda c: (-c[0], c[1]))
            else:
                col.sort()
            names = [c[1] for c in col]
        page = b.tube_rows(names[offset : offset + limit])
        return _json(
            200,
            {
                "total": total,
                "matched": len(names),
                "offset": offset,
                "limit": limit,
                "sort": sort,
                "order": "desc" if desc else "asc",
                "items": [asdict(r) for r in page],
            },
        )

    # --- actions ----------------------------------------------------------------------

    def _action(self, req: Request, ident: auth.Identity, parts: list[str]) -> Response:
        if ident.via != "bearer" and not auth.same_origin(req.headers):
            return _error(403, "cross-site request refused")
        if ident.level < auth.ADMIN:
            if self.auth.admin_token is None:
                return _error(403, "read-only console: start the server with --admin-token-file")
            return _error(403, "the admin token is required")
        if req.body and not req.headers.get("content-type", "").startswith(_JSON):
            return _error(415, "send application/json")
        data = _json_body(req)
        if not isinstance(data, dict):
            return _error(400, "expected a JSON object")
        b = self.backend
        if len(parts) == 3 and parts[0] == "tubes":
            name, verb = parts[1], parts[2]
            if verb == "kick":
                bound = _num(data.get("bound", 1), U32)
                if bound is None:
                    return _error(400, "bound: an integer 0..4294967295")
                kicked = b.kick(name, bound)
                if kicked is None:
                    return _error(404, "no such tube")
                return _json(200, {"kicked": kicked})
            if verb == "pause":
                delay = _num(data.get("delay", 0), U32)
                if delay is None:
                    return _error(400, "delay: an integer 0..4294967295 (seconds, 0 unpauses)")
                if not b.pause(name, delay):
                    return _error(404, "no such tube")
                return _json(200, {"paused": delay})
        if len(parts) == 3 and parts[0] == "jobs":
            job_id = _int(parts[1], 2**64 - 1)
            verb = parts[2]
            if verb in ("kick", "delete"):
                if job_id is None:
                    return _error(404, "no such job")
                if verb == "kick":
                    if not b.kick_job(job_id):
                        return _error(404, "no such job, or not buried or delayed")
                    return _json(200, {"kicked": job_id})
                if not b.delete(job_id):
                    return _error(404, "no such job, or reserved by a client")
                return _json(200, {"deleted": job_id})
        return _error(404, "not found")


def _json_body(req: Request) -> object:
    if not req.body:
        return {}
    try:
        return json.loads(req.body)
    except (ValueError, UnicodeDecodeError):
        return None


def _int(text: str, high: int) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    n = int(text)
    return min(n, high)


def _num(value: object, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        return None
    return value


def _job_json(view: JobView | None, bodies: bool) -> dict[str, Any] | None:
    if view is None:
        return None
    out: dict[str, Any] = {"stats": view.stats, "size": len(view.body)}
    out["body"] = preview(view.body) if bodies else None
    return out
