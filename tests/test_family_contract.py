"""docs/hooks.md, "Adding a family": a family written there as one file (a Family subclass and
a registry entry) is all the hooks need. Written here from the doc's recipe for LLaVA-1.5, it
must prune exactly as the shipped family does, in forward and generate()."""
import inspect
from typing import Any, Dict, List, Optional

import pytest
import torch

import idselect
from idselect.hooks import registry
from idselect.hooks.engine import Media
from idselect.hooks.family import CLS_TOWERS, Family
from idselect.testing.cases import MODELS, MROPE, case


class RecipeLlava(Family):
    model_type = "llava"
    feature_functions = {"get_image_features": ("image", "vision_tower")}
    modalities = ("image",)
    media_inputs = ("pixel_values",)
    positions = "1d"
    supported_towers = CLS_TOWERS
    saliency_towers = CLS_TOWERS

    def describe(self, modality: str, base, named: Dict[str, Any], output: Any,
                 attention: Optional[torch.Tensor]) -> List[Media]:
        media = []
        for i, features in enumerate(output.pooler_output):
            saliency = None if attention is None else attention[i, 1:]  # [CLS] dropped ("default" strategy)
            media.append(Media("image", int(features.shape[0]), saliency))
        return media


@pytest.mark.parametrize("importance", ["saliency", "unified"])
def test_a_family_from_the_recipe_prunes_as_the_shipped_one(monkeypatch, importance):
    model, kwargs, _ = case("llava", [(3, 2, 4), (1, 0, 2)])
    assert model.config.vision_feature_select_strategy == "default"
    results = []
    for family in (registry.REGISTRY["llava"], RecipeLlava()):
        monkeypatch.setitem(registry.REGISTRY, "llava", family)
        with torch.no_grad(), idselect.patch(model, keep=3, importance=importance) as handle:
            logits = model(**kwargs).logits
            kept = [k.tolist() for k in handle.last_stats["kept_indices"]]
            generated = model.generate(**kwargs, max_new_tokens=5, do_sample=False)
        results.append((logits, kept, generated))
    (logits_a, kept_a, gen_a), (logits_b, kept_b, gen_b) = results
    assert kept_a == kept_b and len(kept_a) == 2
    assert torch.equal(logits_a, logits_b)
    assert torch.equal(gen_a, gen_b)


@pytest.mark.parametrize("model_type", sorted(registry.REGISTRY))
def test_each_declaration_matches_the_installed_model(model_type):
    """What a family declares, against the model of the installed transformers: an input that
    carries media but is missing from media_inputs would leave such calls unpruned, silently."""
    family = registry.REGISTRY[model_type]
    model = MODELS[model_type](0)
    base = family.base(model)
    takes = set(inspect.signature(base.forward).parameters)
    media_params = {name for name in takes if name.startswith("pixel_values")}
    assert media_params <= set(family.media_inputs), (media_params, family.media_inputs)
    assert set(family.media_inputs) & takes, family.media_inputs
    for name, (modality, tower) in family.feature_functions.items():
        assert callable(getattr(base, name)), name
        assert modality in family.modalities
        assert tower is None or isinstance(getattr(base, tower), torch.nn.Module), tower
    for modality in family.modalities:
        assert isinstance(family.placeholder_token_id(base.config, modality), int), modality
    assert family.positions == ("mrope" if model_type in MROPE else "1d")
    assert family.has_saliency(model) == (family.vision_model_type(model) in CLS_TOWERS and model_type != "llava_onevision")
