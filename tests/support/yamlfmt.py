"""Exact checks for the YAML payloads of stats, stats-tube, stats-job and list-*
(docs/COMPATIBILITY.md, "Stats formats").

The one place that knows the 1.12 / 1.13 quoting difference is ``quoted_keys``: beanstalkd 1.13
double-quotes ``version``, ``hostname``, ``os``, ``platform`` (stats), ``name`` (stats-tube) and
``tube`` (stats-job); 1.12 (Debian's reference binary) quotes only ``version``. beanstalk-py
follows 1.13.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import yaml

STATS_KEYS: tuple[str, ...] = (
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
    "cmd-put",
    "cmd-peek",
    "cmd-peek-ready",
    "cmd-peek-delayed",
    "cmd-peek-buried",
    "cmd-reserve",
    "cmd-reserve-with-timeout",
    "cmd-delete",
    "cmd-release",
    "cmd-use",
    "cmd-watch",
    "cmd-ignore",
    "cmd-bury",
    "cmd-kick",
    "cmd-touch",
    "cmd-stats",
    "cmd-stats-job",
    "cmd-stats-tube",
    "cmd-list-tubes",
    "cmd-list-tube-used",
    "cmd-list-tubes-watched",
    "cmd-pause-tube",
    "job-timeouts",
    "total-jobs",
    "max-job-size",
    "current-tubes",
    "current-connections",
    "current-producers",
    "current-workers",
    "current-waiting",
    "total-connections",
    "pid",
    "version",
    "rusage-utime",
    "rusage-stime",
    "uptime",
    "binlog-oldest-index",
    "binlog-current-index",
    "binlog-records-migrated",
    "binlog-records-written",
    "binlog-max-size",
    "draining",
    "id",
    "hostname",
    "os",
    "platform",
)

STATS_TUBE_KEYS: tuple[str, ...] = (
    "name",
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
    "total-jobs",
    "current-using",
    "current-watching",
    "current-waiting",
    "cmd-delete",
    "cmd-pause-tube",
    "pause",
    "pause-time-left",
)

STATS_JOB_KEYS: tuple[str, ...] = (
    "id",
    "tube",
    "state",
    "pri",
    "age",
    "delay",
    "ttr",
    "time-left",
    "file",
    "reserves",
    "timeouts",
    "releases",
    "buries",
    "kicks",
)

QUOTED_1_13 = frozenset({"version", "hostname", "os", "platform", "name", "tube"})
QUOTED_1_12 = frozenset({"version"})


def quoted_keys(server_version: tuple[int, ...] | None) -> frozenset[str]:
    """Keys whose string values are double-quoted. ``None`` means beanstalk-py (1.13 rules)."""
    if server_version is None or server_version >= (1, 13) or not server_version:
        return QUOTED_1_13
    return QUOTED_1_12


def render(key: str, value: object, quoted: frozenset[str]) -> str:
    """How ``value`` is printed for ``key`` (bool as true/false, quoted strings per version)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and key in quoted:
        return f'"{value}"'
    return str(value)


def parse_pairs(payload: bytes) -> list[tuple[str, str]]:
    """Split a dictionary payload into (key, raw value) pairs, checking the framing."""
    text = payload.decode()
    assert text.startswith("---\n"), f"payload must start with '---\\n': {payload!r}"
    assert text.endswith("\n"), f"payload must end with LF: {payload!r}"
    assert "\r" not in text, f"payload lines must end with LF only: {payload!r}"
    pairs = []
    for line in text[4:-1].split("\n"):
        key, sep, value = line.partition(": ")
        assert sep, f"malformed line {line!r} in {payload!r}"
        pairs.append((key, value))
    return pairs


def check_dict(
    payload: bytes,
    keys: Sequence[str],
    expected: Mapping[str, object],
    quoted: frozenset[str],
) -> dict[str, str]:
    """Assert exact key order, the expected values, and that YAML parses it.

    Returns the raw values by key for further (non-deterministic) checks.
    """
    pairs = parse_pairs(payload)
    assert [k for k, _ in pairs] == list(keys), f"key order differs: {pairs}"
    raw = dict(pairs)
    for key, value in expected.items():
        assert key in raw, f"unknown key {key}"
        assert raw[key] == render(key, value, quoted), (
            f"{key}: expected {render(key, value, quoted)!r}, got {raw[key]!r}"
        )
    for key in quoted & raw.keys():
        assert raw[key].startswith('"') and raw[key].endswith('"'), f"{key} must be quoted"
    loaded = yaml.safe_load(payload)
    assert isinstance(loaded, dict), loaded
    return raw


def check_stats(
    payload: bytes,
    expected: Mapping[str, object],
    quoted: frozenset[str],
    *,
    pid: int | None = None,
) -> dict[str, str]:
    """Check a full ``stats`` payload: order, given values, and the shape of the rest."""
    raw = check_dict(payload, STATS_KEYS, expected, quoted)
    for key, value in raw.items():
        if key.startswith(("current-", "cmd-", "total-", "binlog-")) or key in (
            "job-timeouts",
            "max-job-size",
            "uptime",
            "pid",
        ):
            assert re.fullmatch(r"\d+", value), f"{key}: not an unsigned integer: {value!r}"
    for key in ("rusage-utime", "rusage-stime"):
        assert re.fullmatch(r"\d+\.\d{6}", raw[key]), f"{key}: {raw[key]!r}"
    assert re.fullmatch(r"[0-9a-f]{16}", raw["id"]), raw["id"]
    assert raw["draining"] in ("true", "false")
    assert re.fullmatch(r'"[^"\n]*"', raw["version"]), raw["version"]
    uname = os.uname()
    for key, value in (
        ("hostname", uname.nodename),
        ("os", uname.version),
        ("platform", uname.machine),
    ):
        assert raw[key] == render(key, value, quoted), f"{key}: {raw[key]!r}"
    if pid is not None:
        assert raw["pid"] == str(pid)
    return raw


def check_list(payload: bytes, names: Sequence[str]) -> None:
    """Assert a list-tubes / list-tubes-watched payload exactly (items are never quoted)."""
    expected = "---\n" + "".join(f"- {n}\n" for n in names)
    assert payload == expected.encode(), f"expected {expected!r}, got {payload!r}"
    loaded = yaml.safe_load(payload)
    assert isinstance(loaded, list), loaded


def list_reply(names: Sequence[str]) -> bytes:
    """The full ``OK <n>`` reply for a list of tube names."""
    body = ("---\n" + "".join(f"- {n}\n" for n in names)).encode()
    return b"OK %d\r\n%s\r\n" % (len(body), body)
