#!/usr/bin/env bash
# One command for a GPU machine without network (torch, triton, pytest present): install this
# repository's packages, run the test suite on the GPU, then the whole benchmark (benchmark/run_gpu.sh),
# which records its results under benchmark/results/. Test output goes to benchmark/results/gpu-tests.log.
#   bash scripts/gpu_check.sh            (GEMS_TEST_SECONDS bounds the test part, default 300)
# The whole takes about 13 minutes; within a 10-minute limit, give the benchmark less time
# (GEMS_BENCH_SECONDS=380) or run the tests and benchmark/run_gpu.sh as two commands.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/gpu_install.sh || exit 1
mkdir -p benchmark/results
# Several test processes share the GPU where pytest-xdist is present (the suite then takes ~2 minutes).
workers=()
python3 -c "import xdist" 2>/dev/null && workers=(-n 8)
timeout "${GEMS_TEST_SECONDS:-300}" python3 -m pytest -q -p no:cacheprovider "${workers[@]}" tests --mode quick -rfE \
  >benchmark/results/gpu-tests.log 2>&1
echo "tests: $(tail -n 1 benchmark/results/gpu-tests.log)"
bash benchmark/run_gpu.sh
