# Sourced by .ci/lmms.sh and .ci/vllm.sh: a fresh virtual environment in a temporary folder
# (removed on exit) with exactly the torch the README's install put in place (2.13.0+cpu here),
# as a user with that torch would start. Sets: work, venv_python, torch_version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
torch_version=$("$PYTHON" -c "import torch; print(torch.__version__)")
"$PYTHON" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
"$venv_python" -m pip install -q "torch==${torch_version}" setuptools wheel pytest
