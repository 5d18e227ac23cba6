"""The user-facing ``idselect.select``: batching convenience and value validation."""
from __future__ import annotations

from typing import Optional

import torch

from . import _ops  # noqa: F401  (defines torch.ops.idselect.select)
from ._checks import OP_NAME


def _validate_values(scores: torch.Tensor, k: int, lengths: Optional[torch.Tensor]) -> None:
    # One host sync for all checks (it matters on a GPU).
    bad_scores = ~(torch.isfinite(scores) & (scores >= 0))
    checks = [bad_scores.any()]
    if lengths is not None:
        checks.append(((lengths < k) | (lengths > scores.shape[1])).any())
    flags = torch.stack(checks).tolist()
    if flags[0]:
        index = tuple(bad_scores.nonzero()[0].tolist())
        raise ValueError(
            f"{OP_NAME}: scores must be finite and >= 0, got scores{list(index)} = "
            f"{scores[index].item()} (pass validate=False to skip this check)"
        )
    if len(flags) > 1 and flags[1]:
        bad = ((lengths < k) | (lengths > scores.shape[1])).nonzero()[0].item()
        raise ValueError(
            f"{OP_NAME}: lengths must be in [k, N] = [{k}, {scores.shape[1]}], got "
            f"lengths[{bad}] = {lengths[bad].item()}"
        )


def select(
    features: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    gamma: float = 20.0,
    lengths: Optional[torch.Tensor] = None,
    validate: bool = True,
) -> torch.Tensor:
    """Pick ``k`` tokens per row by ID-Selection (importance with similarity suppression).

    Repeats k times: take the highest-scoring token not yet picked (ties go to the smallest
    index), then lower every score ``S_j`` to ``max(0, S_j - w_ij * S_i)`` with
    ``w_ij = exp(-gamma * (1 - cos(f_i, f_j))^2)``. All arithmetic is float32.

    Parameters
    ----------
    features : Tensor [B, N, D] or [N, D]
        Token features, float32 / float16 / bfloat16, any strides.
    scores : Tensor [B, N] or [N]
        Importance of each token, any floating dtype; must be finite and >= 0.
    k : int
        Tokens to keep per row, ``0 <= k <= N``.
    gamma : float, default 20.0
        Suppression sharpness (the paper's best value is 20); finite and >= 0.
    lengths : Tensor [B] int64, optional
        Row b uses only tokens ``0 .. lengths[b]-1``; each must be in ``[k, N]``.
        Batched input only.
    validate : bool, default True
        Check score and length values (costs one host synchronisation on a GPU).
        With False, bad values never crash the op: see docs/algorithm.md.

    Returns
    -------
    Tensor [B, k] (or [k] for unbatched input), int64
        Picked indices in selection order.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{OP_NAME}: k must be an int, got {type(k).__name__} {k!r}")
    unbatched = features.dim() == 2
    if unbatched:
        if scores.dim() != 1:
            raise ValueError(
                f"{OP_NAME}: unbatched features [N, D] need scores [N], got a "
                f"{scores.dim()}-D scores tensor of shape {list(scores.shape)}"
            )
        if lengths is not None:
            raise ValueError(f"{OP_NAME}: lengths needs batched input [B, N, D], got features {list(features.shape)}")
        features, scores = features.unsqueeze(0), scores.unsqueeze(0)
    if validate and scores.dim() == 2 and scores.dtype.is_floating_point and scores.numel():
        if lengths is None or (lengths.dtype == torch.int64 and lengths.device == scores.device):
            _validate_values(scores, k, lengths)
    out = torch.ops.idselect.select(features, scores, k, gamma, lengths)
    return out[0] if unbatched else out
