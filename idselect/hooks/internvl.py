"""InternVL 2.5 / 3 (``internvl``, the -hf checkpoints): InternViT + pixel shuffle + an LLM with
1-D rotary positions (as LLaVA).

Saliency: InternViT's [CLS] attention in the layer producing the feature layer, pooled (mean)
over each group of patches that the pixel shuffle merges into one LLM token - the groups are
formed by the model's own ``pixel_shuffle``. Dynamic tiles: each tile arrives as its own
feature row; tiles whose placeholder tokens follow each other in a row form one image, and
``keep`` counts that image's tokens over all its tiles."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .engine import Media
from .llava import Llava


class InternVL(Llava):
    model_type = "internvl"
    merge_adjacent = ("image",)

    def describe(self, modality: str, base: nn.Module, named: Dict[str, Any], output: Any,
                 attention: Optional[torch.Tensor]) -> List[Media]:
        strategy = self.feature_strategy(base, named)
        features = output.pooler_output  # [tiles, tokens, H]
        tiles, tokens = features.shape[:2]
        if attention is None:
            return [Media("image", tokens) for _ in range(tiles)]
        patches = attention[:, 1:] if strategy == "default" else attention
        side = int(round(patches.shape[1] ** 0.5))
        if side * side != patches.shape[1]:
            return [Media("image", tokens) for _ in range(tiles)]
        grid = patches.reshape(tiles, side, side, 1)
        with torch.no_grad():
            grouped = base.pixel_shuffle(grid, scale_factor=base.config.downsample_ratio)  # [tiles, s', s', group]
        pooled = grouped.reshape(tiles, -1, grouped.shape[-1]).mean(dim=-1)
        if pooled.shape[1] != tokens:
            return [Media("image", tokens) for _ in range(tiles)]
        return [Media("image", tokens, pooled[t]) for t in range(tiles)]
