"""Hostile values never crash the op and never yield bad indices (hypothesis)."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from idselect import reference

SPECIAL = [math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 1e30, 1e-30]


@st.composite
def hostile_case(draw):
    B = draw(st.integers(1, 3))
    N = draw(st.integers(1, 40))
    D = draw(st.integers(1, 40))
    k = draw(st.integers(0, N))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, N, D, generator=g)
    scores = torch.rand(B, N, generator=g)
    for _ in range(draw(st.integers(0, 6))):
        b, i = draw(st.integers(0, B - 1)), draw(st.integers(0, N - 1))
        what = draw(st.sampled_from(["score", "feature", "zero_vector"]))
        value = draw(st.sampled_from(SPECIAL))
        if what == "score":
            scores[b, i] = value
        elif what == "feature":
            feats[b, i, draw(st.integers(0, D - 1))] = value
        else:
            feats[b, i] = 0.0
    lengths = None
    if draw(st.booleans()):  # unvalidated lengths, also out of range, through the raw op
        lengths = torch.tensor([draw(st.integers(-5, N + 5)) for _ in range(B)])
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    gamma = draw(st.sampled_from([0.0, 1.0, 20.0, 1e6]))
    return feats.to(dtype), scores, k, gamma, lengths


@settings(max_examples=150, deadline=None)
@given(hostile_case())
def test_hostile_values_give_k_distinct_valid_indices(case):
    feats, scores, k, gamma, lengths = case
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    B, N, _ = feats.shape
    for device in devices:
        to = lambda t: None if t is None else t.to(device)
        out = torch.ops.idselect.select(to(feats), to(scores), k, gamma, to(lengths)).cpu()
        assert out.shape == (B, k)
        for b in range(B):
            n = N if lengths is None else reference.effective_length(int(lengths[b]), k, N)
            row = out[b].tolist()
            assert len(set(row)) == k and all(0 <= i < n for i in row)
