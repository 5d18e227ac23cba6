"""LLaVA-1.5 (``llava``): a CLIP (or SigLIP) tower, one image is one medium of its feature
tokens; saliency from the [CLS] attention of the layer that produces the feature layer."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .engine import Media
from .family import CLS_TOWERS, NO_CLS_TOWERS, Family, patch_saliency


class Llava(Family):
    model_type = "llava"
    feature_functions = {"get_image_features": ("image", "vision_tower")}
    modalities = ("image",)
    positions = "1d"
    supported_towers = CLS_TOWERS + NO_CLS_TOWERS
    saliency_towers = CLS_TOWERS

    def describe(self, modality: str, base: nn.Module, named: Dict[str, Any], output: Any,
                 attention: Optional[torch.Tensor]) -> List[Media]:
        strategy = self.feature_strategy(base, named)
        media = []
        for i, features in enumerate(output.pooler_output):
            n = int(features.shape[0])
            sal = None
            if attention is not None and named.get("image_sizes") is None:
                sal = patch_saliency(attention, strategy, i, n)
            media.append(Media("image", n, sal))
        return media

