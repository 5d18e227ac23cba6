"""Qwen2.5-VL (``qwen2_5_vl``): no [CLS] token, so "auto" importance is relevance; features
are the merger's output; 3-D M-RoPE positions.

Positions: the model computes the M-RoPE (t, h, w) positions of the unpruned sequence (its
``get_rope_index``); every kept token keeps its original (t, h, w) position and every text
token its own, and decoding continues after the largest one, exactly as without pruning. The
model's cached ``rope_deltas`` are set for the pruned cache (position = cache length + delta)."""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn

from .core import CacheState, FamilyAdapter, Media, PatchHandle
from .llava import image_and_video_masks


class Qwen25VLAdapter(FamilyAdapter):
    model_type = "qwen2_5_vl"

    @staticmethod
    def describe(modality: str):
        def media(base, original, output, attention, args, kwargs) -> List[Media]:
            return [Media(modality, int(f.shape[0])) for f in output.pooler_output]  # one per image / video

        return media

    def token_masks(self, base, original, args, kwargs) -> Dict[str, torch.Tensor]:
        return image_and_video_masks(base, original, args, kwargs)

    def install(self, handle: PatchHandle) -> None:
        base = self.base(handle.model)
        for name, modality in (("get_image_features", "image"), ("get_video_features", "video")):
            describe = self.describe(modality)
            handle.replace(base, name, lambda orig, describe=describe: handle.wrap_feature_fn(
                orig, lambda *a, **k: None, lambda out, layer_input, *a, **k: describe(base, orig, out, None, a, k)))
        self.install_common(handle, lambda *a, **k: self.token_masks(base, base.forward, a, k))

    def after_prefill(self, model: nn.Module, state: CacheState) -> None:
        if state.position_rows:
            # next M-RoPE position = pruned cache length + delta, per row
            self.base(model).rope_deltas = (state.next_positions[-1] - state.length)[:, None]
