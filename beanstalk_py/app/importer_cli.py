"""``beanstalk-py import-beanstalkd-binlog SRC_DIR -b DIR``: migrate a beanstalkd queue.

Reads a beanstalkd binlog directory (format v7 or v5; the beanstalkd process must be stopped)
and writes its live jobs into an empty beanstalk-py binlog directory, keeping ids, tubes,
bodies, priorities, delays, TTRs, counters and the buried order.
"""

from __future__ import annotations

from pathlib import Path

import click

from beanstalk_py.shell.config import DEFAULT_BINLOG_SIZE, DEFAULT_MAX_JOB_SIZE


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-b",
    "--binlog-dir",
    "dst",
    required=True,
    type=click.Path(exists=True, file_okay=False, writable=True, path_type=Path),
    help="beanstalk-py binlog directory to create the jobs in (must hold no binlog yet)",
)
@click.option("-s", "--binlog-size", default=DEFAULT_BINLOG_SIZE, type=click.IntRange(min=1))
@click.option(
    "-z",
    "--max-job-size",
    default=DEFAULT_MAX_JOB_SIZE,
    type=click.IntRange(min=0),
    help="the -z the beanstalkd server ran with",
)
def import_command(src: Path, dst: Path, binlog_size: int, max_job_size: int) -> None:
    """Import the beanstalkd binlog in SRC into a beanstalk-py binlog directory."""
    from beanstalk_py.binlog import BinlogError
    from beanstalk_py.binlog.beanstalkd_import import import_beanstalkd

    try:
        report = import_beanstalkd(src, dst, file_size=binlog_size, max_job_size=max_job_size)
    except (BinlogError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"imported {report.jobs} jobs ({report.ready} ready, {report.delayed} delayed, "
        f"{report.buried} buried) from {report.files_read} files; next id {report.next_id}"
    )
