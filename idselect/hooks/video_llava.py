"""Video-LLaVA (``video_llava``): images as in LLaVA-1.5 from its image tower; each video is
one medium over all its frames (joint selection; ``keep`` counts tokens per video), saliency
from its video tower's [CLS] per frame."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .engine import Media
from .family import patch_saliency
from .llava import Llava


class VideoLlava(Llava):
    model_type = "video_llava"
    feature_functions = {"get_image_features": ("image", "image_tower"),
                         "get_video_features": ("video", "video_tower")}
    modalities = ("image", "video")
    # 5.17 takes images only as pixel_values_images (docs/hooks.md, "Supported transformers versions")
    media_inputs = ("pixel_values", "pixel_values_images", "pixel_values_videos")

    def describe(self, modality: str, base: nn.Module, named: Dict[str, Any], output: Any,
                 attention: Optional[torch.Tensor]) -> List[Media]:
        if modality == "video":
            num_videos, frames = named["pixel_values_videos"].shape[:2]
            per_frame = output.pooler_output.shape[1]  # [CLS] kept: attention is [V*F, T] as is
            media = []
            for v in range(num_videos):
                sal = None
                if attention is not None and attention.shape[1] == per_frame:
                    sal = attention[v * frames : (v + 1) * frames].reshape(-1)
                media.append(Media("video", frames * per_frame, sal))
            return media
        strategy = self.feature_strategy(base, named)
        features = output.pooler_output  # [images, T, H]
        tokens = int(features.shape[1])
        return [Media("image", tokens, None if attention is None else patch_saliency(attention, strategy, i, tokens))
                for i in range(features.shape[0])]
