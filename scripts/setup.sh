#!/usr/bin/env bash
# Creates .venv with gems-core and every family of this repository installed (editable).
# With an NVIDIA GPU, torch comes as its CUDA build (bringing its own triton); without one, the CPU
# build and triton version that Triton's interpreter is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${pip[@]}" torch triton numpy
else
  "${pip[@]}" torch==2.13.0 triton==3.6.0 "numpy<2.4"
fi

editables=()
for project in packages/*/ examples/gems-example-plugin/ tests/plugins/gems-test-plugins/; do
  [ -f "$project/pyproject.toml" ] && editables+=(-e "$project")
done
"${pip[@]}" pluggy packaging pytest pytest-xdist pytest-benchmark "${editables[@]}"
echo "flag_gems is installed in .venv"
