"""Theoretical prefill FLOPs of an LVLM (vision tower, projector, LLM) for a prompt and a keep.

Counting rule: a multiply-add is 2 FLOPs; every linear layer and both attention matrix products
(Q K^T and A V, full n x n, no causal halving) are counted; norms, activations, softmax and
rotary embedding are ignored (under 1%). The LLM computes logits for the last token only, as
``generate()``'s prefill does. Selection itself (k similarity rows, importance) is counted
separately as ``selection``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

from .cli_args import non_negative_int, positive_int


@dataclass
class Tower:
    """One transformer stack, as the FLOPs count sees it."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    gated_mlp: bool  # SwiGLU (3 matrices) vs plain MLP (2)

    def flops(self, tokens: int, batch: int = 1, windowed_tokens: Optional[int] = None) -> float:
        """FLOPs of the stack on ``batch`` sequences of ``tokens`` tokens. ``windowed_tokens``:
        attention spans at most that many tokens (window attention), else the whole sequence."""
        h, m, n = self.hidden, self.intermediate, tokens
        kv = h * self.kv_heads // self.heads
        span = n if windowed_tokens is None else min(n, windowed_tokens)
        projections = 2 * n * h * (2 * h + 2 * kv)  # q, o: h x h; k, v: h x kv
        attention = 2 * 2 * n * span * h  # Q K^T and A V
        mlp = 2 * n * h * m * (3 if self.gated_mlp else 2)
        return float(batch * self.layers * (projections + attention + mlp))


@dataclass
class ModelShape:
    name: str
    vision: Tower
    vision_tokens: int  # tokens per vision-tower pass ([CLS] included)
    vision_passes: int  # crops / tiles per image
    projector_flops_per_token: float  # per token the projector runs on
    llm: Tower
    vocab: int
    visual_tokens: int  # per image, as the LLM receives them without pruning
    vision_window: Optional[int] = None  # Qwen2.5-VL window attention span (tokens)
    vision_full_layers: int = 0  # layers with full attention despite windows
    # Tokens per image the projector runs on, when not ``visual_tokens``: LLaVA-OneVision projects
    # every crop's patches before unpadding, and its row-end newlines are a learned vector.
    projector_tokens: Optional[int] = None
    # Extra mergers shaped like the projector, run on every visual token before pruning (Qwen3-VL
    # DeepStack); counted under vision, as they belong to the vision model.
    deepstack_mergers: int = 0


def _clip_l336() -> Tower:
    return Tower(layers=24, hidden=1024, intermediate=4096, heads=16, kv_heads=16, gated_mlp=False)


def _llama7b() -> Tower:
    return Tower(layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32, gated_mlp=True)


PRESETS: Dict[str, ModelShape] = {
    # CLIP ViT-L/14 at 336 px: 24 x 24 patches + [CLS]; 2-layer MLP projector 1024 -> 4096 -> 4096.
    "llava-1.5-7b": ModelShape("llava-1.5-7b", _clip_l336(), 577, 1, 2 * (1024 * 4096 + 4096 * 4096),
                               _llama7b(), 32000, 576),
    # anyres at 672 x 672: base + 4 crops of 576 tokens; unpadded grid 48 x 48 + 48 newlines.
    "llava-next-7b": ModelShape("llava-next-7b", _clip_l336(), 577, 5, 2 * (1024 * 4096 + 4096 * 4096),
                                _llama7b(), 32000, 576 + 48 * 48 + 48),
    # Qwen2.5-VL-7B at 448 x 448: 32 x 32 patches of 14 px, 2 x 2 merger -> 256 tokens; window
    # attention over 112 px (64 patches) except 4 full-attention layers; merger MLP 5120 -> 5120 -> 3584.
    "qwen2.5-vl-7b": ModelShape("qwen2.5-vl-7b", Tower(32, 1280, 3420, 16, 16, True), 1024, 1,
                                2 * 4 * (5120 * 5120 + 5120 * 3584) / 4,
                                Tower(28, 3584, 18944, 28, 4, True), 152064, 256, vision_window=64,
                                vision_full_layers=4),
    # Qwen3-VL-8B-Instruct at 512 x 512 (a round 256 tokens, as qwen2.5-vl-7b above; a multiple of
    # 32 px inside the processor's pixel bounds, so not resized): 32 x 32 patches of 16 px, full
    # attention in every vision block (no windows), 2 x 2 merger -> 16 x 16 = 256 tokens. Merger
    # MLP 4 * 1152 = 4608 -> 4608 -> 4096; the 3 DeepStack mergers (after vision blocks 8, 16 and
    # 24, 0-based) have the same shape and also run on all 256 tokens; the LLM adds their outputs
    # to its first 3 layers' hidden states (additions not counted). Numbers: the checkpoint's config.json
    # (vision_config: depth 27, hidden_size 1152, intermediate_size 4304, num_heads 16, patch_size
    # 16, spatial_merge_size 2, out_hidden_size 4096, deepstack_visual_indexes [8, 16, 24];
    # text_config: 36 layers, hidden 4096, intermediate 12288, 32 heads, 8 kv heads, head_dim 128,
    # vocab 151936) as public code transcribes it (the Hub file itself was not read; these shapes
    # give the published 8.767B parameters, 576.4M of them in vision); layer structure from
    # transformers' models/qwen3_vl (plain GELU MLP in vision blocks, SwiGLU in the LLM).
    "qwen3-vl-8b": ModelShape("qwen3-vl-8b",
                              Tower(layers=27, hidden=1152, intermediate=4304, heads=16, kv_heads=16, gated_mlp=False),
                              (512 // 16) ** 2, 1, 2 * (4608 * 4608 + 4608 * 4096),
                              Tower(layers=36, hidden=4096, intermediate=12288, heads=32, kv_heads=8, gated_mlp=True),
                              151936, (512 // 32) ** 2, deepstack_mergers=3),
    # LLaVA-OneVision-7B (llava-hf) at 768 x 768, anyres_max_9: best grid pinpoint 768 x 768, so
    # 5 SigLIP passes of 384 px (base + 2 x 2 crops), 27 x 27 = 729 patches each, no [CLS]. The LLM
    # gets the base 729 + the crop grid 54 x 54 (square image: nothing unpadded; sqrt(54 * 54 /
    # (9 * 729)) = 0.67 <= 1.1, so no anyres_max_9 downscaling) + 54 newlines, one per grid row =
    # 3,699 tokens (what transformers' processor and model give). The projector (1152 -> 3584 ->
    # 3584) runs on the 5 x 729 patches. SigLIP so400m with its last layer dropped: 26 layers,
    # hidden 1152, intermediate 4304, 16 heads (transformers' convert_llava_onevision_weights_to_hf.py;
    # LLaVA-NeXT's siglip_encoder.py drops layers[-1:]). LLM: Qwen2-7B-Instruct's config.json; vocab
    # 152064 + 2 added tokens padded to a multiple of 64 = 152128 by the same conversion script.
    "llava-onevision-7b": ModelShape("llava-onevision-7b",
                                     Tower(layers=26, hidden=1152, intermediate=4304, heads=16, kv_heads=16,
                                           gated_mlp=False),
                                     (384 // 14) ** 2, 5, 2 * (1152 * 3584 + 3584 * 3584),
                                     Tower(layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4,
                                           gated_mlp=True),
                                     152128, 729 + 54 * 54 + 54, projector_tokens=5 * 729),
}


def prefill_flops(shape: ModelShape, text_tokens: int, keep: Optional[int] = None, images: int = 1) -> Dict[str, float]:
    """FLOPs of one prefill: ``images`` images, ``text_tokens`` text tokens, ``keep`` visual
    tokens per image reaching the LLM (None: all)."""
    kept = shape.visual_tokens if keep is None else min(keep, shape.visual_tokens)
    if shape.vision_window is None:
        vision = shape.vision.flops(shape.vision_tokens, images * shape.vision_passes)
    else:
        full = Tower(shape.vision_full_layers, shape.vision.hidden, shape.vision.intermediate, shape.vision.heads,
                     shape.vision.kv_heads, shape.vision.gated_mlp)
        windowed = Tower(shape.vision.layers - shape.vision_full_layers, shape.vision.hidden, shape.vision.intermediate,
                         shape.vision.heads, shape.vision.kv_heads, shape.vision.gated_mlp)
        vision = full.flops(shape.vision_tokens, images) + windowed.flops(shape.vision_tokens, images, shape.vision_window)
    projected = shape.visual_tokens if shape.projector_tokens is None else shape.projector_tokens
    projector = shape.projector_flops_per_token * projected * images
    vision += shape.deepstack_mergers * projector
    n = text_tokens + kept * images
    llm = shape.llm.flops(n) + 2 * shape.llm.hidden * shape.vocab
    # Selection: importance (relevance q/k at layer 0 over the image tokens) + k similarity rows.
    selection = 0.0
    if kept < shape.visual_tokens:
        h = shape.llm.hidden
        selection = images * (2 * shape.visual_tokens * h * (h + h * shape.llm.kv_heads // shape.llm.heads)
                              + 2 * kept * shape.visual_tokens * h)
    total = vision + projector + llm + selection
    return {"vision": vision, "projector": projector, "llm": llm, "selection": selection, "total": total,
            "llm_tokens": float(n), "visual_tokens_kept": float(kept * images)}


def report(preset: str, text_tokens: int, keeps: Iterable[Optional[int]]) -> list:
    shape = PRESETS[preset]
    base = prefill_flops(shape, text_tokens)
    rows = []
    for keep in keeps:
        f = prefill_flops(shape, text_tokens, keep)
        rows.append({"model": preset, "keep": keep if keep is not None else shape.visual_tokens, **f,
                     "total_vs_unpruned": f["total"] / base["total"], "llm_vs_unpruned": f["llm"] / base["llm"]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m idselect flops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(PRESETS), action="append", help="preset (repeatable; default: all)")
    p.add_argument("--keep", type=positive_int, nargs="+", default=[192, 128, 64, 16], help="visual tokens kept per image")
    p.add_argument("--text-tokens", type=non_negative_int, default=32)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    rows = []
    for preset in args.model or sorted(PRESETS):
        rows += report(preset, args.text_tokens, [None] + args.keep)
    name_width = max(15, max(len(r["model"]) for r in rows) + 2)  # the longest preset name still aligns
    print(f"{'model':<{name_width}}{'keep':>6}{'LLM tokens':>12}{'vision TF':>11}{'LLM TF':>9}{'total TF':>10}"
          f"{'total':>8}{'LLM':>8}")
    for r in rows:
        print(f"{r['model']:<{name_width}}{r['keep']:>6}{int(r['llm_tokens']):>12}{r['vision'] / 1e12:>11.3f}"
              f"{r['llm'] / 1e12:>9.3f}{r['total'] / 1e12:>10.3f}{r['total_vs_unpruned']:>8.1%}"
              f"{r['llm_vs_unpruned']:>8.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0
