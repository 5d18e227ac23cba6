#!/usr/bin/env bash
# The hooks tests on another transformers release, in a virtual environment of their own:
#
#   bash .ci/hooks-on-transformers.sh 5.17.0     # CI: 5.17.0, 5.18.0, 5.20.1 (pinned dependencies)
#   bash .ci/hooks-on-transformers.sh 5.25.0     # any release: that transformers, newest dependencies
#
# Releases 5.17.0 - 5.23.x get the pinned dependencies of .ci/requirements-older-transformers.txt.
# Run after the README's install: the extension built there (idselect/_C*.so, in place) is used
# from this checkout, so the venv needs the same Python and torch. Fails on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
VERSION=${1:?usage: $0 TRANSFORMERS_VERSION}
PYTHON=${PYTHON:-python}
HOOKS_TESTS="tests/test_hooks.py tests/test_hooks_llava_onevision.py tests/test_hooks_qwen3_vl.py
  tests/test_hooks_qwen_internvl.py tests/test_hooks_robustness.py tests/test_generation_patterns.py
  tests/test_transformers_versions.py tests/test_tiny_models.py tests/test_importance.py
  tests/test_engine.py tests/test_family_contract.py tests/test_hooks_feature_outputs.py
  tests/test_hooks_assisted.py tests/test_hot_path.py"

ls idselect/_C*.so > /dev/null 2>&1 || { echo "idselect/_C*.so not built: run the README's install first" >&2; exit 1; }
torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
"$PYTHON" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
minor=$(echo "$VERSION" | cut -d. -f2)
if [ "$(echo "$VERSION" | cut -d. -f1)" = 5 ] && [ "$minor" -ge 17 ] && [ "$minor" -le 23 ]; then
  "$venv_python" -m pip install -q -r .ci/requirements-older-transformers.txt "transformers==$VERSION"
else
  "$venv_python" -m pip install -q "torch==$torch_version" "transformers==$VERSION" numpy pytest hypothesis matplotlib tqdm
fi
installed=$(date +%s)
PYTHONPATH="$(pwd)" "$venv_python" - "$VERSION" <<'PY'
import os, sys, idselect, transformers
assert transformers.__version__ == sys.argv[1], (transformers.__version__, sys.argv[1])
assert os.path.dirname(os.path.abspath(idselect.__file__)) == os.path.abspath("idselect"), idselect.__file__
assert "cpu" in idselect.native_backends(), "the compiled CPU kernel did not load in this venv"
print(f"hooks tests on transformers {transformers.__version__}")
PY
# shellcheck disable=SC2086
PYTHONPATH="$(pwd)" "$venv_python" -m pytest -q -p no:cacheprovider $HOOKS_TESTS
echo "transformers $VERSION: install $((installed - start)) s, tests $(($(date +%s) - installed)) s"
