"""CUDA-only properties of the fused kernel (the shared tests in test_select.py, test_errors.py
and test_properties.py also run on CUDA when it is present)."""
import pytest
import torch

import idselect
from selection_checks import assert_matches_reference
from test_select import clustered_features

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_native_cuda_kernel_is_loaded():
    assert "cuda" in idselect.native_backends()


def test_cuda_graph_capture_and_replay():
    g = torch.Generator().manual_seed(0)
    feats = clustered_features(4, 700, 256, 6, g).cuda().bfloat16()
    scores = torch.rand(4, 700, generator=g).cuda()
    lengths = torch.tensor([700, 500, 64, 699], device="cuda")
    torch.ops.idselect.select(feats, scores, 64, 20.0, lengths)  # warm up outside capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = torch.ops.idselect.select(feats, scores, 64, 20.0, lengths)
    for seed in range(3):
        g2 = torch.Generator().manual_seed(seed + 1)
        new_feats = clustered_features(4, 700, 256, 6, g2).bfloat16()
        new_scores = torch.rand(4, 700, generator=g2)
        feats.copy_(new_feats)
        scores.copy_(new_scores)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, torch.ops.idselect.select(feats, scores, 64, 20.0, lengths))
        assert_matches_reference(static_out, new_feats, new_scores, 64, 20.0, lengths.cpu())


def test_deterministic_across_runs_and_batch_sizes():
    g = torch.Generator().manual_seed(5)
    feats = clustered_features(1, 2880, 1024, 30, g).cuda().bfloat16()
    scores = torch.rand(1, 2880, generator=g).cuda()
    first = torch.ops.idselect.select(feats, scores, 288)
    for _ in range(5):
        assert torch.equal(torch.ops.idselect.select(feats, scores, 288), first)
    # The same row inside a large batch runs with a different cluster size.
    batch = torch.ops.idselect.select(feats.expand(300, -1, -1), scores.expand(300, -1), 288)
    assert torch.equal(batch, first.expand(300, -1))


def test_thousands_of_rows():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(3000, 50, 24, generator=g)
    scores = torch.rand(3000, 50, generator=g)
    got = torch.ops.idselect.select(feats.cuda(), scores.cuda(), 10).cpu()
    rows = torch.randint(0, 3000, (40,), generator=g)
    assert_matches_reference(got[rows], feats[rows], scores[rows], 10, 20.0)


def test_more_tokens_than_shared_memory_and_odd_widths():
    g = torch.Generator().manual_seed(3)
    for N, D, dtype in [(60000, 8, torch.float32), (5000, 3, torch.float16), (4608, 3584, torch.bfloat16)]:
        feats = clustered_features(1, N, D, 50, g).to(dtype)
        scores = torch.rand(1, N, generator=g)
        got = torch.ops.idselect.select(feats.cuda(), scores.cuda(), 100)
        assert_matches_reference(got, feats, scores, 100, 20.0)
