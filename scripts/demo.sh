#!/usr/bin/env bash
# Sets up .venv and runs the demo: a transformer block forward and backward on gems, checked
# against ATen, on the GPU if there is one, else on Triton's interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m flag_gems demo "$@"
