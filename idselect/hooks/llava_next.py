"""LLaVA-NeXT (``llava_next``): anyres. Saliency per crop from each crop's own [CLS], laid out
exactly as the features by the model's own ``pack_image_features``. Newline tokens are never
candidates: when an image is pruned they are dropped and its whole budget goes to image tokens."""
from __future__ import annotations

import sys
import weakref
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .engine import Deferred, Media, upload
from .llava import Llava


class LlavaNext(Llava):
    model_type = "llava_next"

    def describe(self, modality: str, base: nn.Module, named: Dict[str, Any], output: Any,
                 attention: Optional[torch.Tensor]) -> List[Media]:
        strategy = self.feature_strategy(base, named)
        counts = [int(f.shape[0]) for f in output.pooler_output]
        if attention is None:
            return [Media("image", n) for n in counts]
        if strategy == "default":
            attention = attention[:, 1:]
        sizes = named["image_sizes"]
        deferred = PackedSaliency(base, attention, sizes if isinstance(sizes, torch.Tensor) else None,
                                  None if isinstance(sizes, torch.Tensor) else sizes, strategy, counts)
        return [Media("image", n, deferred=deferred, deferred_item=i) for i, n in enumerate(counts)]


#: base model -> (image size, crops, patches per crop, strategy) -> index map (host int64, -1: newline)
_INDEX_MAPS: "weakref.WeakKeyDictionary[nn.Module, Dict[tuple, np.ndarray]]" = weakref.WeakKeyDictionary()


def index_map(base: nn.Module, size: Tuple[int, int], crops: int, patches: int, strategy: str) -> np.ndarray:
    """Where each token of an image of ``size`` comes from in its crops' [crops, patches]
    attention, flattened (-1 for a newline token), laid out by the model's own
    ``pack_image_features`` on host indices; computed once per image size."""
    cache = _INDEX_MAPS.setdefault(base, {})
    key = (tuple(size), crops, patches, strategy)
    if key not in cache:
        indices = torch.arange(crops * patches, dtype=torch.float64).view(crops, patches, 1)
        packed, _ = base.pack_image_features([indices], torch.tensor([list(size)]), strategy,
                                             image_newline=torch.tensor([-1.0], dtype=torch.float64))
        cache[key] = packed[0][:, 0].numpy().astype(np.int64)
    return cache[key]


class PackedSaliency(Deferred):
    """LLaVA-NeXT saliency per crop from each crop's own [CLS], packed as the features are: the
    image sizes are read with the prompt's layout, each size's index map is cached, and one
    gather lays out every image's saliency. Newline positions are never candidates."""

    def __init__(self, base: nn.Module, attention: torch.Tensor, sizes: Optional[torch.Tensor], host_sizes,
                 strategy: str, counts: List[int]):
        super().__init__(sizes)
        self.base, self.attention, self.host_sizes, self.strategy, self.counts = base, attention, host_sizes, strategy, counts

    def resolve(self, host: Optional[np.ndarray]):
        sizes = (host if host is not None else np.asarray(self.host_sizes)).reshape(-1, 2).tolist()
        config = self.base.config
        module = sys.modules[type(self.base).__module__]
        crops = [module.image_size_to_num_patches(image_size=s, grid_pinpoints=config.image_grid_pinpoints,
                                                  patch_size=config.vision_config.image_size) for s in sizes]
        patches = self.attention.shape[1]
        maps, offset = [], 0
        for s, c in zip(sizes, crops):
            m = index_map(self.base, tuple(s), c, patches, self.strategy)
            maps.append(np.where(m >= 0, m + offset, -1))
            offset += c * patches
        lengths = [m.size for m in maps]
        flat_index = np.concatenate(maps)
        (index,) = upload([np.maximum(flat_index, 0)], self.attention.device)
        saliency = self.attention.reshape(-1)[index].split(lengths)
        out = []
        for m, sal, n in zip(maps, saliency, self.counts):
            out.append((sal, m >= 0) if m.size == n else (None, None))  # features the attention does not lay out
        return out
