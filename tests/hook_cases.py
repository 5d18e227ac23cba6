"""Tiny models and consistent inputs for the hook tests, one entry per supported family."""
import torch

from idselect import tiny


def llava_case(rows_images, seed=0):
    """rows_images: per batch row, (text_before, images, text_after) lengths; returns
    (model, generate kwargs, visual tokens per image list per row)."""
    model = tiny.tiny_llava(seed)
    g = torch.Generator().manual_seed(seed + 1)
    rows, pixels, counts = [], [], []
    for before, images, after in rows_images:
        ids = list(torch.randint(1, 90, (before,), generator=g).tolist())
        for _ in range(images):
            ids += [tiny.IMAGE_TOKEN] * 16 + torch.randint(1, 90, (2,), generator=g).tolist()
            pixels.append(torch.randn(3, 28, 28, generator=g))
            counts.append(16)
        ids += torch.randint(1, 90, (after,), generator=g).tolist()
        rows.append(ids)
    input_ids, mask = tiny.left_pad(rows)
    return model, dict(input_ids=input_ids, attention_mask=mask, pixel_values=torch.stack(pixels)), counts


def llava_next_case(rows_images, seed=0):
    model = tiny.tiny_llava_next(seed)
    g = torch.Generator().manual_seed(seed + 1)
    sizes = [[28, 56], [56, 56], [56, 28], [28, 28]]
    all_sizes = []
    for _, images, _ in rows_images:
        all_sizes += [sizes[(len(all_sizes) + i) % len(sizes)] for i in range(images)]
    pixel_values, image_sizes, counts = tiny.llava_next_pixels(model, all_sizes, seed)
    rows, k = [], 0
    for before, images, after in rows_images:
        ids = torch.randint(1, 90, (before,), generator=g).tolist()
        for _ in range(images):
            ids += [tiny.IMAGE_TOKEN] * counts[k] + torch.randint(1, 90, (2,), generator=g).tolist()
            k += 1
        ids += torch.randint(1, 90, (after,), generator=g).tolist()
        rows.append(ids)
    input_ids, mask = tiny.left_pad(rows)
    return model, dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixel_values, image_sizes=image_sizes), counts


FRAMES, PER_FRAME = 4, 17  # Video-LLaVA videos keep [CLS]: 16 patches + 1 per frame


def video_llava_case(rows_images, seed=0):
    """Each row: its images, then one video."""
    model = tiny.tiny_video_llava(seed)
    g = torch.Generator().manual_seed(seed + 1)
    rows, pixels, videos, counts = [], [], [], []
    for before, images, after in rows_images:
        ids = torch.randint(1, 90, (before,), generator=g).tolist()
        for _ in range(images):
            ids += [tiny.IMAGE_TOKEN] * 16 + torch.randint(1, 90, (2,), generator=g).tolist()
            pixels.append(torch.randn(3, 28, 28, generator=g))
            counts.append(16)
        ids += [tiny.VIDEO_TOKEN] * (FRAMES * PER_FRAME)
        videos.append(torch.randn(FRAMES, 3, 28, 28, generator=g))
        counts.append(FRAMES * PER_FRAME)
        ids += torch.randint(1, 90, (after,), generator=g).tolist()
        rows.append(ids)
    input_ids, mask = tiny.left_pad(rows)
    kwargs = dict(input_ids=input_ids, attention_mask=mask, pixel_values_videos=torch.stack(videos))
    if pixels:
        kwargs[tiny.video_llava_image_argument(model)] = torch.stack(pixels)
    return model, kwargs, counts


CASES = {"llava": llava_case, "llava_next": llava_next_case, "video_llava": video_llava_case}


def row_kwargs(kwargs, row, rows_images, counts):
    """The inputs of one batch row alone (unpadded), for batch-vs-alone comparisons."""
    mask = kwargs["attention_mask"][row].bool()
    out = {"input_ids": kwargs["input_ids"][row][mask][None], "attention_mask": torch.ones(1, int(mask.sum()), dtype=torch.long)}
    first = sum(n for _, n, _ in rows_images[:row])
    count = rows_images[row][1]
    for key in ("pixel_values", "pixel_values_images", "image_sizes"):  # per image
        if key in kwargs and count > 0:
            out[key] = kwargs[key][first : first + count]
    if "pixel_values_videos" in kwargs:  # one video per row
        out["pixel_values_videos"] = kwargs["pixel_values_videos"][row : row + 1]
    return out
