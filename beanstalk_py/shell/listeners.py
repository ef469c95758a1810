"""Listening sockets, created without importing asyncio.

The CLI binds the socket before the heavy imports (asyncio, uvloop, click) so that clients
which connect right after spawning the server - greenstalk's test suite waits only 0.1 s -
find it listening; their connections wait in the backlog until the loop runs.
"""

from __future__ import annotations

import contextlib
import getopt
import os
import socket
import stat

BACKLOG = 1024


def bind_unix(path: str) -> socket.socket:
    """A listening UNIX socket at ``path``, replacing a stale socket file (not other files)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path}: exists and is not a socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_tcp(host: str | None, port: int) -> socket.socket:
    """Bind the first address ``host`` resolves to (all interfaces, dual-stack, for None)."""
    if host is None:
        candidates = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
    else:
        infos = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        candidates = [(info[0], str(info[4][0])) for info in infos]
    error: OSError | None = None
    for family, addr in candidates:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            error = exc
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host is None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((addr, port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sock.setblocking(False)
        return sock
    raise error if error is not None else OSError(f"cannot resolve {host}")


def prebind(argv: list[str]) -> socket.socket | None:
    """Bind the address the command line asks for, or None to leave it to the full parse.

    Only the plain serving case is handled here; anything unusual (help, version, parse
    errors, socket activation, TLS) returns None and the server binds later as usual.
    """
    if os.environ.get("LISTEN_FDS"):
        return None
    try:
        opts, args = getopt.gnu_getopt(
            argv, "b:f:Fl:p:u:z:s:cnVvh", ["listen=", "port=", "help", "version"]
        )
    except getopt.GetoptError:
        return None
    if args:
        return None
    host: str | None = None
    port = 11300
    for flag, value in opts:
        if flag in ("-h", "-v", "--help", "--version"):
            return None
        if flag in ("-l", "--listen"):
            host = value
        elif flag in ("-p", "--port"):
            if not value.isdigit() or int(value) > 65535:
                return None  # cli.py reports it (bind would raise OverflowError)
            port = int(value)
    if any(a.startswith("--tls") for a in argv):
        return None
    unix_path = None
    if host is not None:
        try:
            host, unix_path = listen_address(host)
        except AddressError:
            return None
    with contextlib.suppress(OSError):
        if unix_path is not None:
            return bind_unix(unix_path)
        return bind_tcp(host or None, port)
    return None


class AddressError(ValueError):
    """A malformed ``HOST:PORT`` (a usage error at start-up, never a traceback)."""


def listen_address(value: str) -> tuple[str | None, str | None]:
    """The ``-l`` value: ``(host, None)``, or ``(None, path)`` for ``unix:PATH``.

    A host may be written ``[V6ADDR]``; the brackets are dropped."""
    if value.startswith("unix:"):
        if len(value) == 5:
            raise AddressError("unix: needs a path")
        return None, value[5:]
    return value.strip("[]"), None


def split_host_port(addr: str, *, default_port: int | None = None) -> tuple[str | None, int]:
    """``HOST:PORT``, ``[V6ADDR]:PORT`` or ``:PORT`` -> ``(host, port)``; no host: None.

    The one parser of TCP addresses (``--plain-listen``, ``--metrics-addr``, the health
    check). With ``default_port``, ``HOST``, ``[V6ADDR]`` and a bare IPv6 address are
    accepted too and get that port.
    """
    if default_port is not None:
        if addr.startswith("[") and addr.endswith("]"):
            addr = f"{addr}:{default_port}"
        elif ":" not in addr or (not addr.startswith("[") and addr.count(":") > 1):
            return addr or None, default_port  # HOST, or a bare IPv6 address
    host, sep, port = addr.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise AddressError(f"{addr!r}: expected HOST:PORT or [IPV6]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif "[" in host or "]" in host:
        raise AddressError(f"{addr!r}: expected HOST:PORT or [IPV6]:PORT")
    return host or None, int(port)
