"""systemd integration without libsystemd: socket activation and readiness notification.

Two small protocols, both implemented with the stdlib only:

* **Socket activation** (``LISTEN_PID``/``LISTEN_FDS``). systemd (or ``systemd-socket-activate``)
  hands us already-bound sockets as fds 3, 4, ... and names the receiving process in
  ``LISTEN_PID``. :func:`listen_fds` behaves like ``sd_listen_fds(1)``: it honours the variables
  only when ``LISTEN_PID`` is our pid, and always removes ``LISTEN_PID``, ``LISTEN_FDS`` and
  ``LISTEN_FDNAMES`` from the environment afterwards, so children we might spawn never mistake
  the fds for theirs. :func:`inherited_listener` adds beanstalkd's policy on top (``net.c``):
  use the first fd only, warn about the rest, and warn that ``-l``/``-p`` are ignored.
* **Readiness notification** (``NOTIFY_SOCKET``). :func:`notify` sends one datagram to the
  AF_UNIX socket named there (a filesystem path, or an abstract name written with a leading
  ``@``). ``Type=notify`` units need ``READY=1`` (:func:`ready`); beanstalk-py sends it after
  the binlog replay, so units ordered after ours only start once jobs are restored.

Invariants:

* Every inherited fd that :func:`listen_fds` returns is a *listening* ``SOCK_STREAM`` socket of
  family ``AF_INET``, ``AF_INET6`` or ``AF_UNIX``, with ``FD_CLOEXEC`` set. Anything else raises
  :class:`InheritedSocketError` (beanstalkd exits 111 in that case), and then no socket object
  is left holding an fd: the fds stay exactly as inherited.
* :func:`notify` never raises for a missing or unreachable notification socket; it reports
  ``False`` so the caller can log it. It never blocks for more than :data:`NOTIFY_TIMEOUT`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, MutableMapping

__all__ = [
    "LISTEN_FDS_START",
    "MULTIPLE_FDS_WARNING",
    "NOTIFY_TIMEOUT",
    "InheritedSocketError",
    "describe",
    "inherited_listener",
    "listen_fds",
    "notify",
    "ready",
    "status",
    "stopping",
]

#: First inherited fd, fixed by the protocol (``SD_LISTEN_FDS_START``).
LISTEN_FDS_START = 3

#: Upper bound, in seconds, on one ``sendto`` to ``NOTIFY_SOCKET``.
NOTIFY_TIMEOUT = 1.0

_ACTIVATION_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_STREAM_FAMILIES = {
    socket.AF_INET: "AF_INET",
    socket.AF_INET6: "AF_INET6",
    socket.AF_UNIX: "AF_UNIX",
}

MULTIPLE_FDS_WARNING = "inherited more than one listen socket; ignoring all but the first"


class InheritedSocketError(Exception):
    """The socket-activation environment or an inherited fd is unusable.

    The server should treat this as fatal, as beanstalkd does (exit status 111).
    """


def _parse_count(name: str, value: str) -> int:
    # int() alone would accept " 3", "+3" and "3_0"; the protocol only ever writes plain digits.
    if not value.isascii() or not value.isdigit():
        raise InheritedSocketError(f"{name}={value!r} is not a non-negative integer")
    return int(value)


def _adopt(fd: int) -> socket.socket:
    """Wrap inherited ``fd`` after checking that it is a listening stream socket."""
    try:
        # With fileno= the socket module asks the kernel for family, type and protocol.
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise InheritedSocketError(f"inherited fd {fd} is not a socket: {exc.strerror}") from exc
    try:
        if sock.family not in _STREAM_FAMILIES:
            raise InheritedSocketError(
                f"inherited fd {fd} has unsupported address family {sock.family!r}; "
                "expected a TCP or UNIX stream socket"
            )
        if sock.type != socket.SOCK_STREAM:
            raise InheritedSocketError(
                f"inherited fd {fd} is a {sock.type!r} socket; expected SOCK_STREAM"
            )
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise InheritedSocketError(f"inherited fd {fd} is not a listening socket")
        # Like sd_listen_fds: the fds must not leak into processes we exec later.
        sock.set_inheritable(False)
    except BaseException:
        # Give the fd back untouched instead of closing it from the socket's finalizer.
        sock.detach()
        raise
    return sock


def listen_fds(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """Return the listening sockets passed by systemd, in fd order (fd 3 first).

    Returns ``[]`` when no sockets were passed: ``LISTEN_PID`` unset, or naming another process
    (the variables were inherited from an ancestor), or ``LISTEN_FDS=0``. The activation
    variables are removed from ``environ`` (default ``os.environ``) in every case.

    Raises :class:`InheritedSocketError` for malformed variables or an fd that is not a
    listening TCP/UNIX stream socket.
    """
    env = os.environ if environ is None else environ
    pid_text = env.get("LISTEN_PID")
    fds_text = env.get("LISTEN_FDS")
    for name in _ACTIVATION_VARS:
        env.pop(name, None)

    if pid_text is None:
        return []
    if _parse_count("LISTEN_PID", pid_text) != os.getpid():
        return []
    count = 0 if fds_text is None else _parse_count("LISTEN_FDS", fds_text)

    adopted: list[socket.socket] = []
    try:
        for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
            adopted.append(_adopt(fd))
    except InheritedSocketError:
        for sock in adopted:
            sock.detach()
        raise
    return adopted


def describe(sock: socket.socket) -> str:
    """Human-readable listening address, for log lines such as ``listening on ...``."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):
            # Abstract-namespace names come back as bytes starting with NUL.
            return "unix:@" + name[1:].decode("utf-8", "replace")
        return f"unix:{name}" if name else "unix:(unnamed)"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def inherited_listener(
    ignored_options: Iterable[str] = (),
    environ: MutableMapping[str, str] | None = None,
) -> tuple[socket.socket | None, list[str]]:
    """Apply beanstalkd's socket-activation rule and return ``(socket, warnings)``.

    * No inherited socket: ``(None, [])``; the caller binds from ``-l``/``-p`` as usual.
    * One or more: the first is returned; any others are closed and a warning is added.
      For every entry of ``ignored_options`` (the listen options the user gave explicitly,
      e.g. ``["-l 0.0.0.0", "-p 11300"]``) a warning
      ``inherited listen fd; ignoring option: -l 0.0.0.0`` is added, as beanstalkd prints.

    The warnings are returned rather than logged so the caller can emit them once logging is
    configured. Errors propagate as :class:`InheritedSocketError`.
    """
    socks = listen_fds(environ)
    if not socks:
        return None, []
    warnings: list[str] = []
    if len(socks) > 1:
        warnings.append(MULTIPLE_FDS_WARNING)
        for extra in socks[1:]:
            # We will never accept on them; systemd keeps its own copies for re-activation.
            extra.close()
    warnings.extend(f"inherited listen fd; ignoring option: {opt}" for opt in ignored_options)
    return socks[0], warnings


def _notify_address(value: str) -> str | None:
    if value.startswith("@"):
        # Linux abstract namespace: the leading '@' stands for a NUL byte.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Other schemes (e.g. "vsock:") are not used for services on this platform.
    return None


def notify(message: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to ``NOTIFY_SOCKET``; like ``sd_notify(0, ...)``.

    Returns ``True`` if the datagram was sent, ``False`` if ``NOTIFY_SOCKET`` is unset or
    unsupported, or the send failed (socket gone, permission, timeout). ``NOTIFY_SOCKET`` is left
    in the environment so later calls (``STOPPING=1``) still work.
    """
    env = os.environ if environ is None else environ
    target = env.get("NOTIFY_SOCKET")
    if not target or not message:
        return False
    address = _notify_address(target)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # A full receive queue would block sendto; readiness must never hang the server.
            sock.settimeout(NOTIFY_TIMEOUT)
            sock.sendto(message.encode("utf-8"), address)
    except OSError:
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Tell systemd that start-up finished (``READY=1``), optionally with a status line."""
    message = "READY=1"
    if status_text is not None:
        message += "\n" + _status_field(status_text)
    return notify(message)


def stopping() -> bool:
    """Tell systemd that shutdown started (``STOPPING=1``)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the free-form status shown by ``systemctl status`` (``STATUS=...``)."""
    return notify(_status_field(text))


def _status_field(text: str) -> str:
    # Fields are newline-separated, so a newline inside the text would start a bogus field.
    return "STATUS=" + " ".join(text.splitlines())
