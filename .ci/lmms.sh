#!/usr/bin/env bash
# The lmms-eval plugin's tests (tests/test_lmms_*.py) in a virtual environment of their own, so
# lmms-eval never enters the core install. Run from anywhere after the README's install (the
# venv sees that Python's packages: torch, transformers). Fails on any failure.
#
# The CPU torch wheel needs care: lmms-eval would pull the newest (CUDA) torch and a
# torchvision that does not load with the CPU wheel ("operator torchvision::nms does not
# exist") and breaks transformers' AutoProcessor. So torch is pinned to the version already
# installed, and torchvision is removed afterwards (transformers then uses its PIL image
# processors). decord is installed for lmms-eval's llava_hf module.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

PYTHON=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv --system-site-packages "$work/venv"
venv_python="$work/venv/bin/python"

torch_version=$("$venv_python" -c "import torch; print(torch.__version__)")
echo "torch==${torch_version}" > "$work/constraints.txt"
"$venv_python" -m pip install -q --no-build-isolation -c "$work/constraints.txt" -e ".[lmms]" decord
"$venv_python" -m pip uninstall -q -y torchvision || true
"$venv_python" - <<'EOF'
import os, importlib.metadata, idselect, torch
here = os.path.abspath("idselect")
assert os.path.dirname(os.path.abspath(idselect.__file__)) == here, f"idselect from {idselect.__file__}, not {here}"
print(f"lmms-eval {importlib.metadata.version('lmms-eval')}, torch {torch.__version__}, idselect {idselect.__file__}")
EOF
"$venv_python" -m pytest -q tests/test_lmms_options.py tests/test_lmms_plugin.py
