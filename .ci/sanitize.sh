#!/usr/bin/env bash
# CI: the CPU kernel's tests under AddressSanitizer + UndefinedBehaviorSanitizer.
# Builds a second copy of the extension with -fsanitize=address,undefined (IDSELECT_SANITIZE=1
# in setup.py) into a temporary directory, never into the checkout, and runs the kernel tests
# against it with the sanitizer runtimes preloaded (the python binary is not instrumented).
# Any report fails: UBSan halts on the first error, ASan always does. Leak detection is off
# because the interpreter itself leaks by design at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/idselect-sanitize.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "=== sanitize: building the CPU kernel with ASan + UBSan into $WORK"
IDSELECT_SANITIZE=1 "$PYTHON" setup.py -q build_ext --build-lib "$WORK/lib" --build-temp "$WORK/tmp" > "$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; exit 1; }

# The package as a plain directory: the Python sources of this checkout plus the instrumented _C.
mkdir -p "$WORK/pkg"
cp -r "$ROOT/idselect" "$WORK/pkg/idselect"
find "$WORK/pkg/idselect" -name "_C*.so" -delete
cp "$WORK"/lib/idselect/_C*.so "$WORK/pkg/idselect/"

ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
[ -f "$ASAN_LIB" ] && [ -f "$UBSAN_LIB" ] || { echo "sanitizer runtimes not found: $ASAN_LIB $UBSAN_LIB"; exit 1; }

export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_odr_violation=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$WORK/pkg${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=2

# The tests must exercise the instrumented build, not the checkout or its editable install:
# run from the temporary directory (python puts the working directory first on sys.path).
cd "$WORK"
"$PYTHON" - "$WORK/pkg" <<'PY'
import sys, idselect
assert idselect.__file__.startswith(sys.argv[1]), f"imported {idselect.__file__}, not the sanitized build"
assert "cpu" in idselect.native_backends(), idselect.native_backends()
print("sanitize: testing", idselect.__file__)
PY

echo "=== sanitize: tests/test_select.py tests/test_properties.py tests/test_errors.py tests/test_cpu_kernel.py"
"$PYTHON" -m pytest -q -p no:cacheprovider --rootdir "$ROOT" \
  "$ROOT/tests/test_select.py" "$ROOT/tests/test_properties.py" "$ROOT/tests/test_errors.py" \
  "$ROOT/tests/test_cpu_kernel.py"
