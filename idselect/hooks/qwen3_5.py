"""Qwen3.5 (``qwen3_5``): Qwen3-VL's visual path without DeepStack, and a hybrid LLM (Gated
DeltaNet linear attention in three of every four layers). The pruned sequence is simply a
shorter sequence for the linear layers too; instruction relevance uses the first
softmax-attention layer (``relevance_layer`` defaults to it)."""
from __future__ import annotations

from .qwen3_vl import Qwen3VL


class Qwen35(Qwen3VL):
    model_type = "qwen3_5"
