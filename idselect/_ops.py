"""Owns the ``idselect::select`` schema, its fake kernel, and the choice of backends.

The schema is defined here, in Python, and nowhere else: the compiled library only adds
kernels with TORCH_LIBRARY_IMPL. (A .so that also defined it would abort the process.)

Routing (docs/algorithm.md, "Backends and routing"):

- CPU: the compiled CPU kernel (verified), else the reference.
- CUDA: the compiled CUDA kernel (verified on an H100: bench/results/gpu_session_fb7bc26),
  else the batched tensor-op path (``idselect.device_path``). ``IDSELECT_CUDA_KERNEL=0``, set
  before the library loads (i.e. before ``import idselect``), keeps the kernel unregistered.
- Any other device: the pure-PyTorch reference.
"""
from __future__ import annotations

import os
import warnings
from typing import Mapping, Optional, Tuple

import torch

from . import device_path, reference
from ._checks import check_select_args

SCHEMA = "select(Tensor features, Tensor scores, int k, float gamma=20.0, Tensor? lengths=None) -> Tensor"
#: A test hook, CUDA only (registered with the compiled CUDA kernel): the Gram path's norms
#: [B, N] and weights [B, N, N] for features [B, N, D], as select computes them (honouring
#: IDSELECT_CUDA_TUNED), so tests can compare the kernels' variants bit for bit.
GRAM_WEIGHTS_SCHEMA = "_gram_weights(Tensor features, float gamma) -> (Tensor, Tensor)"

#: "0" before ``import idselect`` keeps the compiled CUDA kernel unregistered, so that CUDA
#: tensors take the batched tensor-op path; unset or "1" registers it (read by
#: csrc/cuda/select_cuda_glue.cpp when the library loads).
CUDA_KERNEL_ENV = "IDSELECT_CUDA_KERNEL"


def cuda_kernel_disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` turns the compiled CUDA kernel off (``IDSELECT_CUDA_KERNEL=0``; the
    same rule as the C++ glue). Any value but unset, "", "0" or "1" raises ``ValueError``."""
    value = environ.get(CUDA_KERNEL_ENV, "")
    if value not in ("", "0", "1"):
        raise ValueError(
            f"idselect: {CUDA_KERNEL_ENV} must be 0 (CUDA tensors take the batched tensor-op "
            f"path) or 1 / unset (the compiled CUDA kernel, the default), got {value!r}"
        )
    return value == "0"


cuda_kernel_disabled()  # a bad value fails here, before the schema is defined or the library loads

_lib = torch.library.Library("idselect", "DEF")
_lib.define(SCHEMA)
_lib.define(GRAM_WEIGHTS_SCHEMA)

_native_error: Optional[str] = None
try:
    from . import _C  # noqa: F401  (registers the CPU / CUDA kernels on import)
except ImportError as exc:  # not built, or built against another torch
    _native_error = f"{type(exc).__name__}: {exc}"


def _has_kernel(dispatch_key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key("idselect::select", dispatch_key)


_NATIVE_BACKENDS: Tuple[str, ...] = tuple(
    device for device, key in (("cpu", "CPU"), ("cuda", "CUDA")) if _has_kernel(key)
)


def native_backends() -> Tuple[str, ...]:
    """Device types whose compiled kernel is loaded, e.g. ``("cpu",)`` or ``("cpu", "cuda")``."""
    return _NATIVE_BACKENDS


def choose_backend(device_type: str, native: Tuple[str, ...]) -> str:
    """Which implementation serves ``device_type`` given the loaded compiled kernels.

    Returns ``"native"`` (a compiled kernel), ``"device_path"`` (batched tensor ops on the
    device: CUDA without the compiled CUDA kernel) or ``"reference"``.
    """
    if device_type in native:
        return "native"
    if device_type == "cuda":
        return "device_path"
    return "reference"


def backend_for(device_type: str) -> str:
    """The implementation ``torch.ops.idselect.select`` uses for tensors on ``device_type``
    in this process: ``"native"``, ``"device_path"`` or ``"reference"``."""
    return choose_backend(device_type, _NATIVE_BACKENDS)


_warned_devices: set = set()


def _reference_kernel(features, scores, k, gamma=20.0, lengths=None):
    device_type = features.device.type
    if device_type not in _warned_devices:
        _warned_devices.add(device_type)
        reason = f" ({_native_error})" if _native_error else ""
        warnings.warn(
            f"idselect: no native kernel for device type '{device_type}'{reason}; "
            "torch.ops.idselect.select falls back to the pure-PyTorch reference, which is "
            "much slower. Reinstall with `pip install --no-build-isolation .` to build it.",
            RuntimeWarning,
            stacklevel=2,
        )
    return reference.select(features, scores, k, gamma, lengths)


# CompositeExplicitAutograd covers every device type without a kernel of its own; the
# compiled CPU / CUDA kernels, where loaded, take precedence over it.
_lib.impl("select", _reference_kernel, "CompositeExplicitAutograd")

if choose_backend("cuda", _NATIVE_BACKENDS) == "device_path":
    # No compiled CUDA kernel registered (turned off, or not built): CUDA tensors take the
    # batched tensor-op path, which is correct by construction and never syncs the host.
    _lib.impl("select", device_path.select, "CUDA")
    if os.environ.get(CUDA_KERNEL_ENV) == "1" and _native_error is None:
        warnings.warn(
            f"idselect: {CUDA_KERNEL_ENV}=1 but this build of idselect has no CUDA kernel; "
            "CUDA tensors use the batched tensor-op path (idselect.device_path)",
            RuntimeWarning,
            stacklevel=2,
        )


@torch.library.register_fake("idselect::select")
def _select_fake(features, scores, k, gamma=20.0, lengths=None):
    check_select_args(features, scores, k, gamma, lengths)
    return features.new_empty((features.shape[0], k), dtype=torch.int64)
