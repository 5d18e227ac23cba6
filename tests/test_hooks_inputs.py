"""Inputs transformers' own model tests build and ours did not (issue 28): placeholder ids of a
modality the call brings no media for, and attention masks that hide part of an image. The
oracle is the unpatched model (identity) or the unpatched model on the hand-pruned prompt."""
import numpy as np
import pytest
import torch

import idselect
from idselect.testing import tiny
from idselect.testing.cases import MODELS, build, case
from idselect.testing.oracles import hand_pruned


@pytest.mark.parametrize("family", ["llava_onevision", "video_llava"])
@pytest.mark.parametrize("keep", [1.0, 3])
def test_video_placeholder_ids_without_videos_are_text(family, keep):
    """A prompt whose text holds the video placeholder id while only images are passed runs as
    the unpatched model runs it (the id is text for that call); pruned, the images still prune."""
    model = MODELS[family](0)
    kwargs, _ = build(family, model, [(2, 1, 3)])
    kwargs = {k: v for k, v in kwargs.items() if "video" not in k}
    ids = kwargs["input_ids"].clone()
    keep_cols = ids[0] != tiny.VIDEO_TOKEN  # the video's placeholders go with the video
    ids[0, 1] = tiny.VIDEO_TOKEN  # one stray video id in the text
    kwargs["input_ids"] = ids[:, keep_cols]
    kwargs["attention_mask"] = kwargs["attention_mask"][:, keep_cols]
    with torch.no_grad():
        try:
            want = model(**kwargs).logits
        except Exception as exc:  # the unpatched model refuses: so may the patched one, nothing more
            with idselect.patch(model, keep=keep), pytest.raises(type(exc)):
                model(**kwargs)
            return
        with idselect.patch(model, keep=keep) as handle:
            got = model(**kwargs).logits
            stats = handle.last_stats
    if keep == 1.0:
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    else:
        assert stats["visual_tokens_after"] < stats["visual_tokens_before"]
        assert got.shape[1] == stats["sequence_length_after"]


@pytest.mark.parametrize("keep", [1, 2])
def test_masked_image_tokens_are_never_kept(keep):
    """LLaVA-NeXT rows whose visible tokens are some of an image's tokens, everything else
    masked (as transformers' LLaVA-NeXT tests build them): only visible tokens are kept, the LLM
    never gets an empty row, and the logits are the unpatched model's on the hand-pruned prompt."""
    model = MODELS["llava_next"](0)
    kwargs, counts = build("llava_next", model, [(2, 1, 3), (1, 1, 2)])
    image = kwargs["input_ids"] == tiny.IMAGE_TOKEN
    mask = torch.zeros_like(kwargs["attention_mask"])
    for row in range(mask.shape[0]):
        cols = image[row].nonzero().squeeze(1)
        mask[row, cols[3:9]] = 1  # six visible image tokens, the rest of the row masked
    kwargs["attention_mask"] = mask
    with torch.no_grad(), idselect.patch(model, keep=keep) as handle:
        got = model(**kwargs).logits
        kept = handle.last_stats["kept_indices"]
    assert [k.numel() for k in kept] == [keep, keep]
    for k in kept:
        assert all(3 <= i < 9 for i in k.tolist()), k
    embeds, pruned_mask = hand_pruned(model, kwargs, kept)
    with torch.no_grad():
        want = model(inputs_embeds=embeds, attention_mask=pruned_mask).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_fully_masked_batch_is_refused_clearly():
    model = MODELS["llava"](0)
    kwargs, _ = build("llava", model, [(2, 1, 3)])
    kwargs["attention_mask"] = torch.zeros_like(kwargs["attention_mask"])
    with torch.no_grad(), idselect.patch(model, keep=2):
        with pytest.raises(ValueError, match="masks every token of every row"):
            model(**kwargs)


def test_static_cache_without_a_mask_continues_the_pruned_cache():
    """generate() given no attention mask hands a static cache's decode steps 4-D masks only:
    they continue the pruned cache with new tokens, as with a dynamic cache."""
    model = MODELS["llava"](0)
    kwargs, _ = build("llava", model, [(2, 1, 3)])
    kwargs.pop("attention_mask")
    with torch.no_grad(), idselect.patch(model, keep=3):
        dynamic = model.generate(**kwargs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        static = model.generate(**kwargs, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                                cache_implementation="static")
    assert torch.equal(static, dynamic)


@pytest.mark.parametrize("family", ["llava", "llava_next"])
@pytest.mark.parametrize("keep", [1, 2])
def test_images_masked_whole_in_every_row_are_dropped(family, keep):
    """Every image of the batch hidden by the attention mask (transformers'
    test_generate_with_and_without_position_ids flips a mask so that it covers the images):
    the call has media to prune and no candidate. It used to stop with torch.cat()'s "expected a
    non-empty list of Tensors" from the empty candidate table; the masked images are dropped and
    the rest runs. Oracle: the unpatched model on the same prompt, where the masked images
    reach no real token: its logits at the real columns and its greedy tokens."""
    model = MODELS[family](0)
    kwargs, _ = build(family, model, [(2, 1, 3), (1, 1, 2)])
    mask = kwargs["attention_mask"].clone()
    mask[kwargs["input_ids"] == tiny.IMAGE_TOKEN] = 0
    kwargs["attention_mask"] = mask
    gen = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    with torch.no_grad():
        want = model(**kwargs).logits
        want_tokens = model.generate(**kwargs, **gen)
    with torch.no_grad(), idselect.patch(model, keep=keep) as handle:
        got = model(**kwargs).logits
        stats = handle.last_stats
        got_tokens = model.generate(**kwargs, **gen)
    assert stats["visual_tokens_after"] == 0
    assert [k.numel() for k in stats["kept_indices"]] == [0, 0]
    for row in range(mask.shape[0]):
        real = mask[row].bool()
        width = int(real.sum())
        torch.testing.assert_close(got[row, -width:], want[row, real], rtol=1e-5, atol=1e-5)
    assert torch.equal(got_tokens[:, -4:], want_tokens[:, -4:])


@pytest.mark.parametrize("family", list(MODELS))
def test_hidden_states_asked_by_one_call_do_not_change_the_next(family):
    """A call that asks for hidden states (output_hidden_states=True, or a list of layers as
    5.2x allows), then plain calls. From 5.2x a feature function asks its tower for the feature
    layer's hidden state alone unless the caller asks for more, so the tower's hidden states
    that held the saliency layer's input in a call with output_hidden_states=True do not in the
    next plain call: generate() after such a call raised "needs visual saliency, which this
    model did not provide" (transformers' test_can_capture_specific_layers_hidden_states found
    it). Oracle: the same patched model before those calls (two computations of one model
    agree), tokens and logits."""
    model, kwargs, _ = case(family, [(2, 1, 3)])
    gen = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    # Layers as transformers' test picks them: every other hidden state of the LLM, and the last
    # (they reach the vision tower too; the unpatched model says which lists the family takes).
    layers = [*range(0, model.config.get_text_config().num_hidden_layers + 1, 2), -1]
    asks = [True, layers, np.array(layers), 2, True, None]
    for ask in asks[1:4]:
        try:
            with torch.no_grad():
                model(**kwargs, output_hidden_states=ask)
        except (TypeError, IndexError, ValueError):
            asks = [a for a in asks if a is not ask]
    with torch.no_grad(), idselect.patch(model, keep=2) as handle:
        want_tokens = model.generate(**kwargs, **gen)
        want_logits = model(**kwargs).logits
        assert handle.last_stats["visual_tokens_after"] < handle.last_stats["visual_tokens_before"]
        for asked in asks:
            if asked is not None:
                assert torch.equal(model(**kwargs, output_hidden_states=asked).logits, want_logits), asked
            assert torch.equal(model.generate(**kwargs, **gen), want_tokens), asked
            assert torch.equal(model(**kwargs).logits, want_logits), asked


def test_layer_one_is_not_true():
    """output_hidden_states=1 (hidden state 1 alone) after True (all of them), where the
    saliency layer's input is hidden state 0: 1 == True in Python, so a proof keyed on the raw
    value made with True was taken for 1 and the call found no saliency. Keys tell them apart
    (idselect.hooks.integration.hidden_states_request); oracle: the patched model before."""
    from idselect.hooks.integration import UNREADABLE, hidden_states_request

    assert hidden_states_request(1) == ("layers", 1) != hidden_states_request(True)
    assert hidden_states_request(np.array([2, 3])) == hidden_states_request((2, 3)) == ("layers", 2, 3)
    assert hidden_states_request(None) is None and hidden_states_request(object()) is UNREADABLE
    model, kwargs, _ = case("llava", [(2, 1, 3)])
    model.config.vision_feature_layer = 1
    with torch.no_grad():
        model(**kwargs, output_hidden_states=1)  # the unpatched model takes it
    with torch.no_grad(), idselect.patch(model, keep=2):
        want = model(**kwargs).logits
        for asked in (True, 1, True, 1):
            assert torch.equal(model(**kwargs, output_hidden_states=asked).logits, want), asked
