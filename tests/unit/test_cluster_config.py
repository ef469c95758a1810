"""``--cluster etcd://h:p,h:p,h:p/prefix`` parsing: a typed config or a one-line reason."""

from __future__ import annotations

import pytest

from beanstalk_py.cluster.config import (
    ClusterConfig,
    ClusterConfigError,
    Endpoint,
    parse_cluster_url,
)


def test_three_endpoints_and_a_prefix() -> None:
    cfg = parse_cluster_url("etcd://10.0.0.1:2379,10.0.0.2:2380,10.0.0.3:2381/prod")
    assert cfg == ClusterConfig(
        endpoints=(
            Endpoint("10.0.0.1", 2379),
            Endpoint("10.0.0.2", 2380),
            Endpoint("10.0.0.3", 2381),
        ),
        prefix="prod",
    )
    assert cfg.key_root == b"/prod/"
    assert cfg.url() == "etcd://10.0.0.1:2379,10.0.0.2:2380,10.0.0.3:2381/prod"


@pytest.mark.parametrize(
    ("url", "endpoints", "prefix"),
    [
        (
            "etcd://etcd-a,etcd-b.example.com:12379",
            [("etcd-a", 2379), ("etcd-b.example.com", 12379)],
            "beanstalk",
        ),
        ("etcd://127.0.0.1:2379/", [("127.0.0.1", 2379)], "beanstalk"),
        (
            "ETCD://[::1]:2379,[fe80::1]/a/b-c/d_e.f",
            [("::1", 2379), ("fe80::1", 2379)],
            "a/b-c/d_e.f",
        ),
        ("  etcd://h1:1, h2:65535/x  ", [("h1", 1), ("h2", 65535)], "x"),
    ],
)
def test_accepted_forms(url: str, endpoints: list[tuple[str, int]], prefix: str) -> None:
    cfg = parse_cluster_url(url)
    assert [(e.host, e.port) for e in cfg.endpoints] == endpoints
    assert cfg.prefix == prefix


def test_ipv6_endpoints_print_with_brackets() -> None:
    cfg = parse_cluster_url("etcd://[::1]:2379/p")
    assert str(cfg.endpoints[0]) == "[::1]:2379"
    assert cfg.endpoints[0].ip_version == 6
    assert parse_cluster_url(cfg.url()) == cfg


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1:2379/prod", "must start with etcd://"),
        ("10.0.0.1:2379", "must start with etcd://"),
        ("etcd:///prod", "no etcd endpoint"),
        ("etcd://", "no etcd endpoint"),
        ("etcd://a:1,,b:2/p", "empty endpoint"),
        ("etcd://a:1,/p", "empty endpoint"),
        ("etcd://a:x/p", "port must be a number"),
        ("etcd://a:/p", "port must be a number"),
        ("etcd://a:0/p", "out of range"),
        ("etcd://a:65536/p", "out of range"),
        ("etcd://:2379/p", "has no host"),
        ("etcd://bad_host!:2379/p", "not a valid host name"),
        ("etcd://::1:2379/p", "needs brackets"),
        ("etcd://[::1:2379/p", "unclosed"),
        ("etcd://[10.0.0.1]:2379/p", "not an IPv6 address"),
        ("etcd://[::1]x/p", "unexpected"),
        ("etcd://a:1,a:1/p", "listed twice"),
        ("etcd://user:pw@a:1/p", "credentials"),
        ("etcd://a:1/p?x=1", "not supported"),
        ("etcd://a:1/p//q", "bad key prefix"),
        ("etcd://a:1/p/", "bad key prefix"),
        ("etcd://a:1/p q", "bad key prefix"),
        ("etcd://a:1/../x", "bad key prefix"),
    ],
)
def test_bad_input_gets_a_clear_error(url: str, reason: str) -> None:
    with pytest.raises(ClusterConfigError, match=reason):
        parse_cluster_url(url)


def test_config_parsing_needs_no_etcd_client() -> None:
    # The CLI validates --cluster before anything else; that must work without the extra.
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['aetcd'] = None; sys.modules['grpc'] = None\n"
        "from beanstalk_py.cluster.config import parse_cluster_url\n"
        "print(parse_cluster_url('etcd://a:1/p').prefix)\n"
        "try:\n import beanstalk_py.cluster.client\n"
        "except ImportError as e: print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "p",
        "cluster mode needs the etcd client: pip install 'beanstalk-py[cluster]'",
    ]
