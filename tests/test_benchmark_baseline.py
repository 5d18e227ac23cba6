"""The benchmark's eager-loop baseline (idselect.tools.benchmark.eager_loop) applies the selection
rule as the reference does, NaN rule included, so that its timings compare like with like; and
the benchmark's environment switches do not outlive the timing."""
import math
import os

import pytest
import torch

from idselect.tools import benchmark
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


def test_benchmark_env_switches_are_scoped(monkeypatch):
    monkeypatch.delenv("IDSELECT_CPU_ISA", raising=False)
    monkeypatch.setenv("IDSELECT_CPU_LOOKAHEAD", "2")
    before = dict(os.environ)
    rows = benchmark.run([benchmark.Case(1, 32, 16, 4)], ["native", "native_baseline"], repeats=2, lookaheads=(None, 1))
    assert {r["backend"] for r in rows} == {"native", "native_lookahead1", "native_baseline"}
    assert dict(os.environ) == before
    with pytest.raises(RuntimeError), benchmark.scoped_env({"IDSELECT_CPU_ISA": "v3", "IDSELECT_CPU_LOOKAHEAD": "4"}):
        assert os.environ["IDSELECT_CPU_ISA"] == "v3"
        raise RuntimeError
    assert dict(os.environ) == before
