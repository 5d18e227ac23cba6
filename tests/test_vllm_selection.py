"""idselect.vllm.selection: one batched selection for all the images of a vLLM encoder step.

Runs without vLLM. The oracle is the per-image path the vLLM architectures took before
(``prune_image``: min-max over the image's candidates, ``idselect.select`` on them alone,
picks sorted): the batched pass must keep exactly the same rows, bit for bit, and neither
synchronise nor launch more kernels as images are added (idselect.testing.counting)."""
import random

import pytest
import torch

import idselect
from idselect import reference
from idselect.importance import minmax
from idselect.testing.counting import count_ops
from idselect.vllm.selection import kept_embeddings, kept_rows


def oracle(features, scores, keep, gamma, candidates=None, select=None):
    """The rows one image keeps, computed on that image alone."""
    tokens = features.shape[0]
    if keep >= tokens:
        return torch.arange(tokens)
    cand = torch.arange(tokens) if candidates is None else torch.as_tensor(sorted(candidates), dtype=torch.int64)
    if keep >= cand.numel():
        return cand
    normalised = minmax(scores[cand])
    if select is None:
        picked = idselect.select(features[cand].detach(), normalised, keep, gamma, validate=False)
    else:
        picked = select(features[cand][None], normalised[None], keep, gamma)[0]
    return cand[picked.sort().values]


def random_image(gen, tokens, dim, dtype, ties):
    features = torch.randn(tokens, dim, generator=gen)
    if ties:  # repeated rows and scores drawn from a few values: ties in scores and in similarities
        features[tokens // 2:] = features[:tokens - tokens // 2].clone()
        scores = torch.randint(0, 4, (tokens,), generator=gen).float() / 7
    else:
        scores = torch.rand(tokens, generator=gen)
    return features.to(dtype), scores


def random_step(seed, dtype, images=9, dim=24):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    features, scores, keeps, gammas, candidates = [], [], [], [], []
    for i in range(images):
        tokens = rng.choice([1, 5, 17, 40, 64])
        f, s = random_image(gen, tokens, dim, dtype, ties=rng.random() < 0.4)
        if rng.random() < 0.15:
            s = torch.full_like(s, 0.3)  # constant scores: all zeros after min-max
        features.append(f)
        scores.append(s)
        keeps.append(rng.choice([1, 3, 4, 8, 16, 64]))
        gammas.append(rng.choice([0.0, 5.0, 20.0]))
        if rng.random() < 0.5:
            candidates.append(None)
        else:  # a subset of rows, in any order, sometimes a list, sometimes a tensor
            cand = rng.sample(range(tokens), rng.randint(0, tokens))
            candidates.append(cand if rng.random() < 0.5 else torch.as_tensor(cand, dtype=torch.int64))
    return features, scores, keeps, gammas, candidates


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("seed", range(12))
def test_same_rows_as_each_image_alone(seed, dtype):
    features, scores, keeps, gammas, candidates = random_step(seed, dtype)
    got = kept_rows(features, scores, keeps, gammas, candidates)
    embeds = kept_embeddings(features, scores, keeps, gammas, candidates)
    assert len(got) == len(embeds) == len(features)
    for i, rows in enumerate(got):
        want = oracle(features[i], scores[i], keeps[i], gammas[i], candidates[i])
        assert rows.dtype == torch.int64 and rows.device == features[i].device
        assert torch.equal(rows, want), (i, keeps[i], gammas[i], features[i].shape)
        assert torch.equal(embeds[i], features[i][want])


@pytest.mark.parametrize("seed", range(4))
def test_same_rows_as_the_pure_pytorch_reference(seed):
    features, scores, keeps, gammas, candidates = random_step(100 + seed, torch.float32, images=6)
    got = kept_rows(features, scores, keeps, gammas, candidates)
    for i, rows in enumerate(got):
        want = oracle(features[i], scores[i], keeps[i], gammas[i], candidates[i], select=reference.select)
        assert torch.equal(rows, want), i


def test_no_candidates_means_all_rows():
    gen = torch.Generator().manual_seed(0)
    features = [torch.randn(30, 8, generator=gen), torch.randn(12, 8, generator=gen)]
    scores = [torch.rand(30, generator=gen), torch.rand(12, generator=gen)]
    a = kept_rows(features, scores, [5, 4], [20.0, 1.0])
    b = kept_rows(features, scores, [5, 4], [20.0, 1.0], [None, list(range(12))])
    c = kept_rows(features, scores, [5, 4], [20.0, 1.0], [range(30), None])
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_boundaries_whole_and_all_candidates():
    gen = torch.Generator().manual_seed(1)
    f, s = torch.randn(10, 4, generator=gen), torch.rand(10, generator=gen)
    rows = kept_rows([f, f, f, f, f], [s] * 5, [10, 11, 3, 4, 2], [20.0] * 5, [None, [1, 2], [7, 1, 4], [0, 9, 5], [3]])
    assert rows[0].tolist() == list(range(10))  # keep == T: whole
    assert rows[1].tolist() == list(range(10))  # keep > T: whole, candidates ignored
    assert rows[2].tolist() == [1, 4, 7]  # keep == candidates: all of them, ascending
    assert rows[3].tolist() == [0, 5, 9]  # keep > candidates
    assert rows[4].tolist() == [3]
    embeds = kept_embeddings([f, f], [s, s], [10, 3], [20.0, 20.0], [None, [7, 1, 4]])
    assert embeds[0] is f  # kept whole: no copy
    assert torch.equal(embeds[1], f[[1, 4, 7]])


def test_empty_step_and_empty_candidates():
    assert kept_rows([], [], [], []) == [] and kept_embeddings([], [], [], []) == []
    f, s = torch.randn(6, 4), torch.rand(6)
    rows = kept_rows([f], [s], [2], [20.0], [[]])
    assert rows[0].numel() == 0 and rows[0].dtype == torch.int64
    assert kept_embeddings([f], [s], [2], [20.0], [[]])[0].shape == (0, 4)


def test_host_tensors_for_keeps_and_gammas():
    features, scores, keeps, gammas, candidates = random_step(7, torch.float32, images=4)
    a = kept_rows(features, scores, keeps, gammas, candidates)
    b = kept_rows(features, scores, torch.tensor(keeps), torch.tensor(gammas, dtype=torch.float64), candidates)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("bad, match", [
    (dict(candidates=[[0, 0, 1]]), "distinct"),
    (dict(candidates=[[0, 12]]), "distinct rows in"),
    (dict(candidates=[[-1, 2]]), "distinct rows in"),
    (dict(keeps=[0]), ">= 1"),
    (dict(keeps=[1, 2]), "keeps for 1 images"),
    (dict(scores=[torch.rand(11)]), r"scores \[T\]"),
])
def test_refusals(bad, match):
    args = dict(features=[torch.randn(12, 4)], scores=[torch.rand(12)], keeps=[3], gammas=[20.0], candidates=None)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        kept_rows(**args)


def _step(images, seed=3, tokens=(40, 17, 64)):
    """``images`` images of mixed sizes, in two (keep, gamma) groups, half with candidate subsets."""
    gen = torch.Generator().manual_seed(seed)
    features, scores, keeps, gammas, candidates = [], [], [], [], []
    for i in range(images):
        t = tokens[i % len(tokens)]
        features.append(torch.randn(t, 16, generator=gen))
        scores.append(torch.rand(t, generator=gen))
        keeps.append(4 if i % 2 else 8)
        gammas.append(20.0 if i % 2 else 5.0)
        candidates.append(None if i % 3 else list(range(0, t, 2)))
    return features, scores, keeps, gammas, candidates


@pytest.mark.parametrize("fn", [kept_rows, kept_embeddings], ids=["kept_rows", "kept_embeddings"])
def test_kernels_do_not_grow_with_images_and_no_sync(fn):
    counts = {}
    for images in (2, 4, 16):
        args = _step(images)
        with count_ops() as c:
            fn(*args)
        counts[images] = c
        assert c.syncs == 0, dict(c.sync_ops)
    assert counts[2].kernels == counts[4].kernels == counts[16].kernels, {n: c.kernels for n, c in counts.items()}
    assert counts[16].by_op["select"] == 2  # one op call per distinct (keep, gamma)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_each_row_of_the_op_call_is_the_image_alone(monkeypatch, dtype):
    """What the op sees: per table row, exactly the image's candidate features and the bits of
    minmax over its candidates alone, within the row's length."""
    import idselect.vllm.selection as selection

    calls = []

    def spy(features, scores, k, gamma, lengths, validate=True):
        calls.append((features.clone(), scores.clone(), k, gamma, lengths.clone(), validate))
        return idselect.select(features, scores, k, gamma, lengths, validate=validate)

    monkeypatch.setattr(selection, "op_select", spy)
    seen = 0
    for seed in range(6):
        features, scores, keeps, gammas, candidates = random_step(seed, dtype)
        calls.clear()
        step = selection._Step(features, scores, keeps, gammas, candidates)
        step.rows()
        assert len(calls) == len({(keeps[i], gammas[i]) for i in step.plan.table})
        rows = [(f[g], s[g], k, gamma, n, v) for f, s, k, gamma, lengths, v in calls for g, n in enumerate(lengths.tolist())]
        assert len(rows) == len(step.plan.table)
        for i, (f, s, k, gamma, n, validate) in zip(step.plan.table, rows):
            cand = torch.as_tensor(sorted(torch.as_tensor(candidates[i]).tolist()) if candidates[i] is not None
                                   else list(range(features[i].shape[0])), dtype=torch.int64)
            assert (k, gamma, n, validate) == (keeps[i], gammas[i], cand.numel(), False)
            assert torch.equal(f[:n], features[i][cand])
            want = minmax(scores[i][cand])
            assert torch.equal(s[:n].view(torch.int32), want.view(torch.int32))  # the same bits
            seen += 1
    assert seen > 10


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("keeps", [[5, 5, 5, 5, 5, 5], [3, 5, 5, 8, 8, 8], [8, 3, 5, 3, 100, 5], [5, 5, 2, 5, 5, 5]])
def test_images_of_one_projector_call(keeps, dtype):
    """The images as vLLM's LLaVA gives them: views of one [I, T, D] tensor, and scores as
    columns 1: of one [I, T + 1] attention. The table is then the tensor itself (no copy) when
    every image is selected in image order; the rows are the same either way."""
    gen = torch.Generator().manual_seed(len(set(keeps)))
    base = torch.randn(6, 40, 16, generator=gen).to(dtype)
    base[3, 20:] = base[3, :20]  # ties
    attention = torch.rand(6, 41, generator=gen)
    attention[2] = torch.randint(0, 3, (41,), generator=gen).float()
    features, scores = list(base), list(attention[:, 1:])
    rows = kept_rows(features, scores, keeps, [20.0] * 6)
    embeds = kept_embeddings(features, scores, keeps, [20.0] * 6)
    for i in range(6):
        want = oracle(features[i], scores[i], keeps[i], 20.0)
        assert torch.equal(rows[i], want) and torch.equal(embeds[i], features[i][want]), i


def test_joined_is_cat_and_a_view_only_when_consecutive():
    from idselect.vllm.selection import joined

    base = torch.randn(5, 7, 3)
    views = list(base)
    out = joined(views)
    assert torch.equal(out, torch.cat(views)) and out.data_ptr() == base.data_ptr()
    assert torch.equal(joined(views[1:4]), torch.cat(views[1:4])) and joined(views[1:4]).data_ptr() == views[1].data_ptr()
    for parts in (views[::-1], views[::2], [views[0], base[1].clone()], list(base.transpose(1, 2)),
                  [base[0, :5], base[0, 5:]]):
        got = joined(parts)
        assert torch.equal(got, torch.cat(parts)) and got.data_ptr() != base.data_ptr()
    columns = list(torch.randn(4, 9)[:, 1:])  # not contiguous: copied
    assert torch.equal(joined(columns), torch.cat(columns))


def test_one_projector_call_copies_no_features():
    """Views of one tensor, one keep: the table is that tensor (no cat, no gather of features)."""
    base = torch.randn(8, 64, 32)
    scores = list(torch.rand(8, 65)[:, 1:])
    with count_ops() as counts:
        kept_embeddings(list(base), scores, [4] * 8, [20.0] * 8)
    assert counts.syncs == 0
    # cat of the 8 score columns, minmax, the op, sort, gather of the picks, the kept rows' gather
    assert counts.by_op["cat"] == 1 and counts.by_op["index"] == 1, dict(counts.by_op)


# On CUDA (bench/gpu_session.sh runs these): the host-planned table goes up in one pinned,
# asynchronous copy and the op runs on the device; the rows must be those of the pure-PyTorch
# reference on each image alone (distinct random scores and features: no near-ties), and the
# pass must not synchronise the host with the device.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _untied_step(seed, dtype, images=9, dim=24):
    features, scores, keeps, gammas, candidates = random_step(seed, dtype, images, dim)
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(f.shape, generator=gen).to(dtype) for f in features]
    scores = [torch.rand(s.shape, generator=gen) for s in scores]
    return features, scores, keeps, gammas, candidates


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("seed", range(6))
def test_cuda_same_rows_as_the_reference_on_each_image(seed, dtype):
    features, scores, keeps, gammas, candidates = _untied_step(200 + seed, dtype)
    on_gpu = ([f.cuda() for f in features], [s.cuda() for s in scores])
    rows = kept_rows(*on_gpu, keeps, gammas, candidates)
    embeds = kept_embeddings(*on_gpu, keeps, gammas, candidates)
    for i in range(len(features)):
        want = oracle(features[i], scores[i], keeps[i], gammas[i], candidates[i], select=reference.select)
        assert rows[i].device.type == "cuda" and torch.equal(rows[i].cpu(), want), (i, keeps[i], gammas[i])
        assert torch.equal(embeds[i].cpu(), features[i][want])


@needs_cuda
@pytest.mark.parametrize("fn", [kept_rows, kept_embeddings], ids=["kept_rows", "kept_embeddings"])
def test_cuda_no_host_synchronisation(fn):
    features, scores, keeps, gammas, candidates = _step(12)
    args = ([f.cuda() for f in features], [s.cuda() for s in scores], keeps, gammas, candidates)
    fn(*args)  # warm-up: first-call allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
