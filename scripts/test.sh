#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite (on the interpreter without a GPU), in quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1
suites=(tests)
[ -d benchmark ] && suites+=(benchmark)
[ -d examples/gems-example-plugin/tests ] && suites+=(examples/gems-example-plugin/tests)
.venv/bin/python -m pytest -n 2 -q "${suites[@]}" --mode quick "$@"
