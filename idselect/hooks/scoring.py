"""Importance of each planned medium's candidate tokens, from what the integration layer read
from the model: the media's [CLS] saliency and the hidden states entering the relevance layer.
Plain tensors and the layer's projections; nothing here knows transformers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn

from .. import importance as imp
from .engine import PlacedMedium


@dataclass
class RelevanceInputs:
    """What instruction relevance reads for one batch."""

    hidden: torch.Tensor  # [B, L, H], the hidden states entering ``layer``
    last: torch.Tensor  # [B], column of each row's last real token (the end of the instruction)
    layer: nn.Module  # the LLM layer whose W_Q / W_K score relevance
    heads: int
    kv_heads: int
    rotary: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # (cos, sin) [B, L, d] with relevance_rope


def last_token_index(chunk_mask: torch.Tensor) -> torch.Tensor:
    """Column of the last real token per row of a [B, L] mask."""
    B, L = chunk_mask.shape
    cols = torch.arange(L, device=chunk_mask.device)[None].expand(B, L)
    return torch.where(chunk_mask.bool(), cols, -1).amax(dim=1)


def relevance(inputs: RelevanceInputs, row: int, candidate_columns: torch.Tensor) -> torch.Tensor:
    """Instruction relevance in [0, 1] of the tokens at ``candidate_columns`` of ``row``."""
    q_at = inputs.last[row]
    rot = None
    if inputs.rotary is not None:
        cos, sin = inputs.rotary
        rot = (cos[row, q_at][None], sin[row, q_at][None], cos[row, candidate_columns], sin[row, candidate_columns])
    return imp.instruction_relevance(inputs.hidden[row, q_at], inputs.hidden[row, candidate_columns], inputs.layer,
                                     inputs.heads, inputs.kv_heads, rot)


def importance_scores(planned: List[PlacedMedium], importance: str, alpha: float,
                      relevance_inputs: Optional[RelevanceInputs], device: torch.device) -> List[torch.Tensor]:
    """Per medium, importance in [0, 1] over its candidate tokens.

    Parameters
    ----------
    planned : list of PlacedMedium
    importance : {"saliency", "relevance", "unified"}
        Resolved (``Options.importance``); "saliency" and "unified" need every medium's saliency.
    alpha : float
        Weight of saliency in "unified".
    relevance_inputs : RelevanceInputs or None
        Needed for "relevance" and "unified".
    device : torch.device
        Where the scores go (the LLM input's device).
    """
    out = []
    for p in planned:
        sal = None if p.media.saliency is None else p.media.candidate_part(p.media.saliency.to(device))
        if importance == "saliency":
            out.append(imp.minmax(sal))
            continue
        rel = relevance(relevance_inputs, p.row, p.candidate_columns)
        out.append(rel if importance == "relevance" else imp.unified(sal, rel, alpha))
    return out
