"""docs/hooks.md, "Adding a family": a family written there as one file (a Family subclass and
a registry entry) is all the hooks need. Written here from the doc's recipe for LLaVA-1.5, it
must prune exactly as the shipped family does, in forward and generate()."""
from typing import Any, Dict, List, Optional

import pytest
import torch

import idselect
from idselect.hooks import registry
from idselect.hooks.engine import Media
from idselect.hooks.family import CLS_TOWERS, Family
from idselect.testing.cases import case


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


def test_registry_lists_one_family_per_model_type():
    assert idselect.supported_model_types() == tuple(sorted(registry.REGISTRY))
    for model_type, family in registry.REGISTRY.items():
        assert isinstance(family, Family) and family.model_type == model_type
        assert family.positions in ("1d", "mrope")
        assert set(m for m, _ in family.feature_functions.values()) <= set(family.modalities)
