"""Owns the ``idselect::select`` schema, its fake kernel, and the choice of backends.

The schema is defined here, in Python, and nowhere else: the compiled library only adds
kernels with TORCH_LIBRARY_IMPL. (A .so that also defined it would abort the process.)
Devices without a compiled kernel are served by the pure-PyTorch reference.
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch

from . import reference
from ._checks import check_select_args

SCHEMA = "select(Tensor features, Tensor scores, int k, float gamma=20.0, Tensor? lengths=None) -> Tensor"

_lib = torch.library.Library("idselect", "DEF")
_lib.define(SCHEMA)

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


@torch.library.register_fake("idselect::select")
def _select_fake(features, scores, k, gamma=20.0, lengths=None):
    check_select_args(features, scores, k, gamma, lengths)
    return features.new_empty((features.shape[0], k), dtype=torch.int64)
