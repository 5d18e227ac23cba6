"""Pure-PyTorch ID-Selection: the fallback backend and the oracle every kernel is tested against.

Kept deliberately plain: one loop over batch rows, one loop over the k greedy steps, the
rule of docs/algorithm.md written out line by line. Runs on any device torch supports.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import torch

from ._checks import check_select_args

#: Norms below this are raised to it, so a zero feature vector has similarity 0 to everything.
EPS = 1e-12


def effective_length(length: int, k: int, n: int) -> int:
    """Tokens a row uses: its length clamped to [k, N], so k distinct picks always exist."""
    return min(max(length, k), n)


def suppress(scores: torch.Tensor, cos: torch.Tensor, picked_score: torch.Tensor, gamma: float) -> torch.Tensor:
    """One step of the rule after a pick: ``max(0, S_j - w_j * S_i)`` with
    ``w_j = exp(-gamma * (1 - cos_j)^2)``, element-wise in float32, a NaN result counting as 0.
    The one Python statement of the update: the reference, the batched device path, the
    benchmark's eager loop and the hooks' zero-score replay all call it."""
    weight = torch.exp(-gamma * (1.0 - cos) ** 2)
    updated = scores - weight * picked_score
    # `updated > 0` is False for NaN, so NaN (from NaN/Inf features or inf - inf) becomes 0.
    return torch.where(updated > 0, updated, torch.zeros_like(updated))


def greedy_steps(
    features: torch.Tensor, scores: torch.Tensor, k: int, gamma: float
) -> Iterator[Tuple[int, torch.Tensor]]:
    """Run the rule on one row; yield (picked index, float32 scores just before the pick).

    ``features`` [n, D] and ``scores`` [n] hold the row's valid tokens only. The scores are
    yielded so that tests can judge a disagreement with a kernel as a genuine near-tie.
    """
    f = features.float()
    norms = f.norm(dim=1).clamp_min(EPS)
    s = scores.float()
    # Scores enter clamped at 0; a NaN score counts as 0 (documented contract for bad input).
    s = torch.where(s > 0, s, torch.zeros_like(s))
    available = torch.ones_like(s, dtype=torch.bool)
    for _ in range(k):
        candidates = available.nonzero().squeeze(1)  # ascending, so argmax ties -> smallest
        i = int(candidates[s[candidates].argmax()])
        yield i, s
        available[i] = False
        cos = ((f @ f[i]) / (norms * norms[i])).clamp(-1.0, 1.0)
        s = suppress(s, cos, s[i], gamma)


def select(
    features: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    gamma: float = 20.0,
    lengths: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """ID-Selection in eager PyTorch; same contract as ``torch.ops.idselect.select``.

    Parameters
    ----------
    features : Tensor [B, N, D]
        float32, float16 or bfloat16 token features (any strides).
    scores : Tensor [B, N]
        Importance of each token, any floating dtype, expected finite and >= 0.
    k : int
        Tokens to pick per row, 0 <= k <= N.
    gamma : float
        Sharpness of the suppression weight ``exp(-gamma * (1 - cos)^2)``.
    lengths : Tensor [B] int64, optional
        Row b uses tokens ``0 .. lengths[b]-1`` (clamped to [k, N]).

    Returns
    -------
    Tensor [B, k] int64
        Picked indices per row, in selection order.
    """
    check_select_args(features, scores, k, gamma, lengths)
    B, N, _ = features.shape
    out = torch.empty(B, k, dtype=torch.int64, device=features.device)
    row_lengths = [N] * B if lengths is None else lengths.tolist()
    for b in range(B):
        n = effective_length(row_lengths[b], k, N)
        picks = [i for i, _ in greedy_steps(features[b, :n], scores[b, :n], k, gamma)]
        out[b] = torch.tensor(picks, dtype=torch.int64)
    return out
