#!/usr/bin/env bash
# The hooks tests on another transformers release, in a virtual environment of their own:
#
#   bash .ci/hooks-on-transformers.sh 5.17.0     # the lowest supported release (CI), pinned set
#   bash .ci/hooks-on-transformers.sh 5.21.1     # any other release: that transformers, newest deps
#
# Run after the README's install: the extension built there (idselect/_C*.so, in place) is used
# from this checkout, so the venv needs the same Python and torch. Fails on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
VERSION=${1:?usage: $0 TRANSFORMERS_VERSION}
PYTHON=${PYTHON:-python}
HOOKS_TESTS="tests/test_hooks.py tests/test_hooks_llava_onevision.py tests/test_hooks_qwen3_vl.py
  tests/test_hooks_qwen_internvl.py tests/test_hooks_robustness.py tests/test_generation_patterns.py
  tests/test_transformers_versions.py tests/test_tiny_models.py tests/test_importance.py"

ls idselect/_C*.so > /dev/null || { echo "idselect/_C*.so not built: run the README's install first"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
"$PYTHON" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
pinned=".ci/requirements-transformers-${VERSION%.*}.txt"
if [ -f "$pinned" ] && grep -qx "transformers==$VERSION" "$pinned"; then
  "$venv_python" -m pip install -q -r "$pinned"
else
  "$venv_python" -m pip install -q torch=="$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])')" \
    "transformers==$VERSION" numpy pytest hypothesis matplotlib tqdm
fi
installed=$(date +%s)
PYTHONPATH="$(pwd)" "$venv_python" - "$VERSION" <<'PY'
import os, sys, idselect, transformers
assert transformers.__version__ == sys.argv[1], (transformers.__version__, sys.argv[1])
assert os.path.dirname(os.path.abspath(idselect.__file__)) == os.path.abspath("idselect"), idselect.__file__
print(f"hooks tests on transformers {transformers.__version__}")
PY
# shellcheck disable=SC2086
PYTHONPATH="$(pwd)" "$venv_python" -m pytest -q -p no:cacheprovider $HOOKS_TESTS
echo "transformers $VERSION: install $((installed - start)) s, tests $(($(date +%s) - installed)) s"
