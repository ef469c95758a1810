"""Pure helpers of the etcd client (no etcd needed): gRPC targets and key ranges."""

from __future__ import annotations

import pytest

from beanstalk_py.cluster.client import EtcdError, grpc_target, prefix_end
from beanstalk_py.cluster.etcdlog import LogError, decode_value, encode_value


def test_grpc_target_lists_every_member_in_one_family() -> None:
    assert grpc_target([(4, "10.0.0.1", 2379), (4, "10.0.0.2", 2380)]) == (
        "ipv4:10.0.0.1:2379,10.0.0.2:2380"
    )
    assert grpc_target([(6, "::1", 2379), (6, "fe80::1", 1)]) == "ipv6:[::1]:2379,[fe80::1]:1"
    with pytest.raises(EtcdError, match="all be IPv4 or all IPv6"):
        grpc_target([(4, "10.0.0.1", 2379), (6, "::1", 2379)])


def test_prefix_end_covers_exactly_the_prefix() -> None:
    assert prefix_end(b"/p/log/") == b"/p/log0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"  # etcd: every key from the start


def test_log_values_carry_the_epoch_and_refuse_foreign_data() -> None:
    value = encode_value(123456789, b"records")
    assert decode_value(value) == (123456789, b"records")
    assert decode_value(encode_value(1, b"")) == (1, b"")
    with pytest.raises(LogError):
        decode_value(b"XXXX" + value[4:])
    with pytest.raises(LogError):
        decode_value(value[:5])
