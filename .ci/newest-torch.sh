#!/usr/bin/env bash
# CI: the op against the NEWEST torch release the registry offers today for this machine: the
# extension builds against it (CPU kernel; a copy of the sources in a temporary directory, never
# the checkout), loads, and passes the op tests, in a virtual environment of its own.
#
#   bash .ci/newest-torch.sh           # the newest final release
#   bash .ci/newest-torch.sh 2.15.0    # or a given one
#
# Fails where the op tests fail against that torch (a wrong result). Where there is nothing to
# test - no wheel of that release installs here, the extension does not build against it, or it
# builds but does not load (idselect then falls back to the reference op with a warning) - the
# step says so in a line starting "NOT SUPPORTED" and passes: a user of that torch gets an error
# or a warning, not a wrong result (README, "Quick start": the torch versions the build supports).
#
# The cap: this machine's pip configuration limits torch (/etc/xdg/pip/constraints.txt: the
# releases that lie on its disk). Users get the registry's newest, so this step lifts the cap for
# its own venv only (PIP_CONSTRAINT=/dev/null, which replaces the configured constraint file).
# On the registry the newest Linux wheel is the CUDA build: it brings the CUDA libraries (a few GB
# to download); the extension is built for the CPU only (IDSELECT_CPU_ONLY=1: no nvcc build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_CONSTRAINT=/dev/null
PYTHON=${PYTHON:-python}
OP_TESTS="tests/test_select.py tests/test_cpu_kernel.py tests/test_errors.py tests/test_properties.py"

start=$(date +%s)
if [ $# -ge 1 ]; then
  VERSION=$1
else
  VERSION=$("$PYTHON" -m pip index versions torch 2>/dev/null | sed -n 's/^torch (\(.*\))$/\1/p')
  [ -n "$VERSION" ] || { echo "newest torch: the registry did not answer 'pip index versions torch'" >&2; exit 1; }
fi
pinned=$(sed -n 's/^torch==//p' requirements.txt)
relation="requirements.txt pins $pinned"
[ "$VERSION" = "$pinned" ] && relation="the release requirements.txt pins (the main run tested it already)"
echo "=== newest torch: $VERSION, $relation"

work=$(mktemp -d "${TMPDIR:-/tmp}/idselect-newest-torch.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
if ! "$venv_python" -m pip install -q "torch==$VERSION" numpy pytest hypothesis setuptools wheel ninja \
    > "$work/install.log" 2>&1; then
  tail -15 "$work/install.log"
  echo "=== NOT SUPPORTED: torch $VERSION does not install on this machine ($("$PYTHON" -c 'import sys, platform; print(f"Python {sys.version.split()[0]}, {platform.machine()}")')): nothing to test"
  exit 0
fi
installed=$(date +%s)

# This checkout's files (tracked and untracked, not ignored), without its build outputs.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | (cd "$ROOT" && xargs -0 cp --parents -t "$work/src")
find "$work/src" -name "_C*.so" -delete
if ! (cd "$work/src" && IDSELECT_CPU_ONLY=1 MAX_JOBS=${MAX_JOBS:-2} "$venv_python" setup.py build_ext --inplace \
    > "$work/build.log" 2>&1); then
  grep -E "error|Error" "$work/build.log" | head -20 || true
  tail -20 "$work/build.log"
  echo "=== NOT SUPPORTED: the extension does not build against torch $VERSION (the log above)"
  exit 0
fi
built=$(date +%s)

cd "$work/src"  # the copy first on the path: its idselect, with the extension just built
if ! PYTHONPATH="$work/src" "$venv_python" - "$VERSION" <<'PY'
import os, sys

import torch

import idselect

assert torch.__version__.split("+")[0] == sys.argv[1], (torch.__version__, sys.argv[1])
assert os.path.dirname(os.path.abspath(idselect.__file__)) == os.path.join(os.getcwd(), "idselect"), idselect.__file__
if "cpu" not in idselect.native_backends():
    sys.exit(f"the compiled CPU kernel did not load: {idselect._ops._native_error}")
print(f"op tests against torch {torch.__version__} (torch.version.cuda={torch.version.cuda}; the CPU kernel only), "
      f"idselect from {os.path.dirname(idselect.__file__)}")
PY
then
  echo "=== NOT SUPPORTED: the extension built against torch $VERSION does not load (the error above)"
  exit 0
fi
# shellcheck disable=SC2086
PYTHONPATH="$work/src" "$venv_python" -m pytest -q -p no:cacheprovider $OP_TESTS 2>&1 | tail -15
status=${PIPESTATUS[0]}
end=$(date +%s)
echo "torch $VERSION: install $((installed - start)) s, build $((built - installed)) s, tests $((end - built)) s"
if [ "$status" -ne 0 ]; then
  echo "=== newest torch $VERSION: FAIL (the op tests fail against it)" >&2
  exit 1
fi
echo "=== newest torch $VERSION: PASS (builds, loads, op tests pass)"
