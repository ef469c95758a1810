#!/usr/bin/env bash
# Mutation testing with mutmut 3, on demand (not in CI); see docs/TESTING.md.
#
#   scripts/mutation.sh                  # engine, binlog, server and cli
#   scripts/mutation.sh engine binlog    # only these module groups
#   MUTMUT_CHILDREN=1 scripts/mutation.sh cli
#
# Configuration (modules, test selection) is [tool.mutmut] in pyproject.toml. mutmut counts a
# mutant only against the tests that reach its function *in-process*: code reached only from
# subprocess tests (the CLI, main.py) shows up as "no tests" or survived. For those, and for
# a sample that runs the real test files, use scripts/mutation.py; for the five named
# mutations of issue 15, scripts/check_named_mutations.py.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A pattern=(
  [engine]="beanstalk_py.engine.*"
  [binlog]="beanstalk_py.binlog.*"
  [server]="beanstalk_py.server.*"
  [cli]="beanstalk_py.cli.*"
)
names=()
for group in "${@:-engine binlog server cli}"; do
  for g in $group; do
    [ -n "${pattern[$g]:-}" ] || { echo "unknown module group: $g (engine binlog server cli)" >&2; exit 2; }
    names+=("${pattern[$g]}")
  done
done
python -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "${names[@]}"
# One line per mutant that was not killed; `python -m mutmut show NAME` prints its diff.
python -m mutmut results
