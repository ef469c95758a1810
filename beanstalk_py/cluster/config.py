"""The ``--cluster`` URL: ``etcd://HOST:PORT,HOST:PORT,.../PREFIX``.

Parsing is pure (stdlib only, no etcd client needed) so the CLI can reject a bad flag with a
clear message before anything starts. Invariants of a parsed ``ClusterConfig``: at least one
endpoint, no endpoint twice, every port in 1..65535, hosts are IP literals or DNS names
(IPv6 in brackets), and the prefix is one or more non-empty segments of ``[A-Za-z0-9._-]``
without a leading or trailing slash; every key the cluster writes lives under ``/PREFIX/``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

SCHEME = "etcd://"
DEFAULT_PORT = 2379
DEFAULT_PREFIX = "beanstalk"

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


class ClusterConfigError(ValueError):
    """A ``--cluster`` value that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Endpoint:
    host: str  # without brackets for IPv6
    port: int

    @property
    def ip_version(self) -> int | None:
        """4 or 6 for an IP literal, None for a DNS name."""
        try:
            return ipaddress.ip_address(self.host).version
        except ValueError:
            return None

    def __str__(self) -> str:
        if self.ip_version == 6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ClusterConfig:
    endpoints: tuple[Endpoint, ...]
    prefix: str

    @property
    def key_root(self) -> bytes:
        """Every key of this cluster starts with this (``/PREFIX/``)."""
        return f"/{self.prefix}/".encode()

    def url(self) -> str:
        return SCHEME + ",".join(str(e) for e in self.endpoints) + "/" + self.prefix


def _parse_endpoint(text: str, whole: str) -> Endpoint:
    if not text:
        raise ClusterConfigError(f"empty endpoint in {whole!r} (stray comma?)")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ClusterConfigError(f"unclosed '[' in endpoint {text!r}")
        host, rest = text[1:close], text[close + 1 :]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ClusterConfigError(f"not an IPv6 address in brackets: {text!r}") from None
        if rest and not rest.startswith(":"):
            raise ClusterConfigError(f"unexpected {rest!r} after ']' in endpoint {text!r}")
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise ClusterConfigError(
                f"IPv6 endpoint {text!r} needs brackets, e.g. [::1]:{DEFAULT_PORT}"
            )
        host, _, port_text_ = text.partition(":")
        port_text = port_text_ if ":" in text else None
        if not host:
            raise ClusterConfigError(f"endpoint {text!r} has no host")
        is_ip = True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            is_ip = False
        if not is_ip and not _HOSTNAME.fullmatch(host):
            raise ClusterConfigError(f"not a valid host name: {host!r}")
    if port_text is None:
        port = DEFAULT_PORT
    else:
        if not port_text.isdigit():
            raise ClusterConfigError(f"port must be a number in endpoint {text!r}")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ClusterConfigError(f"port out of range 1..65535 in endpoint {text!r}")
    return Endpoint(host, port)


def parse_cluster_url(url: str) -> ClusterConfig:
    """Parse ``etcd://h1:p1,h2:p2,h3:p3/prefix`` (port defaults to 2379, prefix to
    ``beanstalk``). Raises ``ClusterConfigError`` with a one-line reason."""
    text = url.strip()
    if not text.lower().startswith(SCHEME):
        raise ClusterConfigError(
            f"--cluster must start with {SCHEME} (e.g. etcd://10.0.0.1:2379,10.0.0.2:2379/prod),"
            f" got {url!r}"
        )
    rest = text[len(SCHEME) :]
    hosts, slash, prefix = rest.partition("/")
    if not hosts:
        raise ClusterConfigError(f"no etcd endpoint in {url!r}")
    if "@" in hosts or "?" in rest or "#" in rest:
        raise ClusterConfigError(f"credentials, queries and fragments are not supported in {url!r}")
    endpoints = tuple(_parse_endpoint(part.strip(), url) for part in hosts.split(","))
    seen: set[Endpoint] = set()
    for e in endpoints:
        if e in seen:
            raise ClusterConfigError(f"endpoint {e} listed twice in {url!r}")
        seen.add(e)
    if not slash or prefix == "":
        prefix = DEFAULT_PREFIX
    segments = prefix.split("/")
    for seg in segments:
        if not _SEGMENT.fullmatch(seg) or seg in (".", ".."):
            raise ClusterConfigError(
                f"bad key prefix {prefix!r}: use segments of letters, digits, '.', '_', '-'"
                " separated by single '/'"
            )
    return ClusterConfig(endpoints=endpoints, prefix=prefix)
