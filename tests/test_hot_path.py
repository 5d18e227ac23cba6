"""The hooks' hot path, counted on the CPU (idselect.testing.counting): what a patched prefill
and decode step add over the unpatched model, in kernels (non-view aten ops: launches on a GPU)
and host synchronisations. The oracle is the unpatched model's own count on the same call.

Budgets (issue 27): a prefill adds at most one synchronisation (the prompt's layout, read once)
at batch 1 and at batch 8; a decode step adds none; the kernels a prefill adds at batch 8 are at
most 1.25x those at batch 1 (nothing per image or per row)."""
import pytest
import torch

import idselect
from idselect.hooks import scoring
from idselect.testing.cases import MODELS, build
from idselect.testing.counting import OpCounts, count_ops

ONE_IMAGE = (2, 1, 3)  # text, one image, text (families with videos add one video per row)


def _prefill_and_step(model, kwargs):
    """A prefill, and one decode step of greedy generate() (a 3-token generate() less a 2-token
    one: generate()'s own work cancels); returns (prefill counts, step counts)."""
    with count_ops() as prefill:
        model(**kwargs, use_cache=True)
    runs = []
    for tokens in (2, 3):
        with count_ops() as counts:
            model.generate(**kwargs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        runs.append(counts)
    step = OpCounts(kernels=runs[1].kernels - runs[0].kernels, syncs=runs[1].syncs - runs[0].syncs)
    return prefill, step


def repeated(kwargs, batch):
    """One prompt's inputs as ``batch`` identical rows (media repeated along their first dim)."""
    return {name: value.repeat(batch, *[1] * (value.dim() - 1)) for name, value in kwargs.items()}


def added(family, batch, keep=4, importance="auto"):
    """(prefill kernels, prefill syncs, step kernels, step syncs, prefill counts) a patched model
    adds over the unpatched one, for ``batch`` identical rows of one image each (images of one
    size: importance runs once per distinct candidate count, docs/hooks.md)."""
    model = MODELS[family](0)
    kwargs, _ = build(family, model, [ONE_IMAGE])
    kwargs = repeated(kwargs, batch)
    with torch.no_grad():
        model(**kwargs)  # warm-up: lazy initialisation counts in neither
        base_prefill, base_step = _prefill_and_step(model, kwargs)
        with idselect.patch(model, keep=keep, importance=importance) as handle:
            model(**kwargs)
            prefill, step = _prefill_and_step(model, kwargs)
            assert handle.last_stats["visual_tokens_after"] < handle.last_stats["visual_tokens_before"]
    return (prefill.kernels - base_prefill.kernels, prefill.syncs - base_prefill.syncs,
            step.kernels - base_step.kernels, step.syncs - base_step.syncs, prefill)


@pytest.mark.parametrize("family", sorted(MODELS))
def test_prefill_and_decode_add_no_syncs_and_nothing_per_image(family):
    if family == "qwen3_5":
        pytest.importorskip("transformers.models.qwen3_5")
    k1, s1, sk1, ss1, _ = added(family, 1)
    k8, s8, sk8, ss8, counts = added(family, 8)
    assert s1 <= 1 and s8 <= 1, (s1, s8, dict(counts.sync_ops))
    assert ss1 == 0 and ss8 == 0, (ss1, ss8)
    assert k8 <= 1.25 * k1, (k1, k8)
    assert sk8 <= sk1 + 2, (sk1, sk8)  # a decode step's translation does not grow with rows


def test_a_reintroduced_per_image_sync_fails_the_budget(monkeypatch):
    """The counting catches what the budget forbids: an .item() per medium in the importance step."""
    clean = [added("llava", batch)[1] for batch in (1, 8)]
    original = scoring.importance_scores

    def with_item_per_medium(table, *args, **kwargs):
        scores = original(table, *args, **kwargs)
        for g in range(scores.shape[0]):
            float(scores[g, 0])  # one synchronisation per medium
        return scores

    monkeypatch.setattr(scoring, "importance_scores", with_item_per_medium)
    mutated = [added("llava", batch)[1] for batch in (1, 8)]
    assert [m - c for m, c in zip(mutated, clean)] == [1, 8]
    assert mutated[1] > 1  # the budget test above would fail


@pytest.mark.parametrize("importance", ["saliency", "relevance", "unified"])
def test_every_importance_is_batched(importance):
    k1, s1, *_ = added("llava", 1, importance=importance)
    k8, s8, *_ = added("llava", 8, importance=importance)
    assert s1 <= 1 and s8 <= 1 and k8 <= 1.25 * k1, (importance, k1, k8, s1, s8)


def test_first_stats_read_is_one_batch():
    """Reading last_stats resolves the kept indices and the zero-score replay with one read,
    whatever the number of media."""
    model = MODELS["llava"](0)
    kwargs, _ = build("llava", model, [ONE_IMAGE] * 8)
    with torch.no_grad(), idselect.patch(model, keep=6) as handle:
        model(**kwargs)
        with count_ops() as read:
            stats = handle.last_stats
    assert len(stats["kept_indices"]) == 8 and len(stats["zero_score_picks"]) == 8
    assert read.syncs <= 2, dict(read.sync_ops)  # the weights' read, the counts' tolist
