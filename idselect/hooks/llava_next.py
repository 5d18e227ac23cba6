"""LLaVA-NeXT (``llava_next``): anyres. Saliency per crop from each crop's own [CLS], laid out
exactly as the features by the model's own ``pack_image_features``. Newline tokens are never
candidates: when an image is pruned they are dropped and its whole budget goes to image tokens."""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .engine import Media
from .llava import Llava


class LlavaNext(Llava):
    model_type = "llava_next"

    def describe(self, modality: str, base: nn.Module, named: Dict[str, Any], output: Any,
                 attention: Optional[torch.Tensor]) -> List[Media]:
        strategy = self.feature_strategy(base, named)
        features = output.pooler_output
        if attention is None:
            return [Media("image", int(f.shape[0])) for f in features]
        if strategy == "default":
            attention = attention[:, 1:]
        image_sizes = named["image_sizes"]
        module = sys.modules[type(base).__module__]
        crops = [module.image_size_to_num_patches(image_size=s, grid_pinpoints=base.config.image_grid_pinpoints,
                                                  patch_size=base.config.vision_config.image_size) for s in image_sizes]
        per_image = torch.split(attention[..., None], crops, dim=0)
        # Newline positions come out as -1 (attention probabilities are >= 0).
        sentinel = torch.tensor([-1.0], device=attention.device)
        packed, _ = base.pack_image_features(list(per_image), image_sizes, strategy, image_newline=sentinel)
        media = []
        for f, p in zip(features, packed):
            values = p[:, 0]
            if values.numel() != f.shape[0]:
                media.append(Media("image", int(f.shape[0])))
                continue
            candidates = values >= 0
            media.append(Media("image", int(f.shape[0]), values.clamp_min(0), candidates))
        return media
