"""Metadata checks of ``idselect::select``, shared by the fake kernel and the reference.

The C++ kernels run the same checks (csrc/select_checks.h) with the same messages, so
``torch.ops.idselect.select`` raises the same errors whichever backend serves it.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

OP_NAME = "idselect.select"


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_select_args(
    features: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    gamma: float,
    lengths: Optional[torch.Tensor],
) -> None:
    """Raise ValueError / TypeError for inputs whose metadata break the op contract."""
    if features.dim() != 3:
        raise ValueError(
            f"{OP_NAME}: features must be a 3-D tensor [B, N, D], got a {features.dim()}-D "
            f"tensor of shape {_shape(features)}"
        )
    if scores.dim() != 2:
        raise ValueError(
            f"{OP_NAME}: scores must be a 2-D tensor [B, N], got a {scores.dim()}-D tensor "
            f"of shape {_shape(scores)}"
        )
    if features.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(
            f"{OP_NAME}: features must be float32, float16 or bfloat16, got {features.dtype}"
        )
    if not scores.dtype.is_floating_point:
        raise TypeError(f"{OP_NAME}: scores must be a floating tensor, got {scores.dtype}")
    if scores.device != features.device:
        raise ValueError(
            f"{OP_NAME}: scores must be on the same device as features ({features.device}), "
            f"got {scores.device}"
        )
    B, N = features.shape[0], features.shape[1]
    if scores.shape[0] != B or scores.shape[1] != N:
        raise ValueError(
            f"{OP_NAME}: scores must have shape [B, N] = [{B}, {N}] to match features "
            f"{_shape(features)}, got {_shape(scores)}"
        )
    if k < 0 or k > N:
        raise ValueError(f"{OP_NAME}: k must be in [0, N] = [0, {N}], got k={k}")
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"{OP_NAME}: gamma must be finite and >= 0, got gamma={gamma}")
    if lengths is not None:
        if lengths.device != features.device:
            raise ValueError(
                f"{OP_NAME}: lengths must be on the same device as features "
                f"({features.device}), got {lengths.device}"
            )
        if lengths.dtype != torch.int64:
            raise ValueError(f"{OP_NAME}: lengths must be int64, got {lengths.dtype}")
        if lengths.dim() != 1 or lengths.shape[0] != B:
            raise ValueError(
                f"{OP_NAME}: lengths must have shape [B] = [{B}], got {_shape(lengths)}"
            )
