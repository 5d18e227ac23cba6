"""Comparison of a kernel's picks with the reference, with torchvision-style near-tie rule."""
from typing import Optional

import torch

from idselect import reference

# Two candidates whose current scores differ by less than this are a genuine near-tie: float32
# rounding in a different summation order may legitimately order them either way.
NEAR_TIE_ATOL = 1e-4
NEAR_TIE_RTOL = 1e-4


def assert_matches_reference(
    got: torch.Tensor,
    features: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    gamma: float,
    lengths: Optional[torch.Tensor] = None,
) -> None:
    """Each row must equal the reference, up to the first step where the two picks are a
    near-tie; after that the sequences may diverge."""
    B, N, _ = features.shape
    assert got.shape == (B, k) and got.dtype == torch.int64
    got = got.cpu()
    features, scores = features.cpu(), scores.cpu()
    row_lengths = [N] * B if lengths is None else lengths.cpu().tolist()
    for b in range(B):
        n = reference.effective_length(row_lengths[b], k, N)
        row = got[b].tolist()
        assert len(set(row)) == k and all(0 <= i < n for i in row), (b, row, n)
        steps = reference.greedy_steps(features[b, :n], scores[b, :n], k, gamma)
        for t, (want, current) in enumerate(steps):
            if row[t] == want:
                continue
            a, c = current[want].item(), current[row[t]].item()
            tol = NEAR_TIE_ATOL + NEAR_TIE_RTOL * max(abs(a), abs(c))
            assert row[t] not in row[:t] and abs(a - c) <= tol, (
                f"row {b} step {t}: kernel picked {row[t]} (score {c}), reference picked "
                f"{want} (score {a}); not a near-tie within {tol}"
            )
            break
