"""Server settings, with beanstalkd's defaults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib costs start-up time; cli.py and entry.py make the Path
    from pathlib import Path

DEFAULT_PORT = 11300
DEFAULT_MAX_JOB_SIZE = 65535
MAX_JOB_SIZE_LIMIT = 1073741824  # beanstalkd clamps -z to 1 GiB
DEFAULT_FSYNC_MS = 50
DEFAULT_BINLOG_SIZE = 10 * 1024 * 1024


class Config:
    """Keyword arguments, attributes, ``==`` and ``repr`` as a dataclass would have them.

    Not a dataclass: importing dataclasses (and inspect with it) is ~15% of the time from exec
    to the first reply (see startup.py).
    """

    def __init__(
        self,
        *,
        host: str | None = None,  # None: every interface
        port: int = DEFAULT_PORT,
        port_given: bool = False,  # -p on the command line (warned about under socket activation)
        unix_path: str | None = None,  # -l unix:PATH
        max_job_size: int = DEFAULT_MAX_JOB_SIZE,
        binlog_dir: Path | None = None,
        fsync_ms: int | None = DEFAULT_FSYNC_MS,  # None: never fsync (-F); 0: every reply
        binlog_size: int = DEFAULT_BINLOG_SIZE,
        user: str | None = None,
        verbose: int = 0,
        log_format: str = "text",
        # operations
        http: bool = True,  # serve GET/HEAD on the beanstalk port
        metrics_addr: str | None = None,
        metrics_max_tubes: int = 1000,
        # hardening
        max_connections: int = 0,  # 0: unlimited
        max_jobs: int = 0,
        max_job_bytes: int = 0,
        output_limit: int = 4 * 1024 * 1024,  # unsent reply bytes before reading stops
        allow: Sequence[str] = (),
        # TLS on the main listener (--tls-cert/--tls-key; --tls-client-ca: mTLS);
        # --plain-listen adds a plaintext listener ("HOST:PORT" or "unix:PATH") next to it
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_client_ca: str | None = None,
        plain_listen: str | None = None,
        auth_token_file: str | None = None,  # clients must send `auth <token>` first
        admin_token_file: str | None = None,  # the web console's bodies and actions
        # cluster mode (docs/CLUSTER.md): the --cluster URL, this node's name, the address
        # followers relay clients to, and the leader lease's TTL in seconds
        cluster: str | None = None,
        node_id: str | None = None,
        advertise: str | None = None,
        lease_ttl: int = 1,
        cluster_compact_bytes: int = 64 * 1024 * 1024,  # etcd log bytes between compactions
    ) -> None:
        self.host = host
        self.port = port
        self.port_given = port_given
        self.unix_path = unix_path
        self.max_job_size = max_job_size
        self.binlog_dir = binlog_dir
        self.fsync_ms = fsync_ms
        self.binlog_size = binlog_size
        self.user = user
        self.verbose = verbose
        self.log_format = log_format
        self.http = http
        self.metrics_addr = metrics_addr
        self.metrics_max_tubes = metrics_max_tubes
        self.max_connections = max_connections
        self.max_jobs = max_jobs
        self.max_job_bytes = max_job_bytes
        self.output_limit = output_limit
        self.allow: list[str] = list(allow)
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_client_ca = tls_client_ca
        self.plain_listen = plain_listen
        self.auth_token_file = auth_token_file
        self.admin_token_file = admin_token_file
        self.cluster = cluster
        self.node_id = node_id
        self.advertise = advertise
        self.lease_ttl = lease_ttl
        self.cluster_compact_bytes = cluster_compact_bytes

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()) + ")"
