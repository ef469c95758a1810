"""Command line: beanstalkd's flags (same letters, defaults and clustering), long-only extras.

Usage errors exit 5 with a one-line message and the usage text, as beanstalkd does; nothing
the user types produces a traceback.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import click

from beanstalk_py import __version__
from beanstalk_py.shell.config import (
    DEFAULT_BINLOG_SIZE,
    DEFAULT_FSYNC_MS,
    DEFAULT_MAX_JOB_SIZE,
    DEFAULT_PORT,
    MAX_JOB_SIZE_LIMIT,
    Config,
)

EXIT_USAGE = 5


def _size(value: str) -> int:
    # beanstalkd reads sizes with sscanf("%zu"): a plain decimal number, nothing else.
    if not value.isdigit():
        raise click.UsageError(f"invalid size: {value}", None)
    return int(value)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": None},
    help="A beanstalkd-compatible work-queue server.",
)
@click.option("-b", "--binlog-dir", "binlog_dir", metavar="DIR", help="write-ahead log directory")
@click.option(
    "-f",
    "--fsync-ms",
    "fsync_ms",
    metavar="MS",
    help=f"fsync at most once every MS milliseconds (default is {DEFAULT_FSYNC_MS}ms); "
    "use -f0 for 'always fsync'",
)
@click.option("-F", "--no-fsync", "no_fsync", is_flag=True, help="never fsync")
@click.option(
    "-l", "--listen", "listen", metavar="ADDR", help="listen on address (default is 0.0.0.0)"
)
@click.option(
    "-p", "--port", "port", metavar="PORT", help=f"listen on port (default is {DEFAULT_PORT})"
)
@click.option("-u", "--user", "user", metavar="USER", help="become user and group")
@click.option(
    "-z",
    "--max-job-size",
    "max_job_size",
    metavar="BYTES",
    help=f"set the maximum job size in bytes (default is {DEFAULT_MAX_JOB_SIZE}); "
    f"max allowed is {MAX_JOB_SIZE_LIMIT} bytes",
)
@click.option(
    "-s",
    "--binlog-size",
    "binlog_size",
    metavar="BYTES",
    help=f"set the size of each write-ahead log file (default is {DEFAULT_BINLOG_SIZE})",
)
@click.option("-c", "compact_flag", is_flag=True, hidden=True)
@click.option("-n", "no_compact_flag", is_flag=True, hidden=True)
@click.option("-V", "--verbose", "verbose", count=True, help="increase verbosity")
@click.option("-v", "--version", "show_version", is_flag=True, help="show version information")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="log line format (stderr)",
)
@click.option("--no-http", is_flag=True, help="do not answer HTTP GET/HEAD on the beanstalk port")
@click.option(
    "--metrics-addr", metavar="HOST:PORT", help="also serve /metrics, /healthz, /readyz here"
)
@click.option(
    "--metrics-max-tubes",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help='per-tube series exported at most (the rest are summed as tube="_other")',
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=0),
    default=0,
    help="close new connections at accept beyond N (0, the default: as many as "
    "RLIMIT_NOFILE allows, minus a reserve)",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=0),
    default=0,
    help="answer put with OUT_OF_MEMORY beyond N jobs (0: no limit)",
)
@click.option(
    "--max-job-bytes",
    type=click.IntRange(min=0),
    default=0,
    help="answer put with OUT_OF_MEMORY beyond this many bytes of job bodies (0: no limit)",
)
@click.option(
    "--output-limit",
    type=click.IntRange(min=0),
    default=4 * 1024 * 1024,
    show_default=True,
    help="stop reading a client while this many bytes of its replies are unsent (0: no limit)",
)
@click.option(
    "--allow",
    metavar="CIDR",
    multiple=True,
    help="only accept TCP clients from this network (repeatable; UNIX sockets always allowed)",
)
@click.option("--tls-cert", metavar="FILE", help="serve TLS 1.2+ with this certificate (PEM)")
@click.option("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM)")
@click.option(
    "--tls-client-ca", metavar="FILE", help="require client certificates signed by these CAs"
)
@click.option(
    "--plain-listen",
    metavar="HOST:PORT",
    help="also listen without TLS here (HOST:PORT, [IPV6]:PORT or unix:PATH)",
)
@click.option(
    "--auth-token-file",
    metavar="FILE",
    help="clients must send 'auth <token>' first; FILE holds the token (mode 600)",
)
@click.option(
    "--admin-token-file",
    metavar="FILE",
    help="web console: show job bodies and allow actions to holders of this token (mode 600)",
)
@click.option(
    "--cluster",
    metavar="etcd://HOST:PORT,.../PREFIX",
    help="run as one node of a cluster replicated through these etcd members (docs/CLUSTER.md)",
)
@click.option("--node-id", metavar="NAME", help="this node's name in the cluster (unique)")
@click.option(
    "--advertise",
    metavar="HOST:PORT",
    help="where the other nodes reach this one's beanstalk port (clients are relayed there)",
)
@click.option(
    "--lease-ttl",
    type=click.IntRange(1, 60),
    default=1,
    show_default=True,
    help="seconds a leader may be silent before another node takes over",
)
@click.option(
    "--cluster-compact-bytes",
    metavar="BYTES",
    default=str(64 * 1024 * 1024),
    show_default=True,
    help="compact the etcd log after this many bytes (and at twice the live data)",
)
@click.pass_obj
def command(prebound: socket.socket | None, /, **opts: Any) -> None:
    if opts["show_version"]:
        from beanstalk_py.shell.build_info import core_kind

        click.echo(f"beanstalk-py {__version__} (core: {core_kind()}, beanstalkd 1.13 protocol)")
        return
    config = build_config(opts)
    from beanstalk_py.app.lifecycle import run
    from beanstalk_py.app.logs import setup_logging

    setup_logging(config.verbose, config.log_format)
    for flag in ("c", "n"):
        if opts["compact_flag" if flag == "c" else "no_compact_flag"]:
            click.echo(
                f"beanstalk-py: -{flag} flag was removed. binlog is always compacted.", err=True
            )
    sys.exit(run(config, prebound))


def build_config(opts: dict[str, Any]) -> Config:
    cfg = Config()
    if opts["listen"] is not None:
        from beanstalk_py.shell.listeners import AddressError, listen_address

        try:
            cfg.host, cfg.unix_path = listen_address(opts["listen"])
        except AddressError as bad:  # -l unix: (no path)
            raise click.UsageError(str(bad), None) from None
    if opts["port"] is not None:
        port = opts["port"]
        if not port.isdigit() or int(port) > 65535:
            raise click.UsageError(f"invalid port: {port}", None)
        cfg.port = int(port)
        cfg.port_given = True
    if opts["max_job_size"] is not None:
        size = _size(opts["max_job_size"])
        if size > MAX_JOB_SIZE_LIMIT:
            click.echo(f"beanstalk-py: maximum job size was set to {MAX_JOB_SIZE_LIMIT}", err=True)
            size = MAX_JOB_SIZE_LIMIT
        cfg.max_job_size = size
    if opts["binlog_size"] is not None:
        cfg.binlog_size = _size(opts["binlog_size"])
        if cfg.binlog_size < 1:
            raise click.UsageError(f"invalid size: {opts['binlog_size']}", None)
    # -f and -F apply in command-line order in beanstalkd; click loses the order, so the
    # later of the two on the command line wins (looked up in sys.argv).
    if opts["fsync_ms"] is not None:
        cfg.fsync_ms = _size(opts["fsync_ms"])
    if opts["no_fsync"] and not _fsync_after_no_fsync():
        cfg.fsync_ms = None
    if opts["binlog_dir"] is not None:
        path = Path(opts["binlog_dir"])
        if not path.is_dir():
            raise click.UsageError(f"{path}: binlog directory does not exist", None)
        cfg.binlog_dir = path
    cfg.user = opts["user"]
    cfg.verbose = opts["verbose"]
    cfg.log_format = opts["log_format"]
    cfg.http = not opts["no_http"]
    cfg.metrics_addr = opts["metrics_addr"]
    cfg.metrics_max_tubes = opts["metrics_max_tubes"]
    cfg.max_connections = opts["max_connections"]
    cfg.max_jobs = opts["max_jobs"]
    cfg.max_job_bytes = opts["max_job_bytes"]
    _hardening(cfg, opts)
    _cluster(cfg, opts)
    return cfg


# One job's record must fit one etcd request (1.5 MiB, etcd's default --max-request-bytes).
MAX_CLUSTER_JOB_SIZE = 1024 * 1024


def _cluster(cfg: Config, opts: dict[str, Any]) -> None:
    """--cluster and its companions, checked now so errors are one line."""
    url = opts.get("cluster")
    if url is None:
        for flag in ("node_id", "advertise"):
            if opts.get(flag) is not None:
                raise click.UsageError(f"--{flag.replace('_', '-')} needs --cluster", None)
        return
    from beanstalk_py.cluster.config import ClusterConfigError, parse_cluster_url

    try:
        parse_cluster_url(url)
        import beanstalk_py.cluster.client  # noqa: F401 - aetcd and grpc, the cluster extra
    except ClusterConfigError as exc:
        raise click.UsageError(str(exc), None) from None
    except ImportError as exc:
        raise click.UsageError(f"--cluster: {exc}", None) from None
    node_id = opts.get("node_id")
    advertise = opts.get("advertise")
    if not node_id:
        raise click.UsageError("--cluster needs --node-id NAME (unique in the cluster)", None)
    if not advertise:
        raise click.UsageError("--cluster needs --advertise HOST:PORT (this node's address)", None)
    host, _, port = advertise.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.UsageError(f"--advertise {advertise}: expected HOST:PORT", None)
    if cfg.unix_path is not None or cfg.user is not None:
        raise click.UsageError("--cluster cannot be combined with -l unix:PATH or -u", None)
    if cfg.max_job_size > MAX_CLUSTER_JOB_SIZE:
        raise click.UsageError(
            f"--cluster: -z must be at most {MAX_CLUSTER_JOB_SIZE} (one etcd request)", None
        )
    cfg.cluster = url
    cfg.node_id = node_id
    cfg.advertise = advertise
    cfg.lease_ttl = opts.get("lease_ttl") or 1
    cfg.cluster_compact_bytes = _size(opts.get("cluster_compact_bytes") or "67108864")


def _hardening(cfg: Config, opts: dict[str, Any]) -> None:
    """--output-limit, --allow, TLS and token options, checked now so errors are one line."""
    from beanstalk_py.shell import security

    cfg.output_limit = opts.get("output_limit", cfg.output_limit)
    cfg.allow = list(opts.get("allow") or ())
    cfg.tls_cert = opts.get("tls_cert")
    cfg.tls_key = opts.get("tls_key")
    cfg.tls_client_ca = opts.get("tls_client_ca")
    cfg.plain_listen = opts.get("plain_listen")
    cfg.auth_token_file = opts.get("auth_token_file")
    cfg.admin_token_file = opts.get("admin_token_file")
    try:
        security.parse_networks(cfg.allow)
        security.tls_from_config(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
        if cfg.plain_listen is not None and not cfg.plain_listen.startswith("unix:"):
            _plain_listen_address(cfg.plain_listen)
        if cfg.auth_token_file is not None:
            security.load_token(cfg.auth_token_file)
        if cfg.admin_token_file is not None:
            security.load_token(cfg.admin_token_file, "--admin-token-file")
    except security.SecurityConfigError as exc:
        raise click.UsageError(str(exc), None) from None


def _plain_listen_address(addr: str) -> None:
    from beanstalk_py.shell import listeners, security

    try:
        host, _ = listeners.split_host_port(addr)
    except listeners.AddressError:
        host = None
    if host is None:
        raise security.SecurityConfigError(
            f"--plain-listen {addr}: expected HOST:PORT, [IPV6]:PORT or unix:PATH"
        )


def _fsync_after_no_fsync(argv: list[str] | None = None) -> bool:
    """True when an -f flag appears after the last -F (so syncing is back on)."""
    args = sys.argv[1:] if argv is None else argv
    last_f = last_cap_f = (-1, -1)
    takes_value = False
    for i, arg in enumerate(args):
        if takes_value:
            takes_value = False  # this word is the previous flag's value
        elif arg.startswith("--"):
            if arg.startswith("--fsync-ms"):
                last_f = (i, 0)
            elif arg == "--no-fsync":
                last_cap_f = (i, 0)
        elif arg.startswith("-"):
            for j, ch in enumerate(arg[1:]):
                if ch == "F":
                    last_cap_f = (i, j)
                elif ch in "fblpuzs":
                    if ch == "f":
                        last_f = (i, j)
                    takes_value = j == len(arg) - 2  # the value is the next word
                    break  # the rest of this word is the flag's value
    return last_f > last_cap_f


def main(argv: list[str] | None = None, *, prebound: socket.socket | None = None) -> None:
    """Parse ``argv`` and serve; ``prebound``: the socket entry.py bound before the imports."""
    args = sys.argv[1:] if argv is None else argv

    if args and args[0] == "import-beanstalkd-binlog":
        from beanstalk_py.app.importer_cli import import_command

        import_command.main(args=args[1:], prog_name="beanstalk-py import-beanstalkd-binlog")
        return
    try:
        command.main(args=args, prog_name="beanstalk-py", standalone_mode=False, obj=prebound)
    except click.UsageError as exc:
        click.echo(f"beanstalk-py: {exc.format_message()}", err=True)
        click.echo(command.get_usage(click.Context(command, info_name="beanstalk-py")), err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(1)
