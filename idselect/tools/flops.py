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

from . import shapes
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


#: Vocabulary of the LM head as counted, where it is not the registry's (the checkpoint table):
#: the LLaVA presets have always counted the original LLaVA checkpoints' 32000 logits (llava-hf
#: pads the table to 32064: 0.5 MFLOPs more, under a millionth of a prefill).
_COUNTED_VOCAB = {"llava-1.5-7b": 32000, "llava-next-7b": 32000}


def shape_of(model: shapes.Model) -> ModelShape:
    """The FLOPs view of a registry model (``idselect.tools.shapes``).

    Parameters
    ----------
    model : shapes.Model
        A checkpoint at one image size, e.g. ``shapes.MODELS["llava-1.5-7b"]``.

    Returns
    -------
    ModelShape
        Its towers, token counts and projector cost, as ``prefill_flops`` counts them.
    """
    v, t = model.vision, model.llm
    widths = model.projector_widths
    windowed = v.window is not None
    return ModelShape(
        model.name,
        Tower(v.layers, v.hidden, v.intermediate, v.heads, v.heads, v.gated_mlp),
        model.vision_tokens,
        model.vision_passes,
        2 * sum(a * b for a, b in zip(widths, widths[1:])),  # a 2-layer MLP, per token
        Tower(t.layers, t.hidden, t.intermediate, t.heads, t.kv_heads, gated_mlp=True),  # SwiGLU in every LLM here
        _COUNTED_VOCAB.get(model.name, t.vocab),
        model.visual_tokens,
        vision_window=(v.window // v.patch) ** 2 if windowed else None,  # pixels -> patches
        vision_full_layers=len(v.full_attention_blocks) if windowed else 0,
        # OneVision projects every pass's patches (newlines are a learned vector).
        projector_tokens=model.vision_passes * model.vision_tokens if model.wrapper == "llava_onevision" else None,
        deepstack_mergers=len(v.deepstack_blocks),
    )


#: The presets of ``python -m idselect flops``; where each number comes from is written next to
#: the model in idselect/tools/shapes.py.
PRESETS: Dict[str, ModelShape] = {
    name: shape_of(shapes.MODELS[name])
    for name in ("llava-1.5-7b", "llava-next-7b", "qwen2.5-vl-7b", "qwen3-vl-8b", "llava-onevision-7b")
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
