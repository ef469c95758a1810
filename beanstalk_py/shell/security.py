"""Locking a server down: TLS contexts, the auth token file, the allow-list, fd budgets.

Everything here is opt-in and runs at start-up or at accept, never per command:
* ``server_ssl_context`` builds the listener's TLS 1.2+ context (mTLS with a client CA).
* ``load_token`` reads ``--auth-token-file`` and refuses files others may read.
* ``AllowList`` says whether a peer address may connect (``--allow CIDR``).
* ``connection_budget`` turns ``RLIMIT_NOFILE`` into a connection limit that keeps ``accept``
  away from EMFILE (beanstalkd #351/#361: clients hang in the backlog).

Errors a user can cause raise ``SecurityConfigError`` with a one-line message.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("beanstalk_py.server")

# Tokens travel in `auth <token>\r\n`, a command line of at most 224 bytes.
TOKEN_MAX = 224 - len(b"auth \r\n")
# Descriptors kept for everything that is not a client: listeners, binlog files, stdio,
# the metrics endpoint, worker threads, libuv's own handles.
FD_RESERVE_MIN = 32
FD_RESERVE_MAX = 256
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS client gets to finish its handshake
REJECT_LOG_INTERVAL = 1.0  # at most one "rejected" log line per second (plus a count)


class SecurityConfigError(Exception):
    """A TLS, token or allow-list setting that cannot be used (message is user-facing)."""


# --- TLS -------------------------------------------------------------------------------------


def server_ssl_context(cert: str, key: str, client_ca: str | None = None) -> object:
    """A server-side ``ssl.SSLContext`` for TLS 1.2+; with ``client_ca``, clients need a cert."""
    import ssl

    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is not None and not os.path.isfile(path):
            raise SecurityConfigError(f"{flag} {path}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise SecurityConfigError(
            f"--tls-cert {cert} / --tls-key {key}: cannot load certificate and key: {_why(exc)}"
        ) from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise SecurityConfigError(
                f"--tls-client-ca {client_ca}: cannot load CA certificates: {_why(exc)}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def tls_from_config(cert: str | None, key: str | None, client_ca: str | None) -> Any:
    """The TLS context the options ask for, or None (plaintext)."""
    if cert is None and key is None:
        if client_ca is not None:
            raise SecurityConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise SecurityConfigError("--tls-cert and --tls-key must be given together")
    return server_ssl_context(cert, key, client_ca)


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or getattr(exc, "strerror", None) or exc)


# --- token auth ------------------------------------------------------------------------------


def load_token(path: str, flag: str = "--auth-token-file") -> bytes:
    """The token in ``path`` (surrounding whitespace stripped).

    The file must be a regular file that neither group nor others can read or write.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise SecurityConfigError(f"{flag} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecurityConfigError(f"{flag} {path}: not a regular file")
        if st.st_mode & 0o077:
            raise SecurityConfigError(
                f"{flag} {path}: readable or writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        raw = os.read(fd, TOKEN_MAX + 64)
    finally:
        os.close(fd)
    token = raw.strip()
    if not token:
        raise SecurityConfigError(f"{flag} {path}: the file is empty")
    if len(token) > TOKEN_MAX:
        raise SecurityConfigError(f"{flag} {path}: the token is longer than {TOKEN_MAX} bytes")
    if any(b <= 0x20 or b == 0x7F for b in token):
        raise SecurityConfigError(
            f"{flag} {path}: the token must not contain spaces or control characters"
        )
    return token


# --- allow-list ------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(specs: Iterable[str]) -> list[Network]:
    nets: list[Network] = []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise SecurityConfigError(f"--allow {spec}: not an IP network (CIDR)") from None
    return nets


class AllowList:
    """Which TCP peers may connect. UNIX-socket peers (no IP address) are always allowed."""

    __slots__ = ("nets",)

    def __init__(self, specs: Iterable[str]) -> None:
        self.nets = parse_networks(specs)

    def allows(self, peername: object) -> bool:
        if not isinstance(peername, tuple) or not peername:
            return True  # AF_UNIX: the peer name is a path (or empty)
        try:
            addr = ipaddress.ip_address(str(peername[0]).split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            mapped = addr.ipv4_mapped
            if any(mapped in net for net in self.nets):
                return True
        return any(addr in net for net in self.nets)


# --- file descriptors ------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one (as most servers do); return the soft limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else 0


def fd_reserve(soft: int) -> int:
    return min(FD_RESERVE_MAX, max(FD_RESERVE_MIN, soft // 16))


def connection_budget(max_connections: int) -> int:
    """The connection limit in force: ``--max-connections`` capped by what the fd limit allows.

    0 means no limit (no RLIMIT_NOFILE and no option).
    """
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover
        soft = -1
    if soft < 0 or soft == getattr(resource, "RLIM_INFINITY", -1):
        return max_connections
    by_fds = max(1, soft - fd_reserve(soft))
    return min(max_connections, by_fds) if max_connections else by_fds


# --- admission at accept --------------------------------------------------------------------


class Admission:
    """Decides at accept whether a connection is served; counts and logs the others.

    Rejected connections are closed at once (the client sees EOF, never a hang). Log lines
    are rate-limited so that a flood cannot flood the log.
    """

    __slots__ = (
        "_log_at",
        "_suppressed",
        "allow",
        "max_conns",
        "rejected",
        "rejected_not_allowed",
    )

    def __init__(self, max_connections: int, allow: Iterable[str]) -> None:
        self.max_conns = connection_budget(max_connections)
        specs = list(allow)
        self.allow = AllowList(specs) if specs else None
        self.rejected = 0
        self.rejected_not_allowed = 0
        self._log_at = -1e9
        self._suppressed = 0

    def check(self, peername: object, current: int) -> bool:
        """True to serve a new connection, given ``current`` open ones."""
        if self.allow is not None and not self.allow.allows(peername):
            self.rejected_not_allowed += 1
            self._reject(peername, "address not allowed (--allow)")
            return False
        if self.max_conns and current >= self.max_conns:
            self._reject(peername, f"connection limit reached ({self.max_conns})")
            return False
        return True

    def _reject(self, peername: object, reason: str) -> None:
        self.rejected += 1
        now = time.monotonic()
        if now - self._log_at < REJECT_LOG_INTERVAL:
            self._suppressed += 1
            return
        more = (
            f" ({self._suppressed} more rejected since the last report)" if self._suppressed else ""
        )
        self._log_at = now
        self._suppressed = 0
        log.warning("rejected connection from %s: %s%s", _peer(peername), reason, more)


def _peer(peername: object) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername or "unix")
