#!/usr/bin/env bash
# CI: the op against the NEWEST torch release the registry offers today for this machine, and
# against torch releases named on the command line: the extension builds against each (CPU
# kernel; a copy of the sources in a temporary directory, never the checkout), loads, and passes
# the op tests, all in ONE virtual environment of its own.
#
#   bash .ci/newest-torch.sh                 # the newest final release
#   bash .ci/newest-torch.sh newest 2.14.0   # the newest, then 2.14.0 (what vLLM 0.33/0.34 pin)
#   bash .ci/newest-torch.sh 2.15.0          # a given one
#
# The newest: where there is nothing to test - no wheel of it installs here, the extension does
# not build against it, or it builds but does not load (idselect then falls back to the
# reference op with a warning) - the step says so in a line starting "NOT SUPPORTED" and passes:
# a user of that torch gets an error or a warning, not a wrong result (README, "Quick start": the
# torch versions the build supports). A release named on the command line is one we claim to
# support (vLLM's pin, docs/serving.md): there the same cases FAIL. Wrong op results fail always.
#
# One venv for all: the first release is installed with its dependencies (on the registry the
# Linux wheel is the CUDA build: about 5 GB of CUDA libraries, 4 minutes); each later one
# replaces torch alone (`--no-deps`: its own code, headers and libtorch, about 1 GB) and adds
# only the requirements the venv lacks (2.14.0 needs nvidia-curand, which 2.15.0 dropped). It
# keeps the first one's CUDA 13 libraries where both have them (the same sonames, newer minor
# releases; the CPU kernel built here does not call them: its ABI is libtorch's and c10's, which
# are the named release's own). So list the newest first: an older torch loads with newer CUDA
# libraries of its major release. (--no-compile: no .pyc for torch's thousands of files up front.)
#
# The cap: this machine's pip configuration limits torch (/etc/xdg/pip/constraints.txt: the
# releases that lie on its disk). Users get the registry's newest, so this step lifts the cap for
# its own venv only (PIP_CONSTRAINT=/dev/null, which replaces the configured constraint file).
# The extension is built for the CPU only (IDSELECT_CPU_ONLY=1: no nvcc build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_CONSTRAINT=/dev/null
PYTHON=${PYTHON:-python}
OP_TESTS="tests/test_select.py tests/test_cpu_kernel.py tests/test_errors.py tests/test_properties.py"

work=$(mktemp -d "${TMPDIR:-/tmp}/idselect-newest-torch.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
pinned=$(sed -n 's/^torch==//p' requirements.txt)
machine=$("$PYTHON" -c 'import sys, platform; print(f"Python {sys.version.split()[0]}, {platform.machine()}")')
failed=()

env_ready=0  # 1 once a torch with its dependencies is installed in the venv

# install_release VERSION: into the venv; the first with its dependencies and the test tools,
# later ones torch alone plus the requirements it has and the venv lacks (e.g. a CUDA library
# the first one dropped). Called as a condition: a failure returns non-zero.
install_release() {
  if [ "$env_ready" = 0 ]; then
    "$venv_python" -m pip install -q --no-compile "torch==$1" numpy pytest hypothesis setuptools wheel ninja || return 1
  else
    # What a fresh install of this torch would bring, by pip's resolver; those the venv lacks by name
    # are added at that version (e.g. nvidia-curand for 2.14.0: 2.15.0 no longer asks for it).
    "$venv_python" -m pip install -q --dry-run --ignore-installed --report "$work/report.json" "torch==$1" || return 1
    "$venv_python" - "$work/report.json" > "$work/missing.txt" <<'PY' || return 1
import importlib.metadata as md
import json
import sys

for item in json.load(open(sys.argv[1]))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        print(f"{name}=={version}")
PY
    [ ! -s "$work/missing.txt" ] || echo "adding what torch $1 requires and the venv lacks: $(tr '\n' ' ' < "$work/missing.txt")"
    "$venv_python" -m pip install -q --no-compile --no-deps "torch==$1" -r "$work/missing.txt" || return 1
  fi
  "$venv_python" -c "import torch" || return 1
}

# test_release VERSION REQUIRED: install, build, load, op tests. REQUIRED=1: not installing, not
# building or not loading fails. The first release installed comes with its dependencies, later
# ones replace torch alone.
test_release() {
  local VERSION=$1 required=$2 start installed built end status
  local relation="requirements.txt pins $pinned"
  [ "$VERSION" = "$pinned" ] && relation="the release requirements.txt pins (the main run tested it already)"
  echo "=== torch $VERSION ($([ "$required" = 1 ] && echo "named: must build, load and pass" || echo "the newest")), $relation"
  unsupported() {  # a release with nothing to test: passes where it is only the newest
    if [ "$required" = 1 ]; then
      echo "=== torch $VERSION: FAIL ($1)" >&2
      failed+=("$VERSION")
    else
      echo "=== NOT SUPPORTED: $1"
    fi
  }
  start=$(date +%s)
  if ! install_release "$VERSION" > "$work/install.log" 2>&1; then
    tail -15 "$work/install.log"
    unsupported "torch $VERSION does not install on this machine ($machine): nothing to test"
    return 0
  fi
  grep "^adding" "$work/install.log" || true
  installed=$(date +%s)
  env_ready=1

  # This checkout's files (tracked and untracked, not ignored), without its build outputs.
  rm -rf "$work/src" && mkdir "$work/src"
  git ls-files -z --cached --others --exclude-standard | (cd "$ROOT" && xargs -0 cp --parents -t "$work/src")
  find "$work/src" -name "_C*.so" -delete
  if ! (cd "$work/src" && IDSELECT_CPU_ONLY=1 MAX_JOBS=${MAX_JOBS:-2} "$venv_python" setup.py build_ext --inplace \
      > "$work/build.log" 2>&1); then
    grep -E "error|Error" "$work/build.log" | head -20 || true
    tail -20 "$work/build.log"
    unsupported "the extension does not build against torch $VERSION (the log above)"
    return 0
  fi
  built=$(date +%s)

  # The copy first on the path: its idselect, with the extension just built.
  if ! (cd "$work/src" && PYTHONPATH="$work/src" "$venv_python" - "$VERSION" <<'PY'
import os, sys

import torch

import idselect

assert torch.__version__.split("+")[0] == sys.argv[1], (torch.__version__, sys.argv[1])
assert os.path.dirname(os.path.abspath(idselect.__file__)) == os.path.join(os.getcwd(), "idselect"), idselect.__file__
if "cpu" not in idselect.native_backends():
    sys.exit(f"the compiled CPU kernel did not load: {idselect._ops._native_error}")
print(f"op tests against torch {torch.__version__} (torch.version.cuda={torch.version.cuda}; the CPU kernel only), "
      f"idselect from {os.path.dirname(idselect.__file__)}, native backends {idselect.native_backends()}")
PY
  ); then
    unsupported "the extension built against torch $VERSION does not load (the error above)"
    return 0
  fi
  # shellcheck disable=SC2086
  (cd "$work/src" && PYTHONPATH="$work/src" "$venv_python" -m pytest -q -p no:cacheprovider $OP_TESTS 2>&1 | tail -15
   exit "${PIPESTATUS[0]}") && status=0 || status=$?
  end=$(date +%s)
  echo "torch $VERSION: install $((installed - start)) s, build $((built - installed)) s, tests $((end - built)) s"
  if [ "$status" -ne 0 ]; then
    echo "=== torch $VERSION: FAIL (the op tests fail against it)" >&2
    failed+=("$VERSION")
    return 0
  fi
  echo "=== torch $VERSION: PASS (builds, loads, op tests pass)"
}

[ $# -ge 1 ] || set -- newest
for name in "$@"; do
  if [ "$name" = newest ]; then
    VERSION=$("$PYTHON" -m pip index versions torch 2>/dev/null | sed -n 's/^torch (\(.*\))$/\1/p')
    [ -n "$VERSION" ] || { echo "newest torch: the registry did not answer 'pip index versions torch'" >&2; exit 1; }
    verified=$(sed -n 's/^\([0-9][0-9.]*\) .*/\1/p' .ci/torch-newest-verified | head -1)
    if [ "$VERSION" = "$verified" ] && [ "${NEWEST_RUN_VERIFIED:-0}" != 1 ]; then
      # As .ci/newest-transformers.sh does for the pinned release: a newest release already
      # verified (.ci/torch-newest-verified says when) is not installed again (about 7 minutes);
      # NEWEST_RUN_VERIFIED=1 runs it anyway. A new release runs, and is then recorded by hand.
      echo "=== torch $VERSION (the newest): verified before ($(head -1 .ci/torch-newest-verified)); skipped (NEWEST_RUN_VERIFIED=1 runs it)"
      continue
    fi
    test_release "$VERSION" 0
  else
    test_release "$name" 1
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "=== torch: FAIL for ${failed[*]}" >&2
  exit 1
fi
