"""Qwen2.5-VL (``qwen2_5_vl``): no [CLS] token, so "auto" importance is relevance; features
are the merger's output, one medium per image or video; 3-D M-RoPE positions.

Positions: the model computes the M-RoPE (t, h, w) positions of the unpruned sequence (its
``get_rope_index``); every kept token keeps its original (t, h, w) position and every text
token its own, and decoding continues after the largest one, exactly as without pruning. The
model's cached ``rope_deltas`` are set for the pruned cache (position = cache length + delta)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .engine import Media
from .family import Family


class Qwen25VL(Family):
    model_type = "qwen2_5_vl"
    feature_functions = {"get_image_features": ("image", None), "get_video_features": ("video", None)}
    modalities = ("image", "video")
    media_inputs = ("pixel_values", "pixel_values_videos")
    positions = "mrope"

    def describe(self, modality: str, base: nn.Module, named: Dict[str, Any], output: Any,
                 attention: Optional[torch.Tensor]) -> List[Media]:
        return [Media(modality, int(f.shape[0])) for f in output.pooler_output]  # one per image / video
