"""idselect::select: every backend against the pure-PyTorch reference, edge cases, contract."""
import math
import random

import pytest
import torch

import idselect
from idselect import reference
from selection_checks import assert_matches_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def clustered_features(B, N, D, clusters, generator, spread=0.05):
    """Tokens near a few centres: the case where suppression (diversity) changes the picks."""
    centres = torch.randn(B, clusters, D, generator=generator)
    member = torch.randint(0, clusters, (B, N), generator=generator)
    picked = torch.gather(centres, 1, member[..., None].expand(B, N, D))
    return picked + spread * torch.randn(B, N, D, generator=generator)


def random_case(seed):
    """Shapes and options drawn to cover odd sizes, ragged rows, views and every dtype."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    B = rng.randint(1, 8)
    N = rng.choice([1, 2, 3, 7, 31, 64, 127, 576, 1000, rng.randint(1, 700)])
    D = rng.choice([1, 2, 3, 15, 16, 17, 31, 33, 64, 100, 255, 1024, 4096])
    if N * D * B > 4_000_000:  # keeps the reference quick on 2 cores
        B = 1
    k = rng.choice([0, 1, N, rng.randint(0, N), min(N, 64)])
    gamma = rng.choice([0.0, 1.0, 20.0, 100.0])
    dtype = rng.choice(DTYPES)
    if rng.random() < 0.5:
        feats = clustered_features(B, N, D, rng.randint(1, 8), g)
    else:
        feats = torch.randn(B, N, D, generator=g)
    if rng.random() < 0.3:  # non-contiguous: a strided view of a wider tensor
        wide = torch.randn(B, N, 2 * D, generator=g)
        wide[..., ::2] = feats
        feats = wide[..., ::2]
    feats = feats.to(dtype) if feats.is_contiguous() else feats.contiguous().to(dtype)[..., :]
    if rng.random() < 0.3:
        feats = feats.transpose(0, 1).contiguous().transpose(0, 1)  # token-major layout
    scores = torch.rand(B, N, generator=g, dtype=rng.choice([torch.float32, torch.float64]))
    lengths = None
    if rng.random() < 0.4:
        lengths = torch.tensor([rng.randint(k, N) for _ in range(B)], dtype=torch.int64)
    return feats, scores, k, gamma, lengths


@pytest.mark.parametrize("seed", range(60))
def test_matches_reference_random_shapes(seed, device):
    feats, scores, k, gamma, lengths = random_case(seed)
    to = lambda t: None if t is None else t.to(device)
    got = torch.ops.idselect.select(to(feats), to(scores), k, gamma, to(lengths))
    assert got.device.type == device
    assert_matches_reference(got, feats, scores, k, gamma, lengths)


@pytest.mark.parametrize("N,D,k", [(3000, 64, 3000), (2880, 1024, 288), (576, 4096, 64)])
def test_matches_reference_large(N, D, k, device):
    g = torch.Generator().manual_seed(N + D)
    feats = clustered_features(1, N, D, 40, g, spread=0.3)
    scores = torch.rand(1, N, generator=g)
    got = torch.ops.idselect.select(feats.to(device), scores.to(device), k, 20.0)
    assert_matches_reference(got, feats, scores, k, 20.0)


def test_native_cpu_kernel_is_loaded():
    # CI builds the extension; a silent fallback to the reference must fail here.
    assert "cpu" in idselect.native_backends()


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_zero_scores_pick_in_index_order(dtype, device):
    feats = torch.randn(2, 10, 8, dtype=dtype, device=device)
    got = torch.ops.idselect.select(feats, torch.zeros(2, 10, device=device), 6)
    assert got.tolist() == [list(range(6))] * 2


def test_duplicate_token_is_suppressed(device):
    feats = torch.randn(1, 6, 16)
    feats[0, 3] = feats[0, 0] * 2.0  # same direction: cosine 1, weight 1
    scores = torch.tensor([[1.0, 0.2, 0.1, 0.9, 0.3, 0.05]])
    got = torch.ops.idselect.select(feats.to(device), scores.to(device), 3).cpu()
    assert got[0, 0] == 0 and 3 not in got[0].tolist()
    # Without suppression (gamma irrelevant once the weight is 0) 3 would come second.
    plain = torch.ops.idselect.select(feats.to(device), scores.to(device), 3, 0.0).cpu()
    assert plain[0].tolist() == [0, 3, 4] or 3 not in plain[0].tolist()


def test_equal_scores_tie_to_smallest_index(device):
    feats = torch.eye(5, device=device)[None]  # orthogonal: weight exp(-gamma) ~ 0
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1]], device=device)
    got = torch.ops.idselect.select(feats, scores, 5)
    assert got.tolist() == [[1, 3, 0, 2, 4]]


def test_k_zero_and_k_equals_n(device):
    feats = torch.randn(3, 7, 5, device=device)
    scores = torch.rand(3, 7, device=device)
    assert torch.ops.idselect.select(feats, scores, 0).shape == (3, 0)
    full = torch.ops.idselect.select(feats, scores, 7)
    assert full.shape == (3, 7)
    assert all(sorted(r) == list(range(7)) for r in full.tolist())
    assert torch.ops.idselect.select(feats[:0], scores[:0], 0).shape == (0, 0)


def test_one_token_rows(device):
    got = torch.ops.idselect.select(torch.randn(4, 1, 3, device=device), torch.rand(4, 1, device=device), 1)
    assert got.tolist() == [[0]] * 4


def test_row_independent_of_batch_and_strides(device):
    g = torch.Generator().manual_seed(7)
    feats = clustered_features(6, 300, 96, 5, g).to(device)
    scores = torch.rand(6, 300, generator=g).to(device)
    lengths = torch.tensor([300, 250, 64, 299, 100, 200], device=device)
    batched = torch.ops.idselect.select(feats, scores, 64, 20.0, lengths)
    for b in range(6):
        alone = torch.ops.idselect.select(feats[b : b + 1], scores[b : b + 1], 64, 20.0, lengths[b : b + 1])
        if idselect.backend_for(device) == "device_path":
            # Batched tensor ops: the matrix library may sum a row differently in another
            # batch shape, so only near-ties may differ (docs/algorithm.md, per-path tolerance).
            assert_matches_reference(alone, feats[b : b + 1].cpu(), scores[b : b + 1].cpu(), 64, 20.0, lengths[b : b + 1].cpu())
        else:
            assert torch.equal(alone, batched[b : b + 1])
    strided = torch.ops.idselect.select(feats.transpose(0, 1).contiguous().transpose(0, 1), scores.t().contiguous().t(), 64, 20.0, lengths)
    assert torch.equal(strided, batched)


def test_lengths_restrict_rows(device):
    feats = torch.randn(2, 20, 4, device=device)
    scores = torch.rand(2, 20, device=device)
    scores[:, 10:] += 10.0  # the best tokens lie beyond the length
    lengths = torch.tensor([10, 20], device=device)
    got = torch.ops.idselect.select(feats, scores, 5, 20.0, lengths)
    assert (got[0] < 10).all() and (got[1] >= 10).all()


def test_python_api_unbatched_and_validation():
    feats, scores = torch.randn(12, 6), torch.rand(12)
    one = idselect.select(feats, scores, 4)
    assert one.shape == (4,)
    assert torch.equal(one, idselect.select(feats[None], scores[None], 4)[0])
    assert torch.equal(one, reference.select(feats[None], scores[None], 4)[0])


def test_fake_kernel_shapes():
    feats = torch.empty(3, 9, 4, device="meta")
    out = torch.ops.idselect.select(feats, torch.empty(3, 9, device="meta"), 5)
    assert out.shape == (3, 5) and out.dtype == torch.int64 and out.device.type == "meta"


def test_opcheck(device):
    g = torch.Generator().manual_seed(0)
    for args in [
        (torch.randn(2, 17, 8, generator=g), torch.rand(2, 17, generator=g), 5, 20.0, None),
        (torch.randn(3, 9, 33, generator=g).half(), torch.rand(3, 9, generator=g), 9, 1.0,
         torch.tensor([9, 9, 9])),
    ]:
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(torch.ops.idselect.select.default, args)


def test_torch_compile_fullgraph(device):
    def keep_tokens(feats, scores):
        idx = torch.ops.idselect.select(feats, scores * 2.0, 8, 20.0, None)
        return torch.gather(feats, 1, idx[..., None].expand(-1, -1, feats.shape[-1]))

    compiled = torch.compile(keep_tokens, fullgraph=True, dynamic=False)
    feats = torch.randn(2, 40, 16, device=device)
    scores = torch.rand(2, 40, device=device)
    assert torch.equal(compiled(feats, scores), keep_tokens(feats, scores))


def test_hostile_values_follow_the_documented_rule(device):
    """NaN/Inf/negative scores and NaN/Inf/zero features: kernels follow the same IEEE rule
    as the reference (NaN scores and updates count as 0)."""
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(1, 40, 24, generator=g)
    feats[0, 2] = 0.0
    feats[0, 5, 3] = math.nan
    feats[0, 9, 0] = math.inf
    scores = torch.rand(1, 40, generator=g)
    scores[0, [1, 4, 7, 11]] = torch.tensor([math.nan, math.inf, -3.0, -math.inf])
    for gamma in (0.0, 20.0):
        got = torch.ops.idselect.select(feats.to(device), scores.to(device), 30, gamma)
        assert_matches_reference(got, feats, scores, 30, gamma)


def test_checker_rejects_a_wrong_selection():
    # The near-tie rule must not accept everything: a plain top-k ignores suppression.
    g = torch.Generator().manual_seed(1)
    feats = clustered_features(1, 200, 32, 3, g)
    scores = torch.rand(1, 200, generator=g)
    topk = scores.topk(20, dim=1).indices
    with pytest.raises(AssertionError, match="not a near-tie"):
        assert_matches_reference(topk, feats, scores, 20, 20.0)


def test_reference_fallback_without_native_library(tmp_path):
    """Without the compiled library, the op still works (reference) and warns once."""
    import subprocess, sys, textwrap

    script = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["idselect._C"] = None  # as if the extension had not been built
        import torch, idselect
        assert idselect.native_backends() == (), idselect.native_backends()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            f, s = torch.randn(2, 30, 8), torch.rand(2, 30)
            a = torch.ops.idselect.select(f, s, 5)
            b = torch.ops.idselect.select(f, s, 5)
        assert torch.equal(a, idselect.reference.select(f, s, 5)) and torch.equal(a, b)
        messages = [str(w.message) for w in caught if "no native kernel" in str(w.message)]
        assert len(messages) == 1, messages
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_every_float16_value_is_read_exactly(device):
    """All 63488 finite float16 bit patterns (subnormals included) as features: a conversion
    error (other than a uniform scale, which no cosine can see) changes the picks."""
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    values = bits.view(torch.float16)
    values = values[torch.isfinite(values)]
    perm = torch.randperm(values.numel() // 64 * 64, generator=torch.Generator().manual_seed(0))
    feats = values[perm].reshape(1, -1, 64)  # [1, 992, 64]: the vectorised read path
    scores = torch.rand(1, feats.shape[1], generator=torch.Generator().manual_seed(1))
    got = torch.ops.idselect.select(feats.to(device), scores.to(device), 300, 20.0)
    assert_matches_reference(got, feats, scores, 300, 20.0)
