"""Server settings, with beanstalkd's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 11300
DEFAULT_MAX_JOB_SIZE = 65535
MAX_JOB_SIZE_LIMIT = 1073741824  # beanstalkd clamps -z to 1 GiB
DEFAULT_FSYNC_MS = 50
DEFAULT_BINLOG_SIZE = 10 * 1024 * 1024


@dataclass
class Config:
    host: str | None = None  # None: every interface
    port: int = DEFAULT_PORT
    port_given: bool = False  # -p on the command line (warned about under socket activation)
    unix_path: str | None = None  # -l unix:PATH
    max_job_size: int = DEFAULT_MAX_JOB_SIZE
    binlog_dir: Path | None = None
    fsync_ms: int | None = DEFAULT_FSYNC_MS  # None: never fsync (-F); 0: before every reply
    binlog_size: int = DEFAULT_BINLOG_SIZE
    user: str | None = None
    verbose: int = 0
    log_format: str = "text"
    # operations
    http: bool = True  # serve GET/HEAD on the beanstalk port
    metrics_addr: str | None = None
    metrics_max_tubes: int = 1000
    # hardening
    max_connections: int = 0  # 0: unlimited
    max_jobs: int = 0
    max_job_bytes: int = 0
    output_limit: int = 4 * 1024 * 1024  # unsent reply bytes before a connection stops being read
    allow: list[str] = field(default_factory=list)
    # TLS on the main listener (--tls-cert/--tls-key; --tls-client-ca: mTLS); --plain-listen
    # adds a plaintext listener ("HOST:PORT" or "unix:PATH") next to the TLS one
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    plain_listen: str | None = None
    auth_token_file: str | None = None  # clients must send `auth <token>` first
    admin_token_file: str | None = None  # the web console's bodies and actions (console/)
