#!/usr/bin/env bash
# Everything the CUDA issue needs from a GPU machine, in one device call (see DEVELOPERS.md):
#   build, the whole test suite on CUDA, compute-sanitizer memcheck + racecheck, the benchmark.
# Results land under $OUT (the device tool brings them back): logs, select_cuda.json/.png.
set -uo pipefail
OUT=${OUT:-/tmp/idselect-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0
step() { echo "=== $1" | tee -a "$OUT/summary.log"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$OUT/summary.log"
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" | tee -a "$OUT/summary.log"

step "build"
python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
python3 -c "import idselect; print('native:', idselect.native_backends())" | tee -a "$OUT/summary.log"

step "tests"
python3 -m pytest -q -p no:cacheprovider tests -x > "$OUT/tests.log" 2>&1 || status=1
tail -5 "$OUT/tests.log" | tee -a "$OUT/summary.log"

for tool in memcheck racecheck; do
  step "compute-sanitizer --tool $tool python3 bench/sanitize_cases.py"
  compute-sanitizer --tool "$tool" --error-exitcode 9 python3 bench/sanitize_cases.py > "$OUT/sanitizer_$tool.log" 2>&1 || status=1
  tail -4 "$OUT/sanitizer_$tool.log" | tee -a "$OUT/summary.log"
done

step "benchmark"
python3 bench/bench_select.py --device cuda --out-dir "$OUT" > "$OUT/bench.log" 2>&1 || status=1
grep -v "run/s\|s/run" "$OUT/bench.log" | tail -60 | tee -a "$OUT/summary.log"
exit $status
