"""The main job: generate() with and without ID-Selection on a LLaVA model, side by side.

Default: a LLaVA-1.5-shaped model with random weights (CLIP at 336 px with 14 px patches, so
576 visual tokens, feature layer -2; a small Llama), built from a config, on a synthetic image.
Its answers are noise; the token counts, the selection time and the prefill speedup are real.
With ``--model PATH`` (a local llava-hf checkpoint) and ``--image`` it runs the real model.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Optional

import numpy as np
import torch

from .. import patch, reference
from ..api import select
from .cli_args import keep_value, positive_int
from .shapes import LLAVA_1_5_7B

#: LLaVA-1.5's image geometry (idselect.tools.shapes): 336 px, 14 px patches -> 576 visual tokens.
IMAGE_SIZE = LLAVA_1_5_7B.vision.image_size
VISUAL_TOKENS = LLAVA_1_5_7B.visual_tokens


def demo_model(seed: int = 0):
    """LLaVA-1.5's layout and image geometry (CLIP with [CLS], feature layer -2, 'default'
    strategy: 576 visual tokens) at small widths, random weights from ``seed``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=LLAVA_1_5_7B.vision.patch, projection_dim=128)
    text = LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                       num_key_value_heads=8, vocab_size=1000, max_position_embeddings=2048, pad_token_id=0)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=999, vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 0
    return model


def synthetic_image(size: int = IMAGE_SIZE) -> np.ndarray:
    """A picture with structure (sky, ground, two discs) so the overlay is readable."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.3 + 0.4 * y, 0.5 + 0.3 * y, 0.9 - 0.5 * y], axis=-1)
    img[y > 0.65] = [0.35, 0.6, 0.25]
    for cx, cy, r, color in ((0.3, 0.4, 0.12, (0.9, 0.2, 0.1)), (0.72, 0.55, 0.08, (1.0, 0.85, 0.1))):
        img[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = color
    return (img * 255).astype(np.uint8)


def tiny_inputs(model, image: np.ndarray, question_tokens: int = 32):
    mean, std = np.array([0.481, 0.458, 0.408]), np.array([0.269, 0.261, 0.276])
    pixels = torch.tensor(((image / 255.0 - mean) / std).transpose(2, 0, 1), dtype=torch.float32)[None]
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1, 990, (question_tokens + 4,), generator=g).tolist()
    ids = text[:4] + [model.config.image_token_id] * VISUAL_TOKENS + text[4:]
    return {"input_ids": torch.tensor([ids]), "pixel_values": pixels}


def real_inputs(model_path: str, image_path: str, question: str, device: str, dtype):
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(model_path, local_files_only=True, dtype=dtype).to(device).eval()
    image = Image.open(image_path).convert("RGB")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return model, processor, inputs, np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE)))


def prefill_ms(model, inputs, repeats: int) -> list:
    times = []
    for _ in range(repeats + 1):
        if inputs["input_ids"].is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            model(**inputs, use_cache=True, logits_to_keep=1)
        if inputs["input_ids"].is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times[1:]  # the first run warms up


class PickRecorder:
    """The op exactly as the hooks call it (``idselect.patch(..., selection=recorder)``), keeping
    the last call's features, scores, lengths and picks: the picks in pick order, which
    ``last_stats["kept_indices"]`` (ascending) does not keep."""

    def __init__(self):
        self.last = None

    def __call__(self, features, scores, k, gamma, lengths):
        picks = select(features, scores, k, gamma, lengths, validate=False)
        self.last = (features, scores, lengths, picks)
        return picks


def zero_score_picks(features: torch.Tensor, scores: torch.Tensor, picks: torch.Tensor, gamma: float) -> torch.Tensor:
    """The picks of one row made when the best remaining score was 0, replayed with the
    reference's update. Scores never rise, so once the best is 0 every remaining one is: these
    are the last picks, each the smallest remaining index (the tie rule).

    Parameters
    ----------
    features : Tensor
        [n, D], the row's candidate tokens.
    scores : Tensor
        [n], their importance (>= 0).
    picks : Tensor
        int64 [k], the selection in pick order.
    gamma : float
        The suppression sharpness the selection used.

    Returns
    -------
    Tensor
        int64, the zero-score picks' token indices, in pick order.
    """
    f = features.float()
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    s = scores.float().clamp_min(0.0)
    zero = []
    for i in picks.tolist():
        at = s[i]
        if at <= 0:
            zero.append(i)
        s = reference.suppress(s, (f[i] @ f.T).clamp(-1.0, 1.0), at, gamma)
    return torch.tensor(zero, dtype=torch.long)


def save_overlay(image: np.ndarray, kept: Optional[torch.Tensor], grid: int, path: str, title: str,
                 zero: Optional[torch.Tensor] = None) -> None:
    """The image beside its kept tokens (outlined; the rest shaded). ``zero``: kept tokens picked
    at zero score, outlined apart (dashed, magenta) and counted in a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    mask = np.zeros(grid * grid, dtype=bool)
    if kept is None:
        mask[:] = True
    else:
        mask[kept.numpy()] = True
    at_zero = np.zeros(grid * grid, dtype=bool)
    if zero is not None and zero.numel():
        at_zero[zero.numpy()] = True
    cell = image.shape[0] / grid
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
    axes[0].imshow(image)
    axes[0].set_title("input")
    axes[1].imshow(image)
    shade = np.where(mask.reshape(grid, grid)[..., None], [0, 0, 0, 0], [0, 0, 0, 0.75])
    axes[1].imshow(shade, extent=(0, image.shape[1], image.shape[0], 0), interpolation="nearest")
    for idx in np.flatnonzero(mask):
        r, c = divmod(idx, grid)
        style = dict(ec="magenta", ls="--", lw=0.9) if at_zero[idx] else dict(ec="lime", lw=0.6)
        axes[1].add_patch(plt.Rectangle((c * cell, r * cell), cell, cell, fill=False, **style))
    if at_zero.any():
        by_score = int(mask.sum() - at_zero.sum())
        axes[1].legend(handles=[Line2D([], [], color="lime", lw=1.5, label=f"picked by score ({by_score})"),
                                Line2D([], [], color="magenta", lw=1.5, ls="--",
                                       label=f"picked at zero score (rule: smallest index) ({int(at_zero.sum())})")],
                       loc="upper center", bbox_to_anchor=(0.5, -0.01), fontsize=8, frameon=False)
    axes[1].set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # (the legend sits below the axes)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m idselect demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="local LLaVA checkpoint directory (llava-hf layout)")
    p.add_argument("--image", help="image file (with --model)")
    p.add_argument("--question", default="Describe the image briefly.")
    p.add_argument("--keep", type=keep_value, default=64,
                   help="visual tokens kept per image (an integer) or a fraction in (0, 1] (e.g. 0.25)")
    p.add_argument("--max-new-tokens", type=positive_int, default=16)
    p.add_argument("--repeats", type=positive_int, default=5, help="prefill timing repeats")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="idselect_demo.png", help="PNG showing the kept tokens")
    args = p.parse_args(argv)
    keep = args.keep

    if args.model:
        if not args.image:
            p.error("--model needs --image")
        dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
        model, processor, inputs, picture = real_inputs(args.model, args.image, args.question, args.device, dtype)
        decode = lambda ids: processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        source = args.model
    else:
        model = demo_model().to(args.device)
        picture = synthetic_image()
        inputs = {k: v.to(args.device) for k, v in tiny_inputs(model, picture).items()}
        decode = lambda ids: str(ids[0, inputs["input_ids"].shape[1]:].tolist())
        source = "tiny LLaVA-1.5-shaped model, random weights (answers are noise; counts and times are real)"

    gen = dict(max_new_tokens=args.max_new_tokens, do_sample=False)
    print(f"model: {source}\ndevice: {args.device}, torch {torch.__version__}")
    recorder = PickRecorder()
    with torch.no_grad():
        full_ms = prefill_ms(model, inputs, args.repeats)
        full_answer = decode(model.generate(**inputs, **gen))
        with patch(model, keep=keep, selection=recorder) as handle:
            pruned_ms = prefill_ms(model, inputs, args.repeats)
            pruned_answer = decode(model.generate(**inputs, **gen))
            stats = dict(handle.last_stats)
    grid = int(round(stats["visual_tokens_before"] ** 0.5))
    full_med, pruned_med = statistics.median(full_ms), statistics.median(pruned_ms)
    print(f"visual tokens: {stats['visual_tokens_before']} -> {stats['visual_tokens_after']}  "
          f"(LLM input {stats['sequence_length_before']} -> {stats['sequence_length_after']} tokens)")
    print(f"importance + selection: {stats['select_ms']:.2f} ms (importance {stats['importance_ms']:.2f} ms)")
    kept = stats.get("kept_indices") or [None]
    zero = None
    if recorder.last is not None and kept[0] is not None:
        # The last selection is the generate() call's prefill, whose kept tokens last_stats reports;
        # its picks index the image's tokens directly where every token is a candidate (CLIP, SigLIP).
        features, scores, lengths, picks = recorder.last
        n = int(lengths[0])
        if torch.equal(picks[0].sort().values.cpu(), kept[0].cpu()):
            zero = zero_score_picks(features[0, :n], scores[0, :n], picks[0], handle.options.gamma).cpu()
            print(f"picks made after every remaining score was suppressed to 0: {zero.numel()} of {picks.shape[1]}"
                  + (" (by the tie rule, smallest index first: drawn apart in the picture; fewer with a higher "
                     "gamma, which suppresses dissimilar tokens less, or a smaller keep; docs/hooks.md)"
                     if zero.numel() else ""))
    print(f"prefill: {full_med:.1f} ms unpruned vs {pruned_med:.1f} ms with ID-Selection "
          f"(median of {args.repeats}; speedup {full_med / pruned_med:.2f}x)")
    print(f"answer without selection: {full_answer}\nanswer with selection:    {pruned_answer}")
    if grid * grid == stats["visual_tokens_before"]:
        save_overlay(picture, None if kept[0] is None else kept[0].cpu(), grid, args.out,
                     f"kept {stats['visual_tokens_after']} of {stats['visual_tokens_before']} tokens (ID-Selection)",
                     zero=zero)
        print(f"wrote {os.path.abspath(args.out)}")
    return 0
