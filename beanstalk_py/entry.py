"""Console entry point: bind first, import the rest afterwards (see listen.py)."""

from __future__ import annotations

import sys


def main() -> None:
    from beanstalk_py.listen import prebind

    sock = prebind(sys.argv[1:])
    from beanstalk_py import cli

    cli.PREBOUND = sock
    cli.main()
