"""A patched model's feature functions (get_image_features / get_video_features) return what
the unpatched model returns, in every form a caller can ask for: return_dict=True / False /
not given, with config.return_dict true or false, called on the top model or the base model
(issue 28: return_dict=False raised AttributeError on the tuple). The oracle is the unpatched
model's own output."""
import pytest
import torch

import idselect
from idselect.testing.cases import MODELS, case

FAMILIES = list(MODELS)
VIDEO_FAMILIES = ("video_llava", "llava_onevision", "qwen2_5_vl", "qwen3_vl", "qwen3_5")


def feature_call(kwargs, modality):
    """(positional pixels, keyword arguments) of one feature function for a case's inputs."""
    if modality == "video":
        extra = {k: kwargs[k] for k in ("video_grid_thw",) if k in kwargs}
        return kwargs["pixel_values_videos"], extra
    pixels = kwargs.get("pixel_values", kwargs.get("pixel_values_images"))
    extra = {k: kwargs[k] for k in ("image_sizes", "image_grid_thw") if k in kwargs}
    return pixels, extra


def assert_same(got, want, where="output"):
    """Same type and structure, tensors equal exactly."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, torch.Tensor):
        assert torch.equal(got, want), where
    elif isinstance(want, dict):  # ModelOutput
        assert list(got.keys()) == list(want.keys()), where
        for key in want:
            assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{where}: {len(got)} != {len(want)} items"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


FORMS = [("kwarg False", False, None), ("kwarg True", True, None), ("not given", None, None),
         ("config False", None, False), ("config False, kwarg True", True, False)]


@pytest.mark.parametrize("family,modality", [(f, "image") for f in FAMILIES] + [(f, "video") for f in VIDEO_FAMILIES])
@pytest.mark.parametrize("keep", [1.0, 2])
def test_feature_functions_return_what_the_unpatched_model_returns(family, modality, keep):
    model, kwargs, _ = case(family, [(3, 1, 2)])
    pixels, extra = feature_call(kwargs, modality)
    name = f"get_{modality}_features"
    for owner_name, owner in (("top", model), ("base", model.model)):
        if not hasattr(owner, name):  # Video-LLaVA's top model has no get_video_features
            continue
        for form, return_dict, config_value in FORMS:
            given = dict(extra) if return_dict is None else dict(extra, return_dict=return_dict)
            saved = model.config.return_dict
            if config_value is not None:
                model.config.return_dict = config_value
            try:
                with torch.no_grad():
                    want = getattr(owner, name)(pixels, **given)
                    with idselect.patch(model, keep=keep):
                        got = getattr(owner, name)(pixels, **given)
            finally:
                model.config.return_dict = saved
            if return_dict is False or (return_dict is None and config_value is False):
                assert isinstance(want, tuple)  # the oracle exercises the tuple form
            # (with config False, some top models return a tuple even for return_dict=True:
            # their base call reads the config; the oracle says what is right.)
            assert_same(got, want, f"{owner_name}.{name}, return_dict {form}")
