"""LLaVA-OneVision specifics: newline tokens are never candidates (anyres images, multi-image
rows, videos), a budget counts an image over all its crops and a video over all its frames."""
import pytest
import torch

import idselect
from idselect.testing.cases import build, case
from idselect.testing import tiny
from idselect.testing.oracles import generate_on_embeds, hand_pruned, llm_input_embeds, media_runs

NEW = 4


def first_layer_inputs(model):
    seen = []
    hook = model.model.language_model.layers[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).detach()), with_kwargs=True)
    return seen, hook


def newline_columns(model, kwargs):
    """Per medium (oracles.media_runs order), the indices of its newline tokens, found in what
    the unpatched model feeds its LLM."""
    embeds = llm_input_embeds(model, kwargs)
    newline = model.model.image_newline.detach()
    return [(embeds[row, cols] == newline).all(-1).nonzero().squeeze(1) for row, cols in media_runs(kwargs["input_ids"])]


def test_onevision_keeps_budget_per_image_over_all_crops_and_never_a_newline():
    model, kwargs, counts = case("llava_onevision", [(3, 2, 4)])  # two anyres images and a video
    newlines = newline_columns(model, kwargs)
    assert [n.numel() for n in newlines] == [4, 8, 1]  # 4 x 8 and 8 x 8 grids: a newline per row; video: one
    seen, hook = first_layer_inputs(model)
    with torch.no_grad(), idselect.patch(model, keep=8) as handle:
        model(**kwargs)
    hook.remove()
    stats = handle.last_stats
    assert counts == [52, 88, 17] and stats["visual_tokens_after"] == 24
    for kept, nl in zip(stats["kept_indices"], newlines):
        assert kept.numel() == 8 and not set(kept.tolist()) & set(nl.tolist())
    newline = model.model.image_newline.detach()
    assert not any(torch.equal(row, newline) for row in seen[0][0])


def test_onevision_multi_image_row_is_untiled_and_each_image_pruned_alone():
    """With batch_num_images > 1 the model gives each image one crop and one newline."""
    model = tiny.tiny_llava_onevision()
    pixels, sizes, _ = tiny.anyres_pixels(model, [[56, 56], [28, 56]], seed=3)
    ids = [5, 6] + [tiny.IMAGE_TOKEN] * 17 + [7] + [tiny.IMAGE_TOKEN] * 17 + [8, 9, 10]
    kwargs = dict(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                  pixel_values=pixels, image_sizes=sizes, batch_num_images=torch.tensor([2]))
    with torch.no_grad(), idselect.patch(model, keep=4) as handle:
        out = model.generate(**kwargs, max_new_tokens=NEW)
    stats = handle.last_stats
    assert stats["visual_tokens_before"] == 34 and stats["visual_tokens_after"] == 8
    assert all(16 not in k.tolist() for k in stats["kept_indices"])  # the newline closes each image
    embeds, mask = hand_pruned(model, kwargs, stats["kept_indices"])
    assert torch.equal(out[:, -NEW:], generate_on_embeds(model, embeds, mask, max_new_tokens=NEW))


def test_onevision_video_is_selected_jointly_over_frames_without_its_newline():
    model, kwargs, counts = case("llava_onevision", [(2, 0, 2)])
    assert counts == [17]
    with torch.no_grad(), idselect.patch(model, keep=16) as handle:  # every candidate, not the newline
        model(**kwargs)
    assert handle.last_stats["kept_indices"][0].tolist() == list(range(16))
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        out = model.generate(**kwargs, max_new_tokens=NEW)
    kept = handle.last_stats["kept_indices"]
    assert kept[0].numel() == 5 and kept[0].max() < 16
    embeds, mask = hand_pruned(model, kwargs, kept)
    assert torch.equal(out[:, -NEW:], generate_on_embeds(model, embeds, mask, max_new_tokens=NEW))


def test_onevision_with_a_cls_tower_is_refused_at_patch_time():
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    cfg = LlavaOnevisionConfig(vision_config=tiny._vision(), text_config=tiny._text(), image_token_index=tiny.IMAGE_TOKEN,
                               video_token_index=tiny.VIDEO_TOKEN, image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]])
    model = LlavaOnevisionForConditionalGeneration(cfg)
    with pytest.raises(TypeError, match=r"llava_onevision with a 'clip_vision_model' vision tower is not supported"):
        idselect.patch(model, keep=4)
    assert "_idselect_handle" not in model.model.__dict__
