"""idselect.patch: option validation at patch() time, vision towers, double patching, labels,
deep copies, torch.compile, zero-score diagnostics and statistics."""
import copy
import time

import numpy as np
import pytest
import torch

import idselect
from idselect.testing.cases import build, case
from idselect.testing import tiny
from idselect.testing.oracles import generate_on_embeds, hand_pruned

NEW = 4


@pytest.mark.parametrize("options,error,message", [
    ({"gamma": "20"}, TypeError, r"gamma must be a real number, got gamma=.20. \(a str\)"),
    ({"alpha": "0.5"}, TypeError, r"alpha must be a real number, got str '0.5'"),
    ({"gamma": float("inf")}, ValueError, r"idselect.patch: gamma must be a finite number >= 0, got gamma=inf"),
    ({"gamma": float("nan")}, ValueError, r"idselect.patch: gamma must be a finite number >= 0, got gamma=nan"),
    ({"alpha": 1.5}, ValueError, r"alpha must be in \[0, 1\], got alpha=1.5"),
    ({"relevance_rope": "no"}, TypeError, r"relevance_rope must be True or False, got str 'no'"),
    ({"relevance_layer": 1.0}, TypeError, r"relevance_layer must be an int, got float 1.0"),
    ({"relevance_layer": 2}, ValueError, r"relevance_layer must be in \[0, 1\] \(the LLM has 2 layers\), got relevance_layer=2"),
    ({"keep": torch.tensor([4, 5])}, TypeError, r"keep must be an int or a float, got keep=tensor\(\[4, 5\]\) \(a Tensor\)"),
    ({"keep": True}, TypeError, r"keep must be an int or a float, got keep=True \(a bool\)"),
    ({"keep": -3}, ValueError, r"keep must be >= 1 tokens, got keep=-3"),
    ({"keep": 64.0}, ValueError, r"a fractional keep must be in \(0, 1\], got keep=64.0"),
])
def test_bad_options_name_argument_and_value_at_patch_time(options, error, message):
    model, _, _ = case("llava", [(1, 1, 1)])
    options = {"keep": 4, **options}
    with pytest.raises(error, match=message):
        idselect.patch(model, **options)
    assert "_idselect_handle" not in model.model.__dict__ and "forward" not in model.model.__dict__


@pytest.mark.parametrize("keep,expected", [(np.int64(5), 5), (torch.tensor(5), 5), (np.float32(0.25), 4),
                                           (torch.tensor(0.25), 4)])
def test_numpy_and_tensor_keeps_mean_what_python_numbers_mean(keep, expected):
    model, kwargs, counts = case("llava", [(2, 1, 3)])
    with torch.no_grad(), idselect.patch(model, keep=keep) as handle:
        model(**kwargs)
    assert handle.last_stats["visual_tokens_after"] == expected == min(counts[0], expected)


def test_patching_the_base_model_is_refused_and_double_patching_too():
    model, kwargs, _ = case("llava", [(2, 1, 3)])
    pristine = copy.deepcopy(model)
    with pytest.raises(TypeError, match=r"LlavaModel is the base model; patch the \.\.\.ForConditionalGeneration"):
        idselect.patch(model.model, keep=4)
    handle = idselect.patch(model, keep=4)
    with pytest.raises(RuntimeError, match="already patched"):
        idselect.patch(model, keep=4)
    handle.remove()
    for module in (model, model.model, model.model.language_model):
        assert not any(k in module.__dict__ for k in ("forward", "generate", "get_image_features", "_idselect_handle"))
    with torch.no_grad():
        assert torch.equal(model(**kwargs).logits, pristine(**kwargs).logits)


def test_labels_are_refused_with_a_clear_message():
    model, kwargs, _ = case("llava", [(2, 1, 3)])
    with idselect.patch(model, keep=4), pytest.raises(ValueError, match=r"labels= .* not supported on a patched model"):
        model(**kwargs, labels=kwargs["input_ids"])
    with torch.no_grad(), idselect.patch(model, keep=16):  # nothing pruned: nothing to refuse
        model(**kwargs, labels=kwargs["input_ids"])


def test_deepcopy_of_a_patched_model_is_refused():
    model, _, _ = case("llava", [(1, 1, 1)])
    with idselect.patch(model, keep=4):
        with pytest.raises(TypeError, match=r"deepcopy of a patched model.*remove\(\), copy the model, then idselect.patch each copy"):
            copy.deepcopy(model)
    copy.deepcopy(model)  # fine once removed


def test_llava_with_siglip_tower_uses_relevance_and_refuses_saliency():
    model = tiny.tiny_llava(tower="siglip")
    kwargs, counts = build("llava", model, [(3, 1, 4), (5, 1, 2)])
    for importance in ("saliency", "unified"):
        with pytest.raises(ValueError, match=rf"importance='{importance}' needs \[CLS\] saliency.*siglip_vision_model"):
            idselect.patch(model, keep=5, importance=importance)
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        assert handle.options.importance == "relevance"
        out = model.generate(**kwargs, max_new_tokens=NEW)
    embeds, mask = hand_pruned(model, kwargs, handle.last_stats["kept_indices"])
    assert torch.equal(out[:, -NEW:], generate_on_embeds(model, embeds, mask, max_new_tokens=NEW))


def test_llava_with_an_unsupported_tower_is_refused_at_patch_time():
    from transformers import LlavaConfig, LlavaForConditionalGeneration, PixtralVisionConfig

    vision = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                 image_size=28, patch_size=7, head_dim=8)
    model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=tiny._text(), image_token_index=100))
    with pytest.raises(TypeError, match=r"llava with a 'pixtral' vision tower is not supported"):
        idselect.patch(model, keep=4)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "internvl"])
def test_torch_compile_of_a_patched_model_prunes_and_fullgraph_says_why_not(family):
    torch._dynamo.reset()
    model, kwargs, _ = case(family, [(3, 1, 4)])
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        eager = model(**kwargs).logits
        compiled = torch.compile(model)(**kwargs).logits
        assert compiled.shape == eager.shape and compiled.shape[1] == handle.last_stats["sequence_length_after"]
        torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
        torch._dynamo.reset()
        with pytest.raises(Exception, match=r"idselect: pruning gives the LLM a sequence whose length depends on the data"):
            torch.compile(model, fullgraph=True)(**kwargs)


def test_zero_score_picks_count_picks_after_everything_was_suppressed():
    model, kwargs, counts = case("llava", [(2, 2, 3)])
    with torch.no_grad(), idselect.patch(model, keep=5, gamma=0.0) as handle:
        model(**kwargs)
    # gamma = 0: every weight is 1, so the first pick suppresses every other score to 0.
    assert handle.last_stats["zero_score_picks"] == [4, 4]
    with torch.no_grad(), idselect.patch(model, keep=5, gamma=20.0) as handle:
        model(**kwargs)
    assert all(0 <= z <= 4 for z in handle.last_stats["zero_score_picks"])


def test_statistics_are_floats_within_the_call_and_a_copy():
    model, kwargs, _ = case("llava", [(2, 1, 3)])
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        assert handle.last_stats == {}
        started = time.perf_counter()
        model(**kwargs)
        wall_ms = (time.perf_counter() - started) * 1e3
    stats = handle.last_stats
    assert isinstance(stats["importance_ms"], float) and isinstance(stats["select_ms"], float)
    # select_ms covers importance and selection (so it includes importance_ms), inside the call.
    assert 0 < stats["importance_ms"] <= stats["select_ms"] < wall_ms
    assert type(stats) is dict
    stats["select_ms"] = -1.0  # the caller's copy: the handle's statistics stay as they were
    assert handle.last_stats["select_ms"] > 0


def test_topk_selection_keeps_the_highest_importance_tokens():
    """selection="topk" (the no-diversity baseline) keeps exactly the k best saliency scores."""
    model, kwargs, counts = case("llava", [(2, 1, 3)])
    with torch.no_grad(), idselect.patch(model, keep=5, importance="saliency", selection="topk") as handle:
        model(**kwargs)
        features = model.model.get_image_features(pixel_values=kwargs["pixel_values"], return_dict=True)
    saliency = getattr(features, "idselect_media")[0].saliency
    expected = saliency.sort(descending=True, stable=True).indices[:5].sort().values
    assert torch.equal(handle.last_stats["kept_indices"][0], expected)
    with torch.no_grad(), idselect.patch(model, keep=5, importance="saliency") as handle:
        model(**kwargs)
    assert not torch.equal(handle.last_stats["kept_indices"][0], expected)  # the diversity step matters here
    with pytest.raises(ValueError, match=r"selection must be one of \('id', 'topk'\), got 'random'"):
        idselect.patch(model, keep=5, selection="random")


def test_media_prefills_counts_the_prefills_that_set_last_stats():
    model, kwargs, _ = case("llava", [(2, 1, 3)])
    text_only = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        model.generate(**kwargs, max_new_tokens=2)
        assert handle.media_prefills == 1
        model.generate(**text_only, max_new_tokens=2)
        assert handle.media_prefills == 1
        model(**kwargs)
        assert handle.media_prefills == 2
