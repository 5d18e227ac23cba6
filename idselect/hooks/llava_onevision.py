"""LLaVA-OneVision (``llava_onevision``): SigLIP tower (no [CLS] token, so "auto" importance is
relevance), anyres-max tiling, images and videos.

An image reaches the LLM as its base crop, then its unpadded high-resolution grid (downsampled
when larger than ``anyres_max_N`` allows) with one newline token closing every row; an image
in a multi-image row is one crop and one newline. A video is every frame's 2 x 2-pooled tokens
then one newline (in the video features from transformers 5.23 on; appended by the model's
forward before). ``keep`` counts an image over all its crops (a video over all its frames);
newline tokens are never candidates: when a medium is pruned they are dropped and its whole
budget goes to image tokens. Newlines are found as what they are, copies of the model's
``image_newline`` vector, so the layout rules above need not be restated here."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .engine import Media
from .family import NO_CLS_TOWERS
from .llava import Llava


def _media(modality: str, features: Sequence[torch.Tensor], newline: torch.Tensor, **options) -> List[Media]:
    """One medium per feature tensor: its tokens, newline tokens excluded from the candidates
    (one comparison for all of them; the masks are read with the prompt's layout)."""
    features = list(features)
    sizes = [int(f.shape[0]) for f in features]
    flat = torch.cat(features) if len(features) > 1 else features[0]
    candidates = ~(flat == newline.to(flat.device, flat.dtype)).all(dim=-1)
    return [Media(modality, n, None, part, **options) for n, part in zip(sizes, candidates.split(sizes))]


class LlavaOnevision(Llava):
    model_type = "llava_onevision"
    feature_functions = {"get_image_features": ("image", "vision_tower"),
                         "get_video_features": ("video", "vision_tower")}
    modalities = ("image", "video")
    media_inputs = ("pixel_values", "pixel_values_videos")
    supported_towers = NO_CLS_TOWERS  # released checkpoints use SigLIP; no saliency is laid out for a [CLS] tower

    def describe(self, modality: str, base: nn.Module, named: Dict[str, Any], output: Any,
                 attention: Optional[torch.Tensor]) -> List[Media]:
        if modality == "image":
            return _media("image", output.pooler_output, base.image_newline)
        # transformers < 5.23 appends each video's newline in the model's forward, after this
        # function: the LLM then receives one more token, never a candidate (decided when the
        # candidates are read with the prompt's layout, without a read of its own here).
        return _media("video", output.pooler_output, base.image_newline, newline_may_follow=True)
