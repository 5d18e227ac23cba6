"""Qwen3-VL specifics: the DeepStack features follow the pruning exactly (each kept token keeps
its own rows, dropped tokens' rows go nowhere), checked against the unpatched language model
run by hand on the hand-pruned sequence."""
import torch

import idselect
from idselect.testing.cases import case, runs_per_video
from idselect.testing.oracles import kept_columns, language_inputs, mrope_pruned_greedy

NEW = 4
ROWS = [(3, 1, 4), (6, 2, 1)]  # left-padded batch: an image + a video, two images + a video


def record_deepstack(model):
    """Every (visual_pos_masks, features) the language model adds, in call order."""
    llm = model.model.language_model
    calls, original = [], llm._deepstack_process

    def process(hidden, visual_pos_masks, visual_embeds):
        calls.append((visual_pos_masks.clone(), visual_embeds.clone()))
        return original(hidden, visual_pos_masks, visual_embeds)

    llm._deepstack_process = process
    return calls, lambda: llm.__dict__.pop("_deepstack_process")


def test_qwen3_generate_equals_greedy_over_hand_pruned_sequence_with_its_deepstack_rows():
    model, kwargs, counts = case("qwen3_vl", ROWS)
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        out = model.generate(**kwargs, max_new_tokens=NEW)
    kept = handle.last_stats["kept_indices"]
    assert handle.last_stats["visual_tokens_after"] == 5 * len(counts)
    keep = kept_columns(kwargs["input_ids"], kwargs["attention_mask"], kept, runs_per_video("qwen3_vl"))
    assert torch.equal(out[:, -NEW:], mrope_pruned_greedy(model, kwargs, keep, NEW))


def test_qwen3_llm_adds_exactly_the_kept_tokens_deepstack_rows_at_their_positions():
    model, kwargs, counts = case("qwen3_vl", ROWS)
    unpatched = language_inputs(model, kwargs)
    calls, restore = record_deepstack(model)
    try:
        with torch.no_grad(), idselect.patch(model, keep=6) as handle:
            model(**kwargs)
    finally:
        restore()
    keep = kept_columns(kwargs["input_ids"], kwargs["attention_mask"], handle.last_stats["kept_indices"], 2)
    visual = unpatched["visual_pos_masks"]
    kept_rows = keep[visual]
    assert len(calls) == len(unpatched["deepstack_visual_embeds"]) == 2  # one per DeepStack layer
    for (mask, rows), full in zip(calls, unpatched["deepstack_visual_embeds"]):
        assert int(mask.sum()) == int(kept_rows.sum()) == 6 * len(counts)
        assert torch.equal(rows, full[kept_rows])
        # In the pruned layout each row's visual positions hold its kept tokens, in order.
        for b in range(keep.shape[0]):
            assert int(mask[b].sum()) == int((keep[b] & visual[b]).sum())


def test_qwen3_keep_all_passes_deepstack_untouched():
    model, kwargs, counts = case("qwen3_vl", ROWS)
    unpatched = language_inputs(model, kwargs)
    calls, restore = record_deepstack(model)
    try:
        with torch.no_grad(), idselect.patch(model, keep=max(counts)):
            model(**kwargs)
    finally:
        restore()
    for (mask, rows), full in zip(calls, unpatched["deepstack_visual_embeds"]):
        assert torch.equal(mask, unpatched["visual_pos_masks"]) and torch.equal(rows, full)
