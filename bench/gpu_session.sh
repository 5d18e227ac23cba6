#!/usr/bin/env bash
# Everything the CUDA issue needs from a GPU machine, in ONE device call (10-minute cap):
#   build, the CUDA tests with the compiled kernel opted in (IDSELECT_CUDA_KERNEL=1) and on the
#   default route, compute-sanitizer memcheck + racecheck + synccheck, the benchmark.
#
#     bash bench/gpu_session.sh
#
# Every step has its own time limit (they add up to about 8.5 minutes) and writes its log
# under $OUT as it goes, so a slow step costs its own results only. Results: $OUT/summary.log,
# build/tests/sanitizer logs, select_cuda.json/.png (also copied to bench/results/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/idselect-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}
status=0
start=$(date +%s)
step() { echo "=== [$(( $(date +%s) - start ))s] $1" | tee -a "$OUT/summary.log"; }
check() {  # check NAME RC: record a failed step (124: it ran out of time)
  if [ "$2" -ne 0 ]; then status=1; echo "FAILED: $1 (rc=$2$([ "$2" -eq 124 ] && echo ', time limit'))" | tee -a "$OUT/summary.log"; fi
}

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$OUT/summary.log"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" 2>&1 | tee -a "$OUT/summary.log"
echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo -dirty)" | tee -a "$OUT/summary.log"

step "build (TORCH_CUDA_ARCH_LIST=9.0, ptxas -v in build.log)"
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=16 timeout 200 \
  $PY -m pip install --no-build-isolation --no-deps -v -e . > "$OUT/build.log" 2>&1
rc=$?; check build $rc
if [ $rc -ne 0 ]; then tail -40 "$OUT/build.log" | tee -a "$OUT/summary.log"; exit 1; fi
grep -E "spill (stores|loads)" "$OUT/build.log" | grep -v " 0 bytes spill stores, 0 bytes spill loads" | head -5 | tee -a "$OUT/summary.log"
IDSELECT_CUDA_KERNEL=1 $PY -c "import idselect; print('native with IDSELECT_CUDA_KERNEL=1:', idselect.native_backends())" 2>&1 | tee -a "$OUT/summary.log"
$PY -c "import idselect; print('default route for cuda:', idselect.backend_for('cuda'))" 2>&1 | tee -a "$OUT/summary.log"

step "tests: compiled kernel, every path (IDSELECT_CUDA_KERNEL=1)"
IDSELECT_CUDA_KERNEL=1 timeout 170 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$OUT/tests_kernel.log" 2>&1
check "tests kernel" $?
tail -15 "$OUT/tests_kernel.log" | tee -a "$OUT/summary.log"

step "tests: shared suites on CUDA with the kernel, and on the default route"
IDSELECT_CUDA_KERNEL=1 timeout 80 $PY -m pytest -q -p no:cacheprovider -k cuda \
  tests/test_select.py tests/test_errors.py tests/test_properties.py > "$OUT/tests_shared_kernel.log" 2>&1
check "tests shared (kernel)" $?
tail -5 "$OUT/tests_shared_kernel.log" | tee -a "$OUT/summary.log"
timeout 80 $PY -m pytest -q -p no:cacheprovider -k "cuda or routing or opt_in or off_by_default" \
  tests/test_select.py tests/test_device_path.py tests/test_cuda.py > "$OUT/tests_default.log" 2>&1
check "tests default route" $?
tail -5 "$OUT/tests_default.log" | tee -a "$OUT/summary.log"

for tool in memcheck racecheck synccheck; do
  step "compute-sanitizer --tool $tool python3 bench/sanitize_cases.py"
  timeout 60 compute-sanitizer --tool "$tool" --error-exitcode 9 $PY bench/sanitize_cases.py > "$OUT/sanitizer_$tool.log" 2>&1
  check "sanitizer $tool" $?
  tail -4 "$OUT/sanitizer_$tool.log" | tee -a "$OUT/summary.log"
done

step "benchmark (IDSELECT_CUDA_KERNEL=1; JSON written after every group)"
IDSELECT_CUDA_KERNEL=1 timeout 150 $PY bench/bench_select.py --device cuda --out-dir "$OUT" > "$OUT/bench.log" 2>&1
check benchmark $?
grep -v "run/s\|s/run" "$OUT/bench.log" | tail -80 | tee -a "$OUT/summary.log"
mkdir -p bench/results && cp "$OUT"/select_cuda.* bench/results/ 2>/dev/null

step "done, status $status"
exit $status
