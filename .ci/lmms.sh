#!/usr/bin/env bash
# The lmms-eval plugin's tests (tests/test_lmms_*.py) in a fresh virtual environment of their
# own, installed the way a user installs the extra: their torch first, then
# `pip install -e ".[lmms]"` from the clone, resolved from scratch - so a resolver change (a new filelock,
# transformers, ...) shows up here, not in a user's run. lmms-eval never enters the core install.
# Fails on any failure.
#
# The CPU torch wheel needs care: lmms-eval would pull the newest (CUDA) torch and a
# torchvision that does not load with the CPU wheel ("operator torchvision::nms does not
# exist") and breaks transformers' AutoProcessor. So torch is pinned to the version the README's
# install put in place (the same build: the editable install below rebuilds idselect/_C*.so in
# place against it), and torchvision is removed afterwards (transformers then uses its PIL image
# processors). decord is installed for lmms-eval's llava_hf module.
source "$(dirname "$0")/user-venv.sh"  # $work, $venv_python, $torch_version; cd to the repository
echo "torch==${torch_version}" > "$work/constraints.txt"
"$venv_python" -m pip install -q --no-build-isolation -c "$work/constraints.txt" -e ".[lmms]" decord
"$venv_python" -m pip uninstall -q -y torchvision || true
"$venv_python" - <<'EOF'
import os, importlib.metadata, idselect, torch
here = os.path.abspath("idselect")
assert os.path.dirname(os.path.abspath(idselect.__file__)) == here, f"idselect from {idselect.__file__}, not {here}"
import filelock, transformers
print(f"lmms-eval {importlib.metadata.version('lmms-eval')}, filelock {filelock.__version__}, "
      f"transformers {transformers.__version__}, torch {torch.__version__}, idselect {idselect.__file__}")
EOF
"$venv_python" -m pytest -q tests/test_lmms_options.py tests/test_lmms_plugin.py
