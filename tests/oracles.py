"""Oracles for the hook tests that do not use the hooks: the unpatched model run on a
sequence pruned by hand, and greedy decoding by hand.

Only the kept token indices come from a patched run (``last_stats["kept_indices"]``): which
tokens the selection keeps is the op's business (tested against the reference elsewhere);
everything else here - which columns the LLM sees, their order, padding, mask, positions,
the cache - is rebuilt from the prompt alone.
"""
from typing import List, Optional, Tuple

import torch

from idselect import tiny


def media_runs(input_ids: torch.Tensor, runs_per_video: int = 1) -> List[Tuple[int, torch.Tensor]]:
    """(row, columns) of every image / video in the order the hooks number them: images
    first, then videos, each row-major; a medium is a run of adjacent placeholders (an
    InternVL image's tiles form one run), except that ``runs_per_video`` successive runs of
    video placeholders make one video (Qwen3-VL writes a timestamp before every frame)."""
    media = []
    for token in (tiny.IMAGE_TOKEN, tiny.VIDEO_TOKEN):
        per_medium = runs_per_video if token == tiny.VIDEO_TOKEN else 1
        for row in range(input_ids.shape[0]):
            cols = (input_ids[row] == token).nonzero().squeeze(1).tolist()
            runs, start = [], 0
            for i in range(1, len(cols) + 1):
                if i == len(cols) or cols[i] != cols[i - 1] + 1:
                    runs.append(cols[start:i])
                    start = i
            assert len(runs) % per_medium == 0, (row, len(runs), per_medium)
            for first in range(0, len(runs), per_medium):
                media.append((row, torch.tensor(sum(runs[first:first + per_medium], []))))
    return media


def kept_columns(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], kept_indices,
                 runs_per_video: int = 1) -> torch.Tensor:
    """[B, L] bool: real text tokens plus each medium's kept tokens."""
    keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool().clone()
    runs = media_runs(input_ids, runs_per_video)
    assert len(runs) == len(kept_indices), (len(runs), len(kept_indices))
    for (row, cols), kept in zip(runs, kept_indices):
        keep[row, cols] = False
        keep[row, cols[kept.cpu()]] = True
    return keep


def llm_input_embeds(model, kwargs) -> torch.Tensor:
    """What the unpatched model feeds its language model for ``kwargs`` (features merged)."""
    seen = {}

    def grab(module, args, kw):
        seen["embeds"] = kw["inputs_embeds"].detach().clone()

    hook = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**kwargs)
    finally:
        hook.remove()
    return seen["embeds"]


def left_pack(embeds: torch.Tensor, keep: torch.Tensor):
    """Each row's kept columns, in order, left-padded to one width: (embeds, mask)."""
    B, _, H = embeds.shape
    width = int(keep.sum(dim=1).max())
    out = embeds.new_zeros(B, width, H)
    mask = torch.zeros(B, width, dtype=torch.long)
    for b in range(B):
        row = embeds[b, keep[b]]
        out[b, width - row.shape[0]:] = row
        mask[b, width - row.shape[0]:] = 1
    return out, mask


def hand_pruned(model, kwargs, kept_indices):
    """(inputs_embeds, attention_mask) of the pruned prompt, built without the hooks."""
    embeds = llm_input_embeds(model, kwargs)
    keep = kept_columns(kwargs["input_ids"], kwargs.get("attention_mask"), kept_indices)
    return left_pack(embeds, keep)


def embed_tokens(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.get_input_embeddings()(ids)


def generate_on_embeds(model, embeds, mask, **gen):
    """The unpatched model's generate() over a sequence given as embeddings: new tokens."""
    with torch.no_grad():
        return model.generate(inputs_embeds=embeds, attention_mask=mask, **gen)


def qwen_masked_greedy(model, kwargs, keep: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding by hand with the unpatched Qwen2.5-VL: every step runs the whole
    sequence with the original M-RoPE positions (``get_rope_index``) and the pruned tokens
    masked out as keys - the pruned prompt, positions as the contract says. One row."""
    seq, mm = kwargs["input_ids"], kwargs["mm_token_type_ids"]
    keep = keep.clone()
    new = []
    for _ in range(steps):
        positions, _ = model.model.get_rope_index(seq, mm, kwargs.get("image_grid_thw"), kwargs.get("video_grid_thw"))
        L = seq.shape[1]
        allowed = torch.tril(torch.ones(L, L, dtype=torch.bool)) & keep[0][None, :]
        mask4d = torch.zeros(1, 1, L, L).masked_fill(~allowed, torch.finfo(torch.float32).min)
        media = {k: kwargs[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw") if k in kwargs}
        with torch.no_grad():
            logits = model(input_ids=seq, position_ids=positions, attention_mask=mask4d, **media).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
        new.append(token)
        seq = torch.cat([seq, token], dim=1)
        mm = torch.cat([mm, torch.zeros_like(token)], dim=1)
        keep = torch.cat([keep, torch.ones(1, 1, dtype=torch.bool)], dim=1)
    return torch.cat(new, dim=1)
