"""The lmms-eval plugin's parts that need no lmms-eval: model_args parsing, run statistics,
and the patch + generate() record on a tiny LLaVA (idselect.lmms.options)."""
import pytest
import torch

from idselect.testing import tiny
from idselect.lmms.options import PatchedModel, RunStats, parse_keep, parse_options, pop_options


@pytest.mark.parametrize("value, expected", [
    (64, 64), ("64", 64), ("+8", 8), (1, 1), (0.25, 0.25), ("0.25", 0.25), (1.0, 1.0), ("1.0", 1.0),
    ("all", None), ("ALL", None), (" all ", None),
])
def test_keep_values(value, expected):
    parsed = parse_keep(value)
    assert parsed == expected and type(parsed) is type(expected)


@pytest.mark.parametrize("value", [0, -3, "0", "-3", 1.5, "64.0", 0.0, "lots", "", True, False, float("nan"), [64]])
def test_bad_keep_names_argument_and_value(value):
    with pytest.raises(ValueError, match=r"keep must be .* got keep=" + __import__("re").escape(repr(value))):
        parse_keep(value)


def test_keep_is_required():
    with pytest.raises(ValueError, match="keep is required"):
        pop_options({"pretrained": "x"})


@pytest.mark.parametrize("name, value", [
    ("gamma", -1.0), ("gamma", "inf"), ("gamma", "sharp"), ("gamma", True), ("alpha", 1.5), ("alpha", "x"),
    ("relevance_layer", -1), ("relevance_layer", 1.5), ("relevance_layer", "two"), ("relevance_layer", True),
    ("relevance_rope", "maybe"), ("relevance_rope", 2), ("importance", "unifed"), ("selection", "diverse"),
    ("selection", "ID"),
])
def test_bad_option_names_argument_and_value(name, value):
    with pytest.raises(ValueError, match=f"{name} must be .* got {name}=" + __import__("re").escape(repr(value))):
        parse_options(keep=64, **{name: value})


def test_options_as_lmms_eval_passes_them():
    # lmms-eval turns "true" into True, "2" into 2, "30" into 30 and leaves names as strings.
    options = parse_options(keep=16, gamma=30, importance="relevance", alpha="0.25", relevance_layer="2",
                            relevance_rope="true")
    assert options.patch_kwargs() == {"keep": 16, "gamma": 30.0, "importance": "relevance", "alpha": 0.25,
                                      "relevance_layer": 2, "relevance_rope": True, "selection": "id"}
    assert parse_options(keep=16, selection="topk").patch_kwargs()["selection"] == "topk"
    everything = parse_options(keep="all")
    assert everything.patch_kwargs()["keep"] == 1.0 and everything.settings()["keep"] == "all"


def test_pop_options_leaves_the_wrapped_models_args():
    kwargs = {"pretrained": "p", "keep": "8", "gamma": 10, "dtype": "float32"}
    assert pop_options(kwargs).keep == 8 and kwargs == {"pretrained": "p", "dtype": "float32"}


def test_run_stats_sum_and_reduce():
    stats = RunStats()
    stats.add_prefill({"visual_tokens_before": 32, "visual_tokens_after": 8, "importance_ms": 1.0, "select_ms": 2.5})
    earlier = stats.copy()
    stats.add_prefill({"visual_tokens_before": 16, "visual_tokens_after": 4, "importance_ms": 0.5, "select_ms": 1.0})
    stats.generate_calls = 3
    assert stats.as_dict() == {"generate_calls": 3, "prefills": 2, "visual_tokens_before": 48.0,
                               "visual_tokens_after": 12.0, "importance_ms": 1.5, "select_ms": 3.5}
    assert stats.minus(earlier).as_dict()["visual_tokens_before"] == 16.0
    doubled = stats.summed_over_processes(lambda values: [2 * v for v in values])  # two equal processes
    assert doubled.as_dict() == {key: 2 * value for key, value in stats.as_dict().items()}
    assert stats.summed_over_processes(None).as_dict() == stats.as_dict()


def _image_prompt(model):
    ids, mask = tiny.left_pad([tiny.prompt([1, 5], 16, [7, 9]), tiny.prompt([1], 16, [3])])
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def test_patched_model_records_every_generate_and_restores():
    model = tiny.tiny_llava()
    inputs = _image_prompt(model)
    with torch.no_grad():
        unpatched = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        patched = PatchedModel(model, parse_options(keep=4))
        model.generate(**inputs, max_new_tokens=3, do_sample=False)
        text_ids, text_mask = tiny.left_pad([[1, 5, 7]])
        model.generate(input_ids=text_ids, attention_mask=text_mask, max_new_tokens=2, do_sample=False)
    # Two calls, one of them with images: 2 x 16 tokens before, 2 x 4 after.
    stats = patched.stats.as_dict()
    assert (stats["generate_calls"], stats["prefills"]) == (2, 1)
    assert (stats["visual_tokens_before"], stats["visual_tokens_after"]) == (32.0, 8.0)
    assert stats["select_ms"] > 0
    patched.remove()
    patched.remove()  # a second call does nothing
    assert "generate" not in model.__dict__ and getattr(model.model, "_idselect_handle", None) is None
    with torch.no_grad():
        assert torch.equal(model.generate(**inputs, max_new_tokens=3, do_sample=False), unpatched)


def test_patched_model_keeps_generate_errors():
    model = tiny.tiny_llava()
    patched = PatchedModel(model, parse_options(keep=4))
    with pytest.raises(Exception):
        model.generate(input_ids=torch.tensor([[1, 2]]), pixel_values=torch.randn(1, 3, 5, 5), max_new_tokens=1)
    with pytest.raises(RuntimeError, match="generate\\(\\) failed during the evaluation"):
        patched.raise_if_failed()
    patched.raise_if_failed()  # reported once
    patched.remove()


def test_task_images_are_the_drawn_ones(tmp_path):
    """tests/lmms_task's PNGs are what its utils.draw_images makes (the recipe of the data)."""
    import importlib.util
    import os

    import numpy as np
    from PIL import Image

    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lmms_task")
    spec = importlib.util.spec_from_file_location("lmms_task_utils", os.path.join(folder, "utils.py"))
    task_utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(task_utils)
    task_utils.draw_images(str(tmp_path))
    for name in task_utils.IMAGES:
        assert np.array_equal(np.asarray(Image.open(tmp_path / name)), np.asarray(Image.open(os.path.join(folder, name))))
