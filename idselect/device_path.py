"""The selection rule as batched tensor ops: the default CUDA path until a GPU run verifies
the compiled CUDA kernel (docs/algorithm.md, "CUDA routing").

All rows advance together: per step one masked argmax over [B, N], one gather of the picked
rows, one batched matrix-vector product and a few element-wise ops, all on the tensors'
device. Nothing reads a value back to the host, so the k steps queue without a
synchronisation and the whole call can be captured in a CUDA graph. The arithmetic follows
``idselect.reference.greedy_steps`` operation for operation (same float32 expressions in the
same order), so the only rounding difference from the reference is the summation order of
the dot products inside the matrix product.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import reference
from ._checks import check_select_args


def _matmul_is_exact_fp32(device: torch.device) -> bool:
    """False when torch may run float32 matrix products in TF32 or bf16 on this device:
    inputs rounded to 10 mantissa bits would move cosines far past the near-tie tolerance."""
    if device.type != "cuda":
        return torch.get_float32_matmul_precision() == "highest"
    return torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32


def select(
    features: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    gamma: float = 20.0,
    lengths: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """ID-Selection for all rows at once with tensor ops on the inputs' device.

    Same contract as ``torch.ops.idselect.select``; no host synchronisation per step.

    Parameters
    ----------
    features : Tensor [B, N, D]
        float32, float16 or bfloat16 token features (any strides).
    scores : Tensor [B, N]
        Importance of each token, any floating dtype.
    k : int
        Tokens to pick per row, 0 <= k <= N.
    gamma : float
        Sharpness of the suppression weight ``exp(-gamma * (1 - cos)^2)``.
    lengths : Tensor [B] int64, optional
        Row b uses tokens ``0 .. lengths[b]-1``, clamped to [k, N] on the device.

    Returns
    -------
    Tensor [B, k] int64
        Picked indices per row, in selection order.
    """
    check_select_args(features, scores, k, gamma, lengths)
    B, N, D = features.shape
    device = features.device
    out = torch.empty(B, k, dtype=torch.int64, device=device)
    if B == 0 or k == 0:
        return out

    f = features.float()
    norms = f.norm(dim=2).clamp_min(reference.EPS)  # [B, N]
    s = scores.float()
    s = torch.where(s > 0, s, torch.zeros_like(s))  # NaN and negative scores count as 0
    positions = torch.arange(N, device=device)
    if lengths is None:
        available = torch.ones(B, N, dtype=torch.bool, device=device)
    else:
        n = lengths.clamp(min=k, max=N)  # effective_length, on the device
        available = positions.unsqueeze(0) < n.unsqueeze(1)
    exact_matmul = _matmul_is_exact_fp32(device)

    for t in range(k):
        # torch.argmax returns the first maximal index: ties go to the smallest index.
        # -1 is below every available score (they are >= 0); a Python scalar needs no copy.
        pick = torch.where(available, s, -1.0).argmax(dim=1)  # [B]
        out[:, t] = pick
        available.scatter_(1, pick.unsqueeze(1), False)
        pick_score = s.gather(1, pick.unsqueeze(1))  # [B, 1]
        pick_norm = norms.gather(1, pick.unsqueeze(1))  # [B, 1]
        query = f.gather(1, pick.view(B, 1, 1).expand(B, 1, D))  # [B, 1, D]
        if exact_matmul:
            dots = torch.bmm(f, query.transpose(1, 2)).squeeze(2)  # [B, N]
        else:
            dots = (f * query).sum(dim=2)  # element-wise: immune to TF32 matmul settings
        cos = (dots / (norms * pick_norm)).clamp(-1.0, 1.0)
        s = reference.suppress(s, cos, pick_score, gamma)
    return out
