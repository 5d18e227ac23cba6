"""Qwen3-VL (``qwen3_vl``): as Qwen2.5-VL (no [CLS] token, so "auto" importance is relevance;
features are the merger's output; 3-D M-RoPE positions kept for every kept token), plus the
DeepStack features.

DeepStack: the vision tower also merges the hidden states of a few of its layers into
LLM-width features, one row per visual token; the LLM adds the i-th of them to its hidden
states after decoder layer i at the visual positions (``visual_pos_masks``, rows in row-major
order over the batch). Pruning cuts ``visual_pos_masks`` exactly as it cuts the sequence and
keeps, for every layer, only the rows of kept tokens: each kept token gets exactly its own
DeepStack features, and a dropped token's features go nowhere.

Videos: the processor puts a timestamp between frames, so one video's placeholders come in
several runs; a video is still one medium (joint selection over its frames)."""
from __future__ import annotations

from typing import Any, Callable, Dict

import torch

from .qwen2_5_vl import Qwen25VL


class Qwen3VL(Qwen25VL):
    model_type = "qwen3_vl"

    def prune_language_inputs(self, kwargs: Dict[str, Any], new_kwargs: Dict[str, Any], keep: torch.Tensor,
                              place: Callable[[torch.Tensor], torch.Tensor], kept_media_tokens: int) -> None:
        visual = kwargs.get("visual_pos_masks")
        if visual is None:
            return
        visual = visual.to(keep.device)
        new_kwargs["visual_pos_masks"] = place(visual)
        deepstack = kwargs.get("deepstack_visual_embeds")
        if deepstack is not None:
            # The DeepStack rows of kept tokens, in their (row-major) order, without a boolean
            # index: a stable sort puts the kept visual positions first, and their number is
            # known on the host.
            kept = (keep & visual).reshape(-1)
            order = torch.sort((~kept).to(torch.uint8), stable=True).indices[:kept_media_tokens]
            row_of = torch.cumsum(visual.reshape(-1).long(), dim=0) - 1  # DeepStack row of each visual position
            rows = row_of[order]
            new_kwargs["deepstack_visual_embeds"] = [layer_rows.index_select(0, rows.to(layer_rows.device))
                                                     for layer_rows in deepstack]
