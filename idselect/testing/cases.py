"""Tiny models and consistent inputs for verifying the hooks, one builder per supported family.

``build(family, rows, first_row=0)`` returns (generate kwargs, visual tokens per medium).
Every row's content comes from its own seed (``first_row + r``), so building one row alone with
``first_row=r`` reproduces exactly that row of a batch: the batch-vs-alone tests rely on it.
Each row is (text_before, images, text_after); Video-LLaVA, Qwen2.5-VL, Qwen3-VL and
LLaVA-OneVision (and Qwen3.5) rows also end with one video. A Qwen3-VL / Qwen3.5 video has a timestamp token
before each frame, as their processors write it, so its placeholders come in one run per frame.
"""
import inspect

import torch
from transformers import LlamaModel

from . import tiny

#: The name the installed transformers gives the cache argument (5.24 renamed past_key_values
#: to cache), read from transformers itself, not from idselect.
CACHE_KW = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def returned_cache(output):
    """The cache a model or generate() output carries, under the release's own name."""
    return output[CACHE_KW]


def cache_kwargs(output):
    """Keyword arguments that continue ``output``'s cache, as a user of this release writes them."""
    return {CACHE_KW: returned_cache(output)}

MODELS = {
    "llava": tiny.tiny_llava,
    "llava_next": tiny.tiny_llava_next,
    "video_llava": tiny.tiny_video_llava,
    "qwen2_5_vl": tiny.tiny_qwen2_5_vl,
    "internvl": tiny.tiny_internvl,
    "qwen3_vl": tiny.tiny_qwen3_vl,
    "llava_onevision": tiny.tiny_llava_onevision,
    "qwen3_5": tiny.tiny_qwen3_5,
}
MROPE = ("qwen2_5_vl", "qwen3_vl", "qwen3_5")  # 3-D M-RoPE positions: the prompt pruned by hand is not a shorter prompt
TIMESTAMPED_VIDEOS = ("qwen3_vl", "qwen3_5")  # a timestamp before every frame: one placeholder run per frame
FRAMES, PER_FRAME = 4, 17  # Video-LLaVA videos keep [CLS]: 16 patches + 1 per frame
NEXT_SIZES = [[28, 56], [56, 56], [56, 28], [28, 28]]
QWEN_IMAGE_GRID, QWEN_VIDEO_GRID = (1, 8, 8), (2, 8, 8)  # 16 and 32 tokens after the 2 x 2 merger
QWEN3_PATCH = 3 * 2 * 8 * 8  # channels x temporal patch x 8 x 8 px
ONEVISION_FRAMES = 4  # 16 tokens per frame, pooled 2 x 2 to 4, plus one newline: 17 per video
INTERNVL_TILES = [2, 1, 3]  # tiles per image, cycling; 16 tokens per tile


def text(g, n):
    return torch.randint(1, 90, (n,), generator=g).tolist()


def build(family, model, rows, first_row=0):
    ids_rows, counts = [], []
    pixels, sizes, videos = [], [], []
    for r, (before, images, after) in enumerate(rows):
        g = torch.Generator().manual_seed(1000 + first_row + r)
        ids = text(g, before)
        for i in range(images):
            if family in ("llava_next", "llava_onevision"):
                size = NEXT_SIZES[(first_row + r + i) % len(NEXT_SIZES)]
                px, sz, n = tiny.anyres_pixels(model, [size], seed=1000 + first_row + r + 7 * i)
                pixels.append(px[0]), sizes.append(sz[0])
                n = n[0]
            elif family in MROPE:
                t, h, w = QWEN_IMAGE_GRID
                pixels.append(torch.randn(t * h * w, 1176 if family == "qwen2_5_vl" else QWEN3_PATCH, generator=g))
                sizes.append(torch.tensor(QWEN_IMAGE_GRID))
                n = t * h * w // 4
                ids += [102]
            elif family == "internvl":
                k = INTERNVL_TILES[(first_row + r + i) % len(INTERNVL_TILES)]
                pixels.append(torch.randn(k, 3, 56, 56, generator=g))
                n = 16 * k
            else:
                pixels.append(torch.randn(3, 28, 28, generator=g))
                n = 16
            ids += [tiny.IMAGE_TOKEN] * n + text(g, 2)
            counts.append(n)
        if family == "video_llava":
            ids += [tiny.VIDEO_TOKEN] * (FRAMES * PER_FRAME)
            videos.append(torch.randn(FRAMES, 3, 28, 28, generator=g))
            counts.append(FRAMES * PER_FRAME)
        if family == "qwen2_5_vl":
            t, h, w = QWEN_VIDEO_GRID
            ids += [102] + [tiny.VIDEO_TOKEN] * (t * h * w // 4) + [103]
            videos.append(torch.randn(t * h * w, 1176, generator=g))
            counts.append(t * h * w // 4)
        if family in TIMESTAMPED_VIDEOS:
            t, h, w = QWEN_VIDEO_GRID
            for frame in range(t):  # "<timestamp> <vision_start> frame <vision_end>"
                ids += text(g, 1) + [102] + [tiny.VIDEO_TOKEN] * (h * w // 4) + [103]
            videos.append(torch.randn(t * h * w, QWEN3_PATCH, generator=g))
            counts.append(t * h * w // 4)
        if family == "llava_onevision":
            ids += [tiny.VIDEO_TOKEN] * (ONEVISION_FRAMES * 4 + 1)
            videos.append(torch.randn(ONEVISION_FRAMES, 3, 28, 28, generator=g))
            counts.append(ONEVISION_FRAMES * 4 + 1)
        ids_rows.append(ids + text(g, after))
    input_ids, mask = tiny.left_pad(ids_rows)
    kwargs = dict(input_ids=input_ids, attention_mask=mask)
    if family in MROPE:
        kwargs["mm_token_type_ids"] = (input_ids == tiny.IMAGE_TOKEN).long() + 2 * (input_ids == tiny.VIDEO_TOKEN).long()
        if pixels:
            kwargs.update(pixel_values=torch.cat(pixels), image_grid_thw=torch.stack(sizes))
        kwargs.update(pixel_values_videos=torch.cat(videos), video_grid_thw=torch.tensor([QWEN_VIDEO_GRID] * len(videos)))
    elif family == "internvl":
        if pixels:
            kwargs["pixel_values"] = torch.cat(pixels)
    elif family in ("llava_next", "llava_onevision"):
        if pixels:
            crops = max(p.shape[0] for p in pixels)
            padded = [torch.cat([p, p.new_zeros(crops - p.shape[0], *p.shape[1:])]) for p in pixels]
            kwargs.update(pixel_values=torch.stack(padded), image_sizes=torch.stack(sizes))
        if videos:
            kwargs["pixel_values_videos"] = torch.stack(videos)
    elif family == "video_llava":
        kwargs["pixel_values_videos"] = torch.stack(videos)
        if pixels:
            kwargs[tiny.video_llava_image_argument(model)] = torch.stack(pixels)
    elif pixels:
        kwargs["pixel_values"] = torch.stack(pixels)
    return kwargs, counts


def case(family, rows, seed=0):
    model = MODELS[family](seed)
    kwargs, counts = build(family, model, rows)
    return model, kwargs, counts


def runs_per_video(family):
    """Runs of adjacent placeholders that make one video (Qwen3-VL: one per frame)."""
    return QWEN_VIDEO_GRID[0] if family in TIMESTAMPED_VIDEOS else 1
