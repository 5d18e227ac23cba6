#!/usr/bin/env bash
# The first thing a lent GPU runs, in ONE device call (the lease: 15 minutes of device time in
# all, at most 10 minutes per call, 8 files back). Steps in priority order, each with its own
# time limit, all under one deadline (GPU_SESSION_SECONDS, default 530 s, so that the call fits
# `timeout_s=560`); each step writes its result under $OUT as it finishes:
#
#   1. device facts            2. build the extension (nvcc, sm_90)
#   3. correctness: every CUDA path vs the reference (compiled kernel, default device path,
#      graph capture; the Gram path also with its opt-in review-v2 variants, IDSELECT_CUDA_TUNED=1,
#      which must give the verified path's bits), then the shared suites on CUDA and the vLLM plugin's batched selection (one pinned upload, no sync)
#   4. op benchmark at the four goal shapes, every path side by side; 4b. the same shapes
#      kernel by kernel (torch.profiler: norms, Gram, greedy, streaming)
#   5. end to end, LLaVA-1.5-7B shape (bf16, random weights): batch 1 and 8, unpruned vs keep
#      64 and 16, ID-Selection vs top-k vs reference vs the oracle (the unpatched LLM on the
#      already-pruned sequence), variants interleaved, with hooks_ms, vision_ms, kernels and
#      host syncs per prefill; 5b. the same at keep 64 in the compiled fast path (language model
#      and vision tower compiled with CUDA graphs, static cache)
#   6. compute-sanitizer memcheck, racecheck, synccheck and initcheck on small cases
#   7. with the time left: LLaVA-NeXT-7B and Qwen2.5-VL-7B end to end
#
# Measured on an H100 (2026-11-26, fb7bc26; bench/results/gpu_session_fb7bc26): device 7 s,
# build 28 s, tests 23 + 35 s, benchmark 16 s, LLaVA-1.5 end to end 73 s, memcheck 5 s,
# racecheck 100 s, synccheck 5 s, initcheck 4 s, LLaVA-NeXT 64 s, Qwen2.5-VL 63 s; with the
# profile (new, ~20 s) about 450 s of the 530 s deadline; the tuned variants (gram_tuned in the
# tests, the benchmark, the profile and every sanitizer) add an estimated 50 s, so step 7 may be
# cut. The machine's start adds ~30 s to the lease. The step limits cap a step that hangs.
# Since issue 27, step 5 times every case in interleaved rounds (batch 1: 12 rounds) and adds an
# oracle per keep, and step 5b compiles the 7B language model (est. 60-120 s of compilation and
# CUDA-graph capture, never measured): steps 6 and 7 are the first to be cut.
#
#     bash bench/gpu_session.sh              # on the GPU machine (OUT set by the device tool)
#     bash bench/gpu_session.sh --rehearse   # on a CPU machine: tiny shapes, CPU device, no nvcc
#                                            # build or sanitizers (CI runs this)
#
# Files under $OUT (at most 8): summary.log, logs.tar.gz (every step's log), select_cuda_goals
# .json/.png, e2e_real_cuda.json, e2e_real_cuda.png, e2e_real_cuda_share.png. Exit status 0
# only if every step that ran passed; a step cut by its limit is reported as such.
set -uo pipefail
cd "$(dirname "$0")/.."
# The device machine's git metadata can lag the working tree it receives (2026-11-26: HEAD
# read fb7bc26 on a tree two commits later), so the logs also carry a fingerprint of the code:
# `bash bench/gpu_session.sh --fingerprint` here prints the same hash for the same files.
fingerprint() {
  find csrc idselect bench tests setup.py CMakeLists.txt -type f \( -name '*.py' -o -name '*.cu' \
    -o -name '*.cuh' -o -name '*.h' -o -name '*.cpp' -o -name '*.sh' -o -name '*.txt' \) \
    -not -path '*/__pycache__/*' -not -path 'bench/results/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16
}
[ "${1:-}" = "--fingerprint" ] && { fingerprint; exit 0; }
REHEARSE=0
[ "${1:-}" = "--rehearse" ] && REHEARSE=1
OUT=${OUT:-/tmp/idselect-gpu}
LOGS="$OUT/logs"
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}
BUDGET=${GPU_SESSION_SECONDS:-530}
start=$(date +%s)
status=0
summary="$OUT/summary.log"
: > "$summary"

say() { echo "$*" | tee -a "$summary"; }
left() { echo $((BUDGET - ($(date +%s) - start))); }
# run NAME LIMIT LOG CMD...: CMD under min(LIMIT, time left), its output in LOG; records failure.
run() {
  local name=$1 limit=$2 log=$3; shift 3
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 15 ]; then say "SKIPPED: $name (no time left)"; return 1; fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  say "=== [$(( $(date +%s) - start ))s] $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$LOGS/$log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    status=1
    say "FAILED: $name (rc=$rc$([ $rc -eq 124 ] && echo ', time limit'))"
  fi
  tail -n 12 "$LOGS/$log" >> "$summary"
  return $rc
}
bundle() { tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs 2>/dev/null; }
trap bundle EXIT

if [ $REHEARSE = 1 ]; then
  DEVICE=cpu SIZE=small
  say "rehearsal: CPU device, tiny shapes, no nvcc build and no sanitizers"
else
  DEVICE=cuda SIZE=real
fi
KERNEL_ENV=(env -u IDSELECT_CUDA_KERNEL)  # the default routing: the compiled kernel serves CUDA

# 1. Device facts.
say "=== [0s] device"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
  $PY -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" 2>&1
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown) (as the machine's git reads it), code fingerprint $(fingerprint)"
} | tee -a "$summary"

# 2. The extension: built here for sm_90 (the build log keeps ptxas -v).
if [ $REHEARSE = 0 ]; then
  build_start=$(date +%s)
  run "build (TORCH_CUDA_ARCH_LIST=9.0)" 150 build.log \
    env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 $PY -m pip install --no-build-isolation --no-deps -v -e . \
    || { say "the build failed: nothing else can run"; exit 1; }
  say "build took $(( $(date +%s) - build_start ))s"
  grep -E "spill (stores|loads)" "$LOGS/build.log" | grep -v " 0 bytes spill stores, 0 bytes spill loads" | head -5 >> "$summary"
fi
"${KERNEL_ENV[@]}" $PY -c "import idselect; print('native backends:', idselect.native_backends(), '| cuda served by:', idselect.backend_for('cuda'))" 2>&1 | tee -a "$summary"

# 3. Correctness (rehearsal: the same commands, whose CUDA tests skip, then the CPU kernel's).
run "tests: every CUDA path (default routing)" 100 tests_cuda.log \
  "${KERNEL_ENV[@]}" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
run "tests: shared suites on CUDA (kernel), routing" 40 tests_shared.log \
  "${KERNEL_ENV[@]}" $PY -m pytest -q -p no:cacheprovider -k "cuda or routing or turned_off or on_by_default or bad_setting" \
  tests/test_select.py tests/test_errors.py tests/test_properties.py tests/test_device_path.py \
  tests/test_vllm_selection.py
if [ $REHEARSE = 1 ]; then
  run "tests: the CPU kernel and the device path against the reference" 120 tests_cpu.log \
    $PY -m pytest -q -p no:cacheprovider -m "not slow" tests/test_select.py tests/test_device_path.py
fi

# 4. The op benchmark at the goal shapes (rehearsal: the CPU's main group, two repeats).
if [ $REHEARSE = 0 ]; then
  run "op benchmark: goal shapes, every path" 60 bench_select.log \
    "${KERNEL_ENV[@]}" $PY bench/bench_select.py --device cuda --goals --out-dir "$OUT"
else
  run "op benchmark (rehearsal: quick CPU grid)" 120 bench_select.log \
    $PY bench/bench_select.py --device cpu --quick --repeats 2 --out-dir "$OUT"
fi

# 4b. Kernel by kernel at the goal shapes (the JSON goes into logs.tar.gz).
if [ $REHEARSE = 0 ]; then
  run "profile: kernel by kernel, goal shapes" 40 profile_cuda.log \
    "${KERNEL_ENV[@]}" $PY bench/profile_cuda.py --out "$LOGS/profile_cuda.json"
else
  run "profile (rehearsal: CPU, tiny shapes)" 40 profile_cuda.log \
    $PY bench/profile_cuda.py --device cpu --small --calls 2 --out "$LOGS/profile_cuda.json"
fi

# 5. End to end, LLaVA-1.5-7B shape (batch-1 prefill rows get >= 11 interleaved runs).
E2E=(--size "$SIZE" --device "$DEVICE" --batches 1 8 --out-dir "$OUT")
if [ $REHEARSE = 0 ]; then
  run "end to end: llava-1.5-7b (bf16, eager)" 170 e2e_llava.log \
    "${KERNEL_ENV[@]}" $PY bench/bench_e2e.py "${E2E[@]}" --keeps 64 16 --models llava-1.5-7b --variants id topk reference --repeats 5
  run "end to end: llava-1.5-7b (bf16, compiled fast path)" 170 e2e_llava_compiled.log \
    "${KERNEL_ENV[@]}" $PY bench/bench_e2e.py "${E2E[@]}" --keeps 64 --models llava-1.5-7b --variants id topk --repeats 5 \
    --modes compiled
else
  run "end to end (rehearsal: small llava-1.5-7b)" 120 e2e_llava.log \
    $PY bench/bench_e2e.py "${E2E[@]}" --keeps 64 16 --models llava-1.5-7b --variants id topk reference --repeats 1 --new-tokens 4
  run "end to end (rehearsal: small llava-1.5-7b, compiled)" 240 e2e_llava_compiled.log \
    $PY bench/bench_e2e.py "${E2E[@]}" --keeps 64 --models llava-1.5-7b --variants id --repeats 1 --new-tokens 2 \
    --batches 1 --modes compiled
fi

# 6. compute-sanitizer on small cases (H100, fb7bc26: memcheck 5 s, racecheck 100 s,
#    synccheck 5 s, initcheck 4 s).
if [ $REHEARSE = 0 ]; then
  for tool_limit in memcheck:40 racecheck:190 synccheck:40 initcheck:40; do
    tool=${tool_limit%%:*}
    run "compute-sanitizer --tool $tool" "${tool_limit##*:}" "sanitizer_$tool.log" \
      compute-sanitizer --tool "$tool" --error-exitcode 9 $PY bench/sanitize_cases.py
  done
fi

# 7. Whatever time is left: two more models end to end (rows merge into the same JSON).
for model in llava-next-7b qwen2.5-vl-7b; do
  if [ $REHEARSE = 0 ]; then
    run "end to end: $model (time left)" 100 "e2e_$model.log" \
      "${KERNEL_ENV[@]}" $PY bench/bench_e2e.py "${E2E[@]}" --keeps 64 16 --models "$model" --variants id topk --repeats 3 || true
  else
    run "end to end (rehearsal: small $model)" 120 "e2e_$model.log" \
      $PY bench/bench_e2e.py "${E2E[@]}" --keeps 64 16 --models "$model" --variants id topk --repeats 1 --new-tokens 4 || true
  fi
done

say "=== [$(( $(date +%s) - start ))s] done, status $status"
bundle
rm -rf "$LOGS"
trap - EXIT
exit $status
