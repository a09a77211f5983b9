#!/usr/bin/env bash
# Run the whole benchmark suite on a GPU and write benchmark/results/<date>-<card>/:
#   records/*.jsonl      one JSON line per result, as measured
#   results.json         all of them merged, with the card, driver, versions, date and ceilings
#   summary.md           the tables; chart.png (kernel time) and chart-operator.png (small shapes)
#   pytest-benchmark/    pytest-benchmark's JSON (gems' operator time per call, our numbers in extra_info)
#   logs/                each step's full pytest output
#
# Usage: bash benchmark/run_gpu.sh [OUTPUT_DIR]
# Environment: PYTHON (default python3); GEMS_BENCH_OPS (only these cases, kernel mode);
# GEMS_BENCH_STEPS (only these steps, e.g. operator-pointwise,operator-norm: into an existing OUTPUT_DIR they
# measure again, replacing those steps' records, and the report covers every record there);
# GEMS_BENCH_SECONDS, the wall-clock budget of the whole run
# (default 570: under 10 minutes); GEMS_BENCH_REP_MS / GEMS_BENCH_WARMUP_MS, do_bench's times per point
# (default 60 / 15 ms).
# Each step gets its share of the time left (what earlier steps did not use moves on) and skips the
# points it has no time for (they are listed as skipped); a step whose process dies or hangs is resumed
# after the point that killed it.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
TOTAL=${GEMS_BENCH_SECONDS:-570}
REP_MS=${GEMS_BENCH_REP_MS:-60}
WARMUP_MS=${GEMS_BENCH_WARMUP_MS:-15}
POINT_LIMIT=40  # seconds; a point still running then is stopped and reported
export PYTHONUNBUFFERED=1
START=$SECONDS

if ! "$PY" -c "import flag_gems, torch; assert torch.cuda.is_available(), 'no GPU visible to torch'" 2>/tmp/gems_bench_check.$$; then
  echo "run_gpu.sh: flag_gems or a CUDA GPU is not available to $PY:" >&2
  tail -n 3 /tmp/gems_bench_check.$$ >&2
  echo "Install the packages first, e.g.: $PY -m pip install --no-deps packages/gems-core packages/gems-pointwise \\" >&2
  echo "    packages/gems-reduction packages/gems-blas packages/gems-norm   (hatchling must be importable)" >&2
  [ -f scripts/gpu_install.sh ] && echo "or, offline with wheels in .whl/: bash scripts/gpu_install.sh" >&2
  rm -f /tmp/gems_bench_check.$$
  exit 1
fi
rm -f /tmp/gems_bench_check.$$
"$PY" -c "import pytest_benchmark" 2>/dev/null || echo "note: pytest-benchmark is not installed; its JSON is skipped"

CARD=$("$PY" -c "import torch; print(torch.cuda.get_device_name())")
SLUG=$(echo "$CARD" | tr 'A-Z' 'a-z' | sed -e 's/nvidia//g' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
OUT=${1:-benchmark/results/$(date -u +%Y-%m-%d)-${SLUG:-gpu}}
if [ -z "${1:-}" ] && [ -e "$OUT" ]; then
  n=2; while [ -e "$OUT-$n" ]; do n=$((n + 1)); done; OUT="$OUT-$n"
fi
mkdir -p "$OUT/records" "$OUT/logs" "$OUT/pytest-benchmark"
echo "flag_gems benchmark on $CARD -> $OUT (budget ${TOTAL}s)"
{
  nvidia-smi 2>/dev/null || true
  "$PY" -c "import sys, torch, triton, flag_gems; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda); print('triton', triton.__version__); [print('family', f['name'], f['version'], len(f['ops']), 'ops', f['error'] or '') for f in flag_gems.families()]"
} > "$OUT/environment.txt" 2>&1

# Steps: name, planned seconds, pytest arguments. Each step gets its plan's share of the time left;
# within a step the most important points run first. GEMS_BENCH_OPS (comma-separated case names) runs
# only those cases, in kernel mode: a check of a few ops after a change.
STEPS=(
  "kernel-pointwise|95|benchmark/test_pointwise_perf.py --bench-mode kernel --bench-shapes large"
  "kernel-reduction|95|benchmark/test_reduction_perf.py --bench-mode kernel --bench-shapes large"
  "kernel-blas|70|benchmark/test_blas_perf.py --bench-mode kernel --bench-shapes large"
  "kernel-norm|55|benchmark/test_norm_perf.py --bench-mode kernel --bench-shapes large"
  "operator-pointwise|18|benchmark/test_pointwise_perf.py --bench-mode operator --bench-shapes small"
  "operator-reduction|15|benchmark/test_reduction_perf.py --bench-mode operator --bench-shapes small"
  "operator-blas|10|benchmark/test_blas_perf.py --bench-mode operator --bench-shapes small"
  "operator-norm|10|benchmark/test_norm_perf.py --bench-mode operator --bench-shapes small"
  "overhead|50|benchmark/test_overhead_perf.py --bench-mode operator"
  "first-call|60|benchmark/test_first_call_perf.py"
)
if [ -n "${GEMS_BENCH_OPS:-}" ]; then
  FILTERED=()
  for step in "${STEPS[@]}"; do
    case $step in kernel-*) FILTERED+=("$step --bench-ops $GEMS_BENCH_OPS") ;; esac
  done
  STEPS=("${FILTERED[@]}")
fi
if [ -n "${GEMS_BENCH_STEPS:-}" ]; then
  FILTERED=()
  for step in "${STEPS[@]}"; do
    name=${step%%|*}
    if [[ ",$GEMS_BENCH_STEPS," == *",$name,"* ]]; then
      FILTERED+=("$step")
      rm -f "$OUT/records/$name.jsonl" "$OUT/pytest-benchmark/$name-"*.json
    fi
  done
  STEPS=("${FILTERED[@]}")
fi
PLANNED=0
for step in "${STEPS[@]}"; do PLANNED=$((PLANNED + $(echo "$step" | cut -d'|' -f2))); done
RESERVE=25  # seconds kept for the report and the charts
UNPLANNED=$PLANNED  # planned seconds of the steps not started yet

elapsed() { echo $((SECONDS - START)); }

run_step() {  # name planned_seconds pytest-args...
  local name=$1 planned=$2; shift 2
  # The step's share of the time left, so that what earlier steps did not use goes to the later ones.
  local left=$((TOTAL - RESERVE - $(elapsed)))
  local budget=$((planned * left / UNPLANNED))
  UNPLANNED=$((UNPLANNED - planned))
  [ "$budget" -gt "$left" ] && budget=$left
  local step_end=$(($(elapsed) + budget)) attempt=1 rc resume=() log
  while :; do
    budget=$((step_end - $(elapsed)))
    if [ "$budget" -lt 10 ]; then
      echo "== $name: no time left in the run's budget"
      break
    fi
    # The hard limit leaves the last point time to finish, within the whole run's budget.
    local hard=$((budget + POINT_LIMIT + 20)) cap=$((TOTAL - 10 - $(elapsed)))
    [ "$hard" -gt "$cap" ] && hard=$cap
    echo "== $name (attempt $attempt, budget ${budget}s)"
    local bm=()
    "$PY" -c "import pytest_benchmark" 2>/dev/null && bm=(--benchmark-json "$OUT/pytest-benchmark/$name-$attempt.json")
    log="$OUT/logs/$name-$attempt.log"
    : > "$log"
    timeout --kill-after=10 "$hard" "$PY" -m pytest "$@" -s -q -p no:randomly -rfE \
        --bench-record "$OUT/records/$name.jsonl" --bench-budget "$budget" \
        --bench-rep "$REP_MS" --bench-warmup "$WARMUP_MS" --bench-point-limit "$POINT_LIMIT" \
        "${bm[@]}" "${resume[@]}" > "$log" 2>&1 &
    local pid=$!
    tail -n +1 -f "$log" --pid=$pid 2>/dev/null | grep --line-buffered -o '\[bench\] .*' | cut -c9-
    wait $pid; rc=$?
    # pytest: 0 all passed, 1 some cases failed, 2-4 interrupted or a usage error, 5 nothing collected.
    # Above 100 the process was killed (124: at its time limit) or crashed: resume after that point.
    if [ "$rc" -lt 100 ]; then
      tail -n 1 "$log" | sed "s/^/   $name: /"
      [ "$rc" -ge 2 ] && [ "$rc" -le 4 ] && echo "   $name: pytest stopped with status $rc; see $log"
      break
    fi
    echo "   $name: the process ended with status $rc (124: killed at its time limit); resuming after the point it was running"
    attempt=$((attempt + 1))
    [ "$attempt" -gt 4 ] && break
    resume=(--bench-resume)
  done
}

for step in "${STEPS[@]}"; do
  IFS='|' read -r name planned args <<< "$step"
  # shellcheck disable=SC2086
  run_step "$name" "$planned" $args
done

echo "== report ($(elapsed)s so far)"
"$PY" benchmark/report.py "$OUT"/records/*.jsonl -o "$OUT/results.json" --markdown "$OUT/summary.md" \
  > "$OUT/logs/report.log" 2>&1 || echo "report.py failed: see $OUT/logs/report.log"
"$PY" benchmark/chart.py "$OUT/results.json" -o "$OUT/chart.png" --mode kernel >> "$OUT/logs/report.log" 2>&1 \
  || echo "no kernel-mode chart (see $OUT/logs/report.log)"
"$PY" benchmark/chart.py "$OUT/results.json" -o "$OUT/chart-operator.png" --mode operator \
  >> "$OUT/logs/report.log" 2>&1 || echo "no operator-mode chart (see $OUT/logs/report.log)"
echo
cat "$OUT/logs/report.log"
echo
echo "results in $OUT ($(elapsed)s): summary.md, results.json, chart.png"
