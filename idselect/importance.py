"""Importance estimators of ID-Selection (docs/hooks.md, section "Importance").

All three return scores normalised per image to [0, 1] by min-max (``minmax``), as the
selection expects. They work on plain tensors and modules, so they can be used outside the
model hooks too.
"""
from __future__ import annotations

import math
import sys
import warnings
from typing import Optional, Sequence

import torch
from torch import nn


def minmax(scores: torch.Tensor) -> torch.Tensor:
    """Scale the last dimension to [0, 1]; a constant vector becomes all zeros."""
    scores = scores.float()
    low = scores.amin(dim=-1, keepdim=True)
    span = scores.amax(dim=-1, keepdim=True) - low
    return torch.where(span > 0, (scores - low) / span.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(scores))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    # [..., T, heads * d] -> [..., heads, T, d]
    *lead, T, width = x.shape
    return x.view(*lead, T, heads, width // heads).transpose(-3, -2)


def cls_attention(layer: nn.Module, hidden_in: torch.Tensor) -> torch.Tensor:
    """Attention of the [CLS] token (position 0) to every token in one vision encoder layer,
    softmax probabilities averaged over heads, from the layer's own q/k projections (so it does
    not need eager attention or ``output_attentions``).

    Parameters
    ----------
    layer : nn.Module
        A pre-norm ViT layer with ``layer_norm1`` (CLIP, SigLIP) or ``layernorm_before``
        (InternViT) and a ``self_attn`` / ``attention`` module holding ``q_proj`` and ``k_proj``
        (and InternViT's optional ``q_norm`` / ``k_norm``).
    hidden_in : Tensor [images, T, C]
        The layer's input hidden states.

    Returns
    -------
    Tensor [images, T] float32: attention of [CLS] to each of the T tokens (itself included).
    """
    norm = getattr(layer, "layer_norm1", None) or getattr(layer, "layernorm_before")
    attn = getattr(layer, "self_attn", None) or getattr(layer, "attention")
    heads = getattr(attn, "num_heads", None) or attn.config.num_attention_heads
    x = norm(hidden_in)
    q, k = attn.q_proj(x[:, :1]), attn.k_proj(x)
    if getattr(attn, "q_norm", None) is not None:  # InternViT: norms over the full width
        q, k = attn.q_norm(q), attn.k_norm(k)
    q = _split_heads(q, heads).float()  # [I, h, 1, d]
    k = _split_heads(k, heads).float()  # [I, h, T, d]
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return logits.softmax(dim=-1).mean(dim=1)[:, 0]  # [I, T]


def visual_saliency(
    encoder_layers: Sequence[nn.Module],
    hidden_states: Sequence[torch.Tensor],
    feature_layer: int,
    drop_cls: bool,
) -> torch.Tensor:
    """[CLS] attention in the vision layer whose output the model uses (FasterVLM-style).

    .. deprecated::
        Nothing in idselect uses it (the hooks capture the feature layer's input and call
        ``cls_attention``, without keeping every hidden state); it will be removed in a later
        release. Use ``minmax(cls_attention(layer, layer_input))``.

    ``hidden_states`` is the encoder's tuple (embeddings, then each layer's output), so the
    output ``hidden_states[feature_layer]`` is produced by layer ``index - 1`` from input
    ``hidden_states[index - 1]``. Returns [images, T] (or [images, T - 1] with ``drop_cls``),
    min-max normalised per image.
    """
    warnings.warn("idselect.importance.visual_saliency is deprecated and will be removed: use "
                  "minmax(cls_attention(layer, layer_input))", DeprecationWarning, stacklevel=2)
    index = feature_layer % len(hidden_states)
    if index == 0:
        raise ValueError(
            f"idselect: vision_feature_layer={feature_layer} selects the embeddings, which no "
            "attention layer produced; saliency needs a transformer layer's output"
        )
    attention = cls_attention(encoder_layers[index - 1], hidden_states[index - 1])
    return minmax(attention[:, 1:] if drop_cls else attention)


def _project_each(linear: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """``linear`` applied to each row of [G, C] as to a batch of one: on the CPU a batched
    matrix-vector product, which gives the same bits as G separate calls (one GEMM over G
    rows may not); elsewhere one GEMM."""
    weight, bias = getattr(linear, "weight", None), getattr(linear, "bias", None)
    if rows.device.type != "cpu" or not isinstance(weight, torch.Tensor) or type(linear).forward is not nn.Linear.forward:
        return linear(rows)
    out = torch.bmm(rows[:, None], weight.t().expand(rows.shape[0], -1, -1))[:, 0]
    return out if bias is None else out + bias


def instruction_relevance(
    query_hidden: torch.Tensor,
    key_hidden: torch.Tensor,
    decoder_layer: nn.Module,
    num_heads: int,
    num_kv_heads: int,
    rotary: Optional[tuple] = None,
) -> torch.Tensor:
    """Attention of the last instruction token to the image tokens at one LLM layer.

    ``softmax(q K^T / sqrt(d_head))`` over the given image tokens, averaged over heads, with
    the layer's ``input_layernorm`` and ``self_attn.q_proj`` / ``k_proj`` (grouped KV heads
    repeated), and, as the layer's own attention has them, the per-head ``q_norm`` /
    ``k_norm`` (Qwen3) and the query half of a gated ``q_proj`` (Qwen3.5, whose ``q_proj``
    gives each head's query then its output gate). Returns [T] min-max normalised.

    Batched: with ``query_hidden`` [G, C] and ``key_hidden`` [G, T, C], G images (each with
    its own query) in one pass, [G, T]; each row equal to the unbatched call on the CPU, bit
    for bit.

    Parameters
    ----------
    query_hidden : Tensor [C] or [G, C]
        Hidden state (input of ``decoder_layer``) of the last instruction token.
    key_hidden : Tensor [T, C] or [G, T, C]
        Hidden states of the image tokens.
    rotary : (cos_q, sin_q, cos_k, sin_k), optional
        Rotary embedding for the query position and the key positions ([1, d] and [T, d];
        batched [G, 1, d] and [G, T, d]); without it, no rotary embedding is applied (the
        default; see docs/hooks.md).
    """
    batched = key_hidden.dim() == 3
    if not batched:
        query_hidden, key_hidden = query_hidden[None], key_hidden[None]
        rotary = None if rotary is None else tuple(t[None] for t in rotary)
    G, T = key_hidden.shape[:2]
    norm, attn = decoder_layer.input_layernorm, decoder_layer.self_attn
    k = attn.k_proj(norm(key_hidden)).view(G, T, num_kv_heads, -1)  # [G, T, kv, d]
    head_dim = k.shape[-1]
    q = _project_each(attn.q_proj, norm(query_hidden[:, None])[:, 0]).view(G, 1, num_heads, -1)  # or [.., 2d] when gated
    if q.shape[-1] == 2 * head_dim:
        q = q[..., :head_dim]
    if getattr(attn, "q_norm", None) is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.float().transpose(1, 2), k.float().transpose(1, 2)  # [G, h, 1, d], [G, kv, T, d]
    if rotary is not None:
        rotate = sys.modules[type(attn).__module__].rotate_half
        cos_q, sin_q, cos_k, sin_k = (t.float()[:, None] for t in rotary)
        width = cos_q.shape[-1]  # rotary on the leading dims only where partial (Qwen3.5); the rest pass through
        q = torch.cat([q[..., :width] * cos_q + rotate(q[..., :width]) * sin_q, q[..., width:]], dim=-1)
        k = torch.cat([k[..., :width] * cos_k + rotate(k[..., :width]) * sin_k, k[..., width:]], dim=-1)
    k = k.repeat_interleave(num_heads // num_kv_heads, dim=1)  # [G, h, T, d]
    logits = (q @ k.transpose(-1, -2))[:, :, 0] / math.sqrt(q.shape[-1])  # [G, h, T]
    relevance = minmax(logits.softmax(dim=-1).mean(dim=1))
    return relevance if batched else relevance[0]


def unified(saliency: torch.Tensor, relevance: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """``alpha * saliency + (1 - alpha) * relevance``, both min-max normalised first."""
    return alpha * minmax(saliency) + (1.0 - alpha) * minmax(relevance)
