#!/usr/bin/env python3
"""Apply each named mutation of issue 15 to a copy of the tree and see whether the suite kills it.

Each mutation is a promise of the README broken in the smallest way: a text substitution in
one module (the working tree is never touched). A substitution that does not match exactly
once is reported as MOVED and the script exits non-zero: the code changed, so the mutation
must be re-expressed, not silently skipped.

Usage::

    python scripts/check_named_mutations.py                 # all, tests/unit + tests/integration
    python scripts/check_named_mutations.py put-acks-refused-journal --tests tests/unit
    python scripts/check_named_mutations.py --list

A mutation is killed when the selected tests fail (or time out) with it applied; the
unmutated copy must pass the same selection first.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mutation import copy_tree, run_tests

DEFAULT_TESTS = ["tests/unit", "tests/integration"]

_HARDENING_END = "        raise click.UsageError(str(exc), None) from None\n"


@dataclass(frozen=True)
class Named:
    name: str
    issue_item: str
    path: str
    edits: tuple[tuple[str, str], ...]  # (old, new); each old must occur exactly once


def _drop_after_validation(attr: str, value: str) -> tuple[tuple[str, str], ...]:
    """Validate the flag as today, then throw the parsed value away."""
    return ((_HARDENING_END, f"{_HARDENING_END}    cfg.{attr} = {value}\n"),)


NAMED: list[Named] = [
    Named(
        "put-acks-refused-journal",
        "1. Engine.put returns INSERTED when journal.put refused",
        "beanstalk_py/core/engine.py",
        (
            (
                "        if not self.journal.put(job):\n"
                '            return b"OUT_OF_MEMORY\\r\\n"\n',
                "        self.journal.put(job)\n",
            ),
        ),
    ),
    Named(
        "kick-journals-old-state",
        "2. kick/kick-job journaled with the job's old state",
        "beanstalk_py/core/engine.py",
        (
            (
                "        job.kicks += 1\n        job.state = READY\n"
                "        if not self.journal.update(job):\n",
                "        job.kicks += 1\n        if not self.journal.update(job):\n",
            ),
            (
                "        self._make_ready(job)\n        return True\n",
                "        job.state = READY\n        self._make_ready(job)\n        return True\n",
            ),
        ),
    ),
    Named(
        "no-fsync-under-f",
        "3. no fsync under -f MS (the sync schedule removed)",
        "beanstalk_py/shell/commit.py",
        (
            (
                "        if binlog.sync_deadline() is not None and not self.always_sync:\n"
                "            self.schedule_sync()\n",
                "",
            ),
        ),
    ),
    Named(
        "F-ignored-plain",
        "3. -F ignored (a plain short-flag command line, read by entry.py without click)",
        "beanstalk_py/app/entry.py",
        (
            (
                "            cfg.fsync_ms = None  # -f and -F: the later one wins,"
                " as in beanstalkd\n",
                "            pass\n",
            ),
        ),
    ),
    Named(
        "F-ignored",
        "3. -F / --no-fsync ignored (a command line with a long option, read by cli.py)",
        "beanstalk_py/app/cli.py",
        (
            (
                '    if opts["no_fsync"] and not _fsync_after_no_fsync():\n'
                "        cfg.fsync_ms = None\n",
                "",
            ),
        ),
    ),
    Named(
        "auth-token-file-not-applied",
        "4. --auth-token-file parsed but not applied",
        "beanstalk_py/app/cli.py",
        _drop_after_validation("auth_token_file", "None"),
    ),
    Named(
        "tls-client-ca-not-applied",
        "4. --tls-client-ca parsed but not applied",
        "beanstalk_py/app/cli.py",
        _drop_after_validation("tls_client_ca", "None"),
    ),
    Named(
        "allow-not-applied",
        "4. --allow parsed but not applied",
        "beanstalk_py/app/cli.py",
        _drop_after_validation("allow", "[]"),
    ),
    Named(
        "max-jobs-not-applied",
        "4. --max-jobs parsed but not applied",
        "beanstalk_py/app/cli.py",
        (('    cfg.max_jobs = opts["max_jobs"]\n', "    cfg.max_jobs = Config().max_jobs\n"),),
    ),
    Named(
        "no-http-not-applied",
        "4. --no-http parsed but not applied",
        "beanstalk_py/app/cli.py",
        (('    cfg.http = not opts["no_http"]\n', "    cfg.http = True\n"),),
    ),
    Named(
        "log-format-not-applied",
        "4. --log-format parsed but not applied",
        "beanstalk_py/app/cli.py",
        (
            (
                '    cfg.log_format = opts["log_format"]\n',
                "    cfg.log_format = Config().log_format\n",
            ),
        ),
    ),
    Named(
        "output-limit-not-applied",
        "4. --output-limit parsed but not applied",
        "beanstalk_py/app/cli.py",
        (
            (
                '    cfg.output_limit = opts.get("output_limit", cfg.output_limit)\n',
                "    cfg.output_limit = Config().output_limit\n",
            ),
        ),
    ),
    Named(
        "listen-fds-ignored",
        "5. LISTEN_FDS ignored (socket activation)",
        "beanstalk_py/app/lifecycle.py",
        # Only the systemd path: the prebound socket of a plain start is still used.
        (
            (
                "        sock, warnings = systemd.inherited_listener(ignored)\n",
                "        sock, warnings = None, []\n",
            ),
        ),
    ),
]


def mutate(source: str, m: Named) -> str:
    for old, new in m.edits:
        count = source.count(old)
        if count != 1:
            raise LookupError(f"{m.path}: expected 1 match, found {count}:\n{old}")
        source = source.replace(old, new)
    return source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="default: all")
    parser.add_argument("--tests", nargs="+", default=DEFAULT_TESTS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    by_name = {m.name: m for m in NAMED}
    unknown = set(args.names) - set(by_name)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}; known: {', '.join(by_name)}")
    chosen = [by_name[n] for n in args.names] if args.names else NAMED
    if args.list:
        for m in chosen:
            print(f"{m.name:30} {m.issue_item}")
        return 0

    with tempfile.TemporaryDirectory(prefix="bspy-named-") as tmp:
        roots = [copy_tree(Path(tmp) / f"w{i}") for i in range(max(1, args.jobs))]
        # Every substitution must still match before anything runs.
        moved = []
        for m in chosen:
            try:
                mutate((roots[0] / m.path).read_text(), m)
            except LookupError as exc:
                moved.append(m.name)
                print(f"MOVED    {m.name}: {exc}", flush=True)
        outcome, secs, tail = run_tests(roots[0], args.tests, args.timeout)
        if outcome != "passed":
            print(f"the unmutated tree does not pass {args.tests}:\n{tail}")
            return 2
        print(f"baseline passed in {secs:.0f} s", flush=True)
        free = list(roots)

        def one(m: Named) -> tuple[Named, str, float]:
            root = free.pop()
            try:
                target = root / m.path
                original = target.read_text()
                target.write_text(mutate(original, m))
                try:
                    result, took, _ = run_tests(root, args.tests, args.timeout)
                finally:
                    target.write_text(original)
            finally:
                free.append(root)
            return m, ("SURVIVED" if result == "passed" else f"killed ({result})"), took

        runnable = [m for m in chosen if m.name not in moved]
        results = {}
        with concurrent.futures.ThreadPoolExecutor(len(roots)) as pool:
            for m, status, took in pool.map(one, runnable):
                results[m.name] = status
                print(f"{status:16} {m.name:30} {took:5.0f} s  {m.issue_item}", flush=True)

    print("\nsummary:")
    for m in chosen:
        print(f"  {results.get(m.name, 'MOVED'):16} {m.name}")
    survived = sum(s == "SURVIVED" for s in results.values())
    print(f"{len(results) - survived} killed, {survived} survived, {len(moved)} moved")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())
