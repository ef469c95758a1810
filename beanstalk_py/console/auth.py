"""Who is asking: the console's access levels, login sessions and cross-site protection.

Levels: ``NONE`` (only the page shell, ``/api/whoami`` and ``/api/login``), ``READ`` (counters,
tube names, job stats without bodies), ``ADMIN`` (bodies and actions).

Invariants:

* Without ``--auth-token-file`` an anonymous request reads; with it, reading needs that token
  or the admin token. ``ADMIN`` needs ``--admin-token-file``'s token; without that file nobody
  is ``ADMIN``.
* A token is taken from ``Authorization: Bearer`` or from a login session cookie (random,
  HttpOnly, SameSite=Strict, kept in memory only: a restart logs everyone out). A Bearer
  header that matches no token is refused (401), never downgraded to anonymous.
* Tokens are compared in constant time and never logged or echoed.
* A state-changing request (POST) authenticated by cookie, and every login, must carry the
  ``X-Beanstalk-Console`` header (a cross-site page cannot send it without a CORS preflight,
  which is never granted) and, when the browser sends them, an ``Origin`` whose host is the
  ``Host`` and a ``Sec-Fetch-Site`` of ``same-origin``. Bearer requests (scripts) need neither:
  browsers do not attach that header on their own.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

NONE, READ, ADMIN = 0, 1, 2
LEVEL_NAMES = ("none", "read", "admin")
COOKIE = "beanstalk_console"
CSRF_HEADER = "x-beanstalk-console"
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 1000


@dataclass(frozen=True, slots=True)
class Identity:
    level: int
    via: str  # "bearer", "cookie" or "anonymous"


class ConsoleAuth:
    __slots__ = ("_clock", "_sessions", "admin_token", "auth_token")

    def __init__(
        self,
        auth_token: bytes | None,
        admin_token: bytes | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.auth_token = auth_token
        self.admin_token = admin_token
        self._clock = clock
        self._sessions: OrderedDict[str, tuple[int, float]] = OrderedDict()

    @property
    def read_needs_token(self) -> bool:
        return self.auth_token is not None

    def level_of(self, token: bytes) -> int:
        """The level ``token`` grants (NONE when it is no configured token)."""
        # Check both tokens always, so the timing says nothing about which one matched.
        admin = self.admin_token is not None and hmac.compare_digest(token, self.admin_token)
        auth = self.auth_token is not None and hmac.compare_digest(token, self.auth_token)
        if admin:
            return ADMIN
        if auth:
            return READ
        return NONE

    def identify(self, headers: Mapping[str, str]) -> Identity | None:
        """The caller's identity; None when it presented a token that is wrong (401)."""
        authz = headers.get("authorization")
        if authz is not None:
            scheme, _, value = authz.strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return None
            level = self.level_of(value.strip().encode("utf-8", "surrogateescape"))
            return Identity(level, "bearer") if level else None
        sid = cookie_value(headers.get("cookie", ""), COOKIE)
        if sid:
            entry = self._sessions.get(sid)
            if entry is not None:
                level, expires = entry
                if expires > self._clock():
                    return Identity(level, "cookie")
                del self._sessions[sid]
        return Identity(NONE if self.read_needs_token else READ, "anonymous")

    def login(self, token: bytes) -> tuple[int, str] | None:
        """A new session for ``token``: (level, session id), or None for a wrong token."""
        level = self.level_of(token)
        if not level:
            return None
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = (level, self._clock() + SESSION_TTL)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)  # the oldest login goes first
        return level, sid

    def logout(self, headers: Mapping[str, str]) -> None:
        sid = cookie_value(headers.get("cookie", ""), COOKIE)
        if sid:
            self._sessions.pop(sid, None)


def cookie_value(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            return value
    return None


def same_origin(headers: Mapping[str, str]) -> bool:
    """The browser-side cross-site checks for a cookie-authenticated POST (see module doc)."""
    if headers.get(CSRF_HEADER) != "1":
        return False
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is not None:
        host = headers.get("host")
        if host is None or urlsplit(origin).netloc.lower() != host.strip().lower():
            return False
    return True
