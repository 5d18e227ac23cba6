"""Qwen2.5-VL and Qwen3-VL (3-D M-RoPE positions; Qwen3-VL's DeepStack features), InternVL
(tiles, pixel shuffle) and LLaVA-OneVision (anyres-max tiles, newlines, videos) specifics."""
import pytest
import torch

import idselect
from idselect.testing.cases import MROPE, case
from idselect.testing import tiny
from idselect.hooks.integration import MEDIA_ATTR

GEN = dict(max_new_tokens=5, do_sample=False)


def kept_columns(kwargs, stats, row=0):
    """Original columns of the LLM input that survive pruning (text + kept media tokens)."""
    ids = kwargs["input_ids"][row]
    media_cols = ((ids == tiny.IMAGE_TOKEN) | (ids == tiny.VIDEO_TOKEN)).nonzero().squeeze(1)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[media_cols] = False
    start = 0
    counts = [int(n) for n in stats["media_counts"]]
    for n, kept in zip(counts, stats["kept_indices"]):
        keep[media_cols[start:start + n][kept]] = True
        start += n
    return keep


def record_positions(model):
    seen = []
    hook = model.model.language_model.rotary_emb.register_forward_pre_hook(lambda m, a: seen.append(a[1].clone()))
    return seen, hook


@pytest.mark.parametrize("family", MROPE)
def test_qwen_decode_positions_match_positions_computed_by_hand(family):
    model, kwargs, counts = case(family, [(3, 1, 4)])
    unpruned, _ = model.model.get_rope_index(kwargs["input_ids"], kwargs["mm_token_type_ids"], kwargs["image_grid_thw"],
                                             kwargs["video_grid_thw"], attention_mask=kwargs["attention_mask"])
    seen, hook = record_positions(model)
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        out = model.generate(**kwargs, **GEN)
    hook.remove()
    stats = dict(handle.last_stats, media_counts=counts)
    keep = kept_columns(kwargs, stats)
    expected_prefill = unpruned[:, 0, keep]  # every kept token keeps its (t, h, w) position
    # The last max_new_tokens calls are the prefill and the decode steps (before them, Qwen3.5's
    # relevance runs its linear-attention layers on the unpruned prompt).
    seen = seen[-GEN["max_new_tokens"]:]
    prefill = seen[0][-3:, 0]  # M-RoPE rows (a leading text row, if any, only shapes the mask)
    assert torch.equal(prefill, expected_prefill)
    assert prefill.shape[1] == int(keep.sum()) == stats["sequence_length_after"]
    start = int(unpruned[:, 0].max()) + 1  # decoding continues after the largest position
    decode = [p[-3:, 0, -1] for p in seen[1:]]
    assert len(decode) == GEN["max_new_tokens"] - 1
    for t, p in enumerate(decode):
        assert p.tolist() == [start + t] * 3
    # rope_deltas describe the pruned cache: next position = cache length + delta.
    assert int(model.model.rope_deltas[0]) == start - stats["sequence_length_after"]


@pytest.mark.parametrize("family", [f for f in MROPE if f != "qwen3_5"])  # Qwen3.5: linear layers take no key mask
def test_qwen_generate_equals_masked_unpruned_forward(family):
    """Pruning with original M-RoPE positions equals the unpatched model on the full sequence
    with the removed tokens masked out as keys: an independent check of prefill and decode."""
    model, kwargs, counts = case(family, [(3, 1, 4)])
    with torch.no_grad(), idselect.patch(model, keep=5, importance="relevance") as handle:
        result = model.generate(**kwargs, **GEN, output_logits=True, return_dict_in_generate=True)
    stats = dict(handle.last_stats, media_counts=counts)
    seq = result.sequences
    n_new = seq.shape[1] - kwargs["input_ids"].shape[1]
    keep = torch.cat([kept_columns(kwargs, stats), torch.ones(n_new, dtype=torch.bool)])
    mm = torch.cat([kwargs["mm_token_type_ids"], torch.zeros(1, n_new, dtype=torch.long)], dim=1)
    positions, _ = model.model.get_rope_index(seq, mm, kwargs["image_grid_thw"], kwargs["video_grid_thw"])
    L = seq.shape[1]
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool)) & keep[None, :]
    mask4d = torch.zeros(1, 1, L, L).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with torch.no_grad():
        logits = model(input_ids=seq, position_ids=positions, attention_mask=mask4d,
                       pixel_values=kwargs["pixel_values"], image_grid_thw=kwargs["image_grid_thw"],
                       pixel_values_videos=kwargs["pixel_values_videos"], video_grid_thw=kwargs["video_grid_thw"]).logits
    step_logits = logits[:, -n_new - 1:-1]
    torch.testing.assert_close(torch.stack(result.logits, dim=1), step_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", MROPE)
def test_qwen_auto_importance_is_relevance_and_saliency_is_refused(family):
    model, kwargs, _ = case(family, [(2, 1, 2)])
    with torch.no_grad(), idselect.patch(model, keep=4) as handle:
        model(**kwargs)
    assert handle.last_stats["visual_tokens_after"] == 8  # image + video, 4 each
    for importance in ("saliency", "unified"):  # refused at patch time, naming the tower
        with pytest.raises(ValueError, match=rf"importance='{importance}' needs \[CLS\] saliency.*{family}_vision"):
            idselect.patch(model, keep=4, importance=importance)
    assert "_idselect_handle" not in model.model.__dict__


@pytest.mark.parametrize("family", MROPE)
def test_qwen_video_is_selected_jointly_over_frames(family):
    model, kwargs, counts = case(family, [(2, 0, 2)])
    with torch.no_grad(), idselect.patch(model, keep=10) as handle:
        model(**kwargs)
    # One budget for the whole video (2 temporal groups of 16 tokens), not one per frame.
    assert counts == [32] and handle.last_stats["visual_tokens_after"] == 10
    assert handle.last_stats["kept_indices"][0].numel() == 10


def test_internvl_saliency_pools_cls_attention_over_pixel_shuffle_groups():
    model = tiny.tiny_internvl()
    model.model.vision_tower.config._attn_implementation = "eager"
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad(), idselect.patch(model, keep=4):
        out = model.model.get_image_features(pixel_values=pixels, return_dict=True)
        eager = model.model.vision_tower(pixel_values=pixels, output_attentions=True)
    media = getattr(out, MEDIA_ATTR)
    cls = eager.attentions[-1][:, :, 0, 1:].mean(dim=1).reshape(2, 8, 8)  # last layer, 8 x 8 patches
    # By hand: the pixel shuffle (0.5) merges each 2 x 2 block of patches into one token,
    # tokens in row-major order of the 4 x 4 grid.
    naive = cls.reshape(2, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(2, 16, 4).mean(-1)
    assert [m.num_tokens for m in media] == [16, 16]
    for t, m in enumerate(media):
        torch.testing.assert_close(m.saliency, naive[t], atol=1e-6, rtol=1e-5)


def test_internvl_keep_counts_an_image_over_all_its_tiles():
    model, kwargs, counts = case("internvl", [(2, 2, 2)])  # images of 2 and 1 tiles
    assert counts == [32, 16]
    with torch.no_grad(), idselect.patch(model, keep=6) as handle:
        model(**kwargs)
    assert handle.last_stats["visual_tokens_after"] == 12
    assert [k.numel() for k in handle.last_stats["kept_indices"]] == [6, 6]
