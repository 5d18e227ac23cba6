"""CUDA-only checks of every CUDA path: the compiled kernel's Gram and streaming paths
(IDSELECT_CUDA_PATH, read per call), the Gram path's opt-in review-v2 variants
(IDSELECT_CUDA_TUNED=1) and the batched tensor-op path (idselect.device_path),
each against the reference with the near-tie rule. The shared tests in test_select.py,
test_errors.py and test_properties.py also run on CUDA through whichever backend serves it.

The compiled kernel is the default; with IDSELECT_CUDA_KERNEL=0 (or a build without nvcc) the
kernel tests skip and say so. bench/gpu_session.sh runs them."""
import pytest
import torch

import idselect
from idselect import device_path
from idselect.tools.benchmark import cuda_path_env
from selection_checks import assert_matches_reference
from test_select import clustered_features, random_case

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# gram_tuned: the Gram path with the review-v2 variants (IDSELECT_CUDA_TUNED=1, opt-in).
KERNEL_PATHS = ["auto", "gram", "gram_tuned", "stream"]
ALL_PATHS = KERNEL_PATHS + ["device_path"]


def needs_kernel():
    if idselect.backend_for("cuda") != "native":
        pytest.skip("the compiled CUDA kernel is not loaded (IDSELECT_CUDA_KERNEL=0, or built without nvcc)")


def use_kernel_path(monkeypatch, path):
    for name, value in cuda_path_env(path).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=ALL_PATHS)
def select(request, monkeypatch):
    """torch.ops.idselect.select on CUDA along one path."""
    if request.param == "device_path":
        return device_path.select
    needs_kernel()
    use_kernel_path(monkeypatch, request.param)
    return torch.ops.idselect.select


@pytest.fixture(params=KERNEL_PATHS)
def kernel_select(request, monkeypatch):
    needs_kernel()
    use_kernel_path(monkeypatch, request.param)
    return torch.ops.idselect.select


def test_kernel_registered_unless_turned_off():
    from idselect import _ops

    # On a GPU machine the extension is built with nvcc, so only IDSELECT_CUDA_KERNEL=0 leaves
    # the kernel out.
    assert ("cuda" in idselect.native_backends()) == (not _ops.cuda_kernel_disabled())


@pytest.mark.parametrize("seed", range(60))
def test_matches_reference_random_shapes(seed, select):
    feats, scores, k, gamma, lengths = random_case(seed)
    got = select(feats.cuda(), scores.cuda(), k, gamma, None if lengths is None else lengths.cuda())
    assert got.device.type == "cuda"
    assert_matches_reference(got, feats, scores, k, gamma, lengths)


@pytest.mark.parametrize("N,D,k,dtype", [(576, 4096, 64, torch.bfloat16), (2880, 1024, 288, torch.bfloat16),
                                         (3000, 64, 3000, torch.float16), (1000, 333, 200, torch.float32)])
def test_matches_reference_large(N, D, k, dtype, select):
    g = torch.Generator().manual_seed(N + D)
    feats = clustered_features(1, N, D, 40, g, spread=0.3).to(dtype)
    scores = torch.rand(1, N, generator=g)
    assert_matches_reference(select(feats.cuda(), scores.cuda(), k, 20.0), feats, scores, k, 20.0)


def test_k_one_and_k_n(select):
    g = torch.Generator().manual_seed(12)
    feats = clustered_features(3, 130, 40, 5, g).bfloat16()
    scores = torch.rand(3, 130, generator=g)
    for k in (1, 2, 130):
        got = select(feats.cuda(), scores.cuda(), k, 20.0)
        assert_matches_reference(got, feats, scores, k, 20.0)
    assert torch.equal(select(feats.cuda(), scores.cuda(), 1, 20.0).cpu(), scores.argmax(1, keepdim=True))


def test_ragged_and_bad_lengths(select):
    g = torch.Generator().manual_seed(13)
    feats = clustered_features(6, 700, 128, 8, g).half()
    scores = torch.rand(6, 700, generator=g)
    lengths = torch.tensor([700, 500, 64, 699, -3, 10_000])
    got = select(feats.cuda(), scores.cuda(), 64, 20.0, lengths.cuda())
    assert_matches_reference(got, feats, scores, 64, 20.0, lengths)


def test_thousands_of_rows(select):
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(3000, 50, 24, generator=g)
    scores = torch.rand(3000, 50, generator=g)
    got = select(feats.cuda(), scores.cuda(), 10, 20.0).cpu()
    rows = torch.randint(0, 3000, (40,), generator=g)
    assert_matches_reference(got[rows], feats[rows], scores[rows], 10, 20.0)


def test_hostile_values(select):
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 200, 64, generator=g)
    feats[0, 2] = 0.0
    feats[0, 5, 3] = float("nan")
    feats[1, 9, 0] = float("inf")
    scores = torch.rand(2, 200, generator=g)
    scores[0, [1, 4, 7, 11]] = torch.tensor([float("nan"), float("inf"), -3.0, -float("inf")])
    for dtype in (torch.float32, torch.bfloat16):
        for gamma in (0.0, 20.0):
            got = select(feats.to(dtype).cuda(), scores.cuda(), 120, gamma)
            assert_matches_reference(got, feats.to(dtype), scores, 120, gamma)


def test_stride_and_batch_invariance_is_exact(kernel_select):
    """F3: a row gives the same picks contiguous, behind a padded token stride, at an odd
    storage offset (scalar loads) and inside any batch."""
    g = torch.Generator().manual_seed(7)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        feats = clustered_features(4, 300, 96, 5, g).to(dtype).cuda()
        scores = torch.rand(4, 300, generator=g).cuda()
        lengths = torch.tensor([300, 250, 64, 299], device="cuda")
        batched = kernel_select(feats, scores, 64, 20.0, lengths)
        assert_matches_reference(batched, feats.cpu(), scores.cpu(), 64, 20.0, lengths.cpu())
        padded = torch.zeros(4, 300, 101, dtype=dtype, device="cuda")
        padded[..., 1:97] = feats  # token stride 101, storage offset 1: unaligned, scalar loads
        assert torch.equal(kernel_select(padded[..., 1:97], scores, 64, 20.0, lengths), batched)
        token_major = feats.transpose(0, 1).contiguous().transpose(0, 1)
        assert torch.equal(kernel_select(token_major, scores, 64, 20.0, lengths), batched)
        for b in range(4):
            alone = kernel_select(feats[b : b + 1], scores[b : b + 1], 64, 20.0, lengths[b : b + 1])
            assert torch.equal(alone, batched[b : b + 1])
        many = kernel_select(feats[:1].expand(300, -1, -1), scores[:1].expand(300, -1), 64, 20.0)
        assert torch.equal(many, kernel_select(feats[:1], scores[:1], 64, 20.0).expand(300, -1))


def test_deterministic_across_runs(select):
    g = torch.Generator().manual_seed(5)
    feats = clustered_features(1, 2880, 1024, 30, g).cuda().bfloat16()
    scores = torch.rand(1, 2880, generator=g).cuda()
    first = select(feats, scores, 288, 20.0)
    for _ in range(5):
        assert torch.equal(select(feats, scores, 288, 20.0), first)


def test_last_step_cluster_exit_stress(kernel_select):
    """F1: B = 1 uses the largest clusters; k = 1 and 2 end right after the exchange."""
    g = torch.Generator().manual_seed(21)
    feats = torch.randn(1, 4000, 64, generator=g).cuda()
    scores = torch.rand(1, 4000, generator=g).cuda()
    want = {k: kernel_select(feats, scores, k, 20.0) for k in (1, 2)}
    assert_matches_reference(want[2], feats.cpu(), scores.cpu(), 2, 20.0)
    for _ in range(200):
        for k in (1, 2):
            assert torch.equal(kernel_select(feats, scores, k, 20.0), want[k])


def test_no_host_synchronisation(select):
    g = torch.Generator().manual_seed(8)
    feats = clustered_features(2, 600, 64, 6, g).bfloat16().cuda()
    scores = torch.rand(2, 600, generator=g).cuda()
    lengths = torch.tensor([600, 300], device="cuda")
    select(feats, scores, 32, 20.0, lengths)  # warm-up: first-call allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        select(feats, scores, 32, 20.0, lengths)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cuda_graph_capture_and_replay(select):
    g = torch.Generator().manual_seed(0)
    feats = clustered_features(4, 700, 256, 6, g).cuda().bfloat16()
    scores = torch.rand(4, 700, generator=g).cuda()
    lengths = torch.tensor([700, 500, 64, 699], device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up outside capture, on a side stream
        select(feats, scores, 64, 20.0, lengths)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = select(feats, scores, 64, 20.0, lengths)
    for seed in range(3):
        g2 = torch.Generator().manual_seed(seed + 1)
        new_feats = clustered_features(4, 700, 256, 6, g2).bfloat16()
        new_scores = torch.rand(4, 700, generator=g2)
        feats.copy_(new_feats)
        scores.copy_(new_scores)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, select(feats, scores, 64, 20.0, lengths))
        assert_matches_reference(static_out, new_feats, new_scores, 64, 20.0, lengths.cpu())


def test_more_tokens_than_the_gram_path_holds_and_odd_widths(select):
    g = torch.Generator().manual_seed(3)
    for N, D, dtype in [(60000, 8, torch.float32), (5000, 3, torch.float16), (4608, 3584, torch.bfloat16)]:
        feats = clustered_features(1, N, D, 50, g).to(dtype)
        scores = torch.rand(1, N, generator=g)
        got = select(feats.cuda(), scores.cuda(), 100, 20.0)
        assert_matches_reference(got, feats, scores, 100, 20.0)


def test_k_one_over_more_tokens_than_shared_memory_holds(select):
    """G1: k = 1 with N > 8192 returned "invalid argument" on the compiled kernel."""
    g = torch.Generator().manual_seed(9)
    feats = torch.randn(2, 9000, 16, generator=g)
    scores = torch.rand(2, 9000, generator=g)
    got = select(feats.cuda(), scores.cuda(), 1, 20.0)
    assert torch.equal(got.cpu(), scores.argmax(1, keepdim=True))


def test_zero_width_features(select):
    """G3: [B, N, 0] features have no storage; every token's cosine is 0, as in the reference."""
    g = torch.Generator().manual_seed(10)
    feats = torch.empty(2, 50, 0)
    scores = torch.rand(2, 50, generator=g)
    for k in (1, 5, 50):
        assert_matches_reference(select(feats.cuda(), scores.cuda(), k, 20.0), feats, scores, k, 20.0)


def test_bad_path_request_is_an_error(monkeypatch):
    needs_kernel()
    monkeypatch.setenv("IDSELECT_CUDA_PATH", "fastest")
    with pytest.raises(ValueError, match="IDSELECT_CUDA_PATH"):
        torch.ops.idselect.select(torch.randn(1, 5, 4, device="cuda"), torch.rand(1, 5, device="cuda"), 2)


def tuned_cases():
    g = torch.Generator().manual_seed(21)
    cases = []
    for B, N, D, k, dtype in [(1, 576, 4096, 64, torch.bfloat16), (3, 700, 1000, 200, torch.float16),
                              (2, 130, 77, 130, torch.bfloat16), (4, 64, 4096, 17, torch.float32),
                              (1, 2880, 1024, 288, torch.bfloat16), (2, 8192, 64, 40, torch.float16)]:
        feats = torch.randn(B, N, D, generator=g).to(dtype)
        cases.append((feats.cuda(), torch.rand(B, N, generator=g).cuda(), k))
        cases.append((clustered_features(B, N, D, 5, g).to(dtype).cuda(), torch.rand(B, N, generator=g).cuda(), k))
    cases.append((cases[0][0][..., 1:4095], cases[0][1], 64))  # unaligned rows: the scalar loads
    return cases


def test_tuned_gram_norms_and_weights_are_the_same_bits(monkeypatch):
    """The review-v2 variants (G4 prefetched stages and shared norms, G6 one-pass norms) move
    values differently, never compute them differently: the Gram path's norms and every weight
    (idselect::_gram_weights, a test hook) equal the verified kernels' bit for bit, at every
    dtype, width and load path; and they are the weights (float64 check, loose)."""
    needs_kernel()
    for index, (feats, _, _) in enumerate(tuned_cases()):
        if feats.shape[1] > 2880:
            feats = feats[:, :2880]  # W of 8192 tokens: 256 MiB per row, twice
        monkeypatch.setenv("IDSELECT_CUDA_TUNED", "0")
        norms, weights = torch.ops.idselect._gram_weights(feats, 20.0)
        monkeypatch.setenv("IDSELECT_CUDA_TUNED", "1")
        tuned_norms, tuned_weights = torch.ops.idselect._gram_weights(feats, 20.0)
        assert torch.equal(tuned_norms, norms), (index, feats.shape, feats.dtype)
        assert torch.equal(tuned_weights, weights), (index, feats.shape, feats.dtype)
        if index == 1:  # clustered bf16 at D=4096: weights far from 0 and 1
            f = feats.double()
            unit = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            want = torch.exp(-20.0 * (1 - (unit @ unit.transpose(1, 2)).clamp(-1, 1)) ** 2)
            assert torch.allclose(weights.double(), want, atol=1e-4), (weights.double() - want).abs().max()
            assert ((want > 0.01) & (want < 0.99)).any()


def test_tuned_gram_variants_give_the_same_bits(monkeypatch):
    """With G5 (each step's weights loaded in one round trip) too: every pick of every case
    equals the verified Gram path's (a smoke test: picks hide small weight differences; the
    test above compares the weights)."""
    needs_kernel()
    monkeypatch.setenv("IDSELECT_CUDA_PATH", "gram")
    for feats, scores, k in tuned_cases():
        monkeypatch.setenv("IDSELECT_CUDA_TUNED", "0")
        want = torch.ops.idselect.select(feats, scores, k, 20.0)
        monkeypatch.setenv("IDSELECT_CUDA_TUNED", "1")
        assert torch.equal(torch.ops.idselect.select(feats, scores, k, 20.0), want), (feats.shape, feats.dtype, k)


def test_bad_tuned_setting_is_an_error(monkeypatch):
    needs_kernel()
    monkeypatch.setenv("IDSELECT_CUDA_TUNED", "yes")
    with pytest.raises(ValueError, match="IDSELECT_CUDA_TUNED must be 0 or 1, got 'yes'"):
        torch.ops.idselect.select(torch.randn(1, 5, 4, device="cuda"), torch.rand(1, 5, device="cuda"), 2)
