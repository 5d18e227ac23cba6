"""The benchmark's eager-loop baseline (idselect.tools.benchmark.eager_loop) applies the selection
rule as the reference does, NaN rule included, so that its timings compare like with like."""
import math

import torch

from idselect.tools.benchmark import eager_loop
from selection_checks import assert_matches_reference
from test_select import clustered_features


def test_eager_loop_matches_the_reference():
    g = torch.Generator().manual_seed(3)
    for B, N, D, k in [(1, 50, 16, 10), (3, 120, 32, 40), (2, 64, 8, 64)]:
        feats = clustered_features(B, N, D, 6, g, spread=0.3)
        scores = torch.rand(B, N, generator=g)
        assert_matches_reference(eager_loop(feats, scores, k, 20.0), feats, scores, k, 20.0, None)


def test_eager_loop_nan_rule():
    """A token with a NaN feature gets NaN similarities; the rule turns its score to 0 once a
    pick suppresses it (clamp_min would have kept NaN, which argmax then prefers)."""
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(1, 30, 8, generator=g)
    feats[0, 5, 2] = math.nan
    scores = torch.rand(1, 30, generator=g)
    assert_matches_reference(eager_loop(feats, scores, 12, 20.0), feats, scores, 12, 20.0, None)
