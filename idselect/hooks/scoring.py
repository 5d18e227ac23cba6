"""Importance of the pruned media's candidate tokens, from what the integration layer read
from the model: the media's [CLS] saliency and the hidden states entering the relevance layer.
Batched over the candidate table (``engine.CandidateTable``): a fixed number of kernels per
run of media with equal candidate counts, whatever the number of media or rows. Plain tensors
and the layer's projections; nothing here knows transformers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from .. import importance as imp
from .engine import CandidateTable


@dataclass
class RelevanceInputs:
    """What instruction relevance reads for one batch."""

    hidden: torch.Tensor  # [B, L, H], the hidden states entering ``layer``
    layer: nn.Module  # the LLM layer whose W_Q / W_K score relevance
    heads: int
    kv_heads: int
    rotary: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # (cos, sin) [B, L, d] with relevance_rope


def importance_scores(table: CandidateTable, importance: str, alpha: float,
                      relevance_inputs: Optional[RelevanceInputs],
                      features: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Importance in [0, 1] of the table's candidates, [G, n] float32 (0 in padding).

    Media are scored in runs of equal candidate count (``table.size_groups``; one run when all
    images have the same size), so each medium's softmax and min-max run over exactly its own
    tokens and give the same bits as the unbatched ``idselect.importance`` functions.

    Parameters
    ----------
    table : CandidateTable
    importance : {"saliency", "relevance", "unified"}
        Resolved (``Options.importance``); "saliency" and "unified" need every medium's saliency.
    alpha : float
        Weight of saliency in "unified".
    relevance_inputs : RelevanceInputs or None
        Needed for "relevance" and "unified".
    features : Tensor, optional
        ``table.gather(relevance_inputs.hidden)``, if already gathered (relevance at layer 0
        reads the LLM input the selection gathers too).
    """
    saliency = table.saliency() if importance in ("saliency", "unified") else None
    rel = relevance_inputs
    queries = rot_q = None
    if importance in ("relevance", "unified"):
        queries = rel.hidden[table.rows[:, 0], table.query_columns]  # [G, H]
        if rel.rotary is not None:
            rot_q = tuple(t[table.rows[:, 0], table.query_columns][:, None] for t in rel.rotary)  # [G, 1, d]
    runs = []
    for start, stop, n in table.size_groups:
        sal = None if saliency is None else saliency[start:stop, :n]
        if importance == "saliency":
            runs.append(imp.minmax(sal))
            continue
        if features is not None:
            keys = features[start:stop, :n]
        else:
            keys = table.gather(rel.hidden, start, stop, n)
        rotary = None
        if rel.rotary is not None:
            rot_k = tuple(table.gather(t, start, stop, n) for t in rel.rotary)
            rotary = (rot_q[0][start:stop], rot_q[1][start:stop], rot_k[0], rot_k[1])
        relevance = imp.instruction_relevance(queries[start:stop], keys, rel.layer, rel.heads, rel.kv_heads, rotary)
        runs.append(relevance if importance == "relevance" else imp.unified(sal, relevance, alpha))
    width = table.rows.shape[1]
    if len(runs) == 1 and runs[0].shape[1] == width:
        return runs[0]
    scores = torch.zeros(table.rows.shape, dtype=torch.float32, device=table.rows.device)
    for (start, stop, n), values in zip(table.size_groups, runs):
        scores[start:stop, :n] = values
    return scores
