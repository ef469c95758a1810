"""Console entry point: bind first, import the rest afterwards (shell/listeners, shell/startup).

A command line made only of beanstalkd's own short flags (``-l -p -b -f -F -z -s -u -V`` with
plain, valid values) is read here without click, whose import is a fifth of the time to the
first reply; everything else (long options, help, version, anything cli.py would reject or
warn about) goes to cli.py, which parses and reports as usual. Both build the same ``Config``
(tests/unit/test_cli.py compares them).
"""

from __future__ import annotations

import getopt
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from beanstalk_py.shell.config import Config

PLAIN_FLAGS = "b:f:Fl:p:u:z:s:V"  # the subset of cli.py's short flags read here


def main() -> None:
    from beanstalk_py.shell import listeners

    argv = sys.argv[1:]
    prebound = listeners.prebind(argv)
    config = plain_config(argv)
    if config is None:
        from beanstalk_py.app import cli

        cli.main(argv, prebound=prebound)
        return
    from beanstalk_py.app.lifecycle import run
    from beanstalk_py.app.logs import setup_logging

    setup_logging(config.verbose, config.log_format)
    sys.exit(run(config, prebound))


def plain_config(argv: list[str]) -> Config | None:
    """The Config for ``argv`` if it is a plain command line (see above), else None."""
    try:
        opts, args = getopt.getopt(argv, PLAIN_FLAGS)
    except getopt.GetoptError:
        return None
    if args:
        return None
    from beanstalk_py.shell.config import MAX_JOB_SIZE_LIMIT, Config

    cfg = Config()
    for flag, value in opts:
        if flag == "-V":
            cfg.verbose += 1
        elif flag == "-F":
            cfg.fsync_ms = None  # -f and -F: the later one wins, as in beanstalkd
        elif flag == "-u":
            cfg.user = value
        elif flag == "-l":
            from beanstalk_py.shell.listeners import AddressError, listen_address

            try:
                cfg.host, cfg.unix_path = listen_address(value)
            except AddressError:
                return None  # cli.py reports it
        elif flag == "-b":
            if not os.path.isdir(value):
                return None
            from pathlib import Path

            cfg.binlog_dir = Path(value)
        elif not value.isdigit():
            return None
        elif flag == "-p":
            if int(value) > 65535:
                return None
            cfg.port, cfg.port_given = int(value), True
        elif flag == "-f":
            cfg.fsync_ms = int(value)
        elif flag == "-z":
            if int(value) > MAX_JOB_SIZE_LIMIT:
                return None  # cli.py clamps it with a message
            cfg.max_job_size = int(value)
        elif flag == "-s":
            if int(value) < 1:
                return None
            cfg.binlog_size = int(value)
    return cfg
