"""Oracles for the hooks that do not use the hooks: the unpatched model run on a
sequence pruned by hand, and greedy decoding by hand.

Only the kept token indices come from a patched run (``last_stats["kept_indices"]``): which
tokens the selection keeps is the op's business (tested against the reference elsewhere);
everything else here - which columns the LLM sees, their order, padding, mask, positions,
the cache - is rebuilt from the prompt alone.
"""
from typing import List, Optional, Tuple

import torch

from . import tiny


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


def language_inputs(model, kwargs) -> dict:
    """The keyword arguments the unpatched model hands its language model for ``kwargs``."""
    seen = {}
    hook = model.model.language_model.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**kwargs)
    finally:
        hook.remove()
    return seen


def llm_input_embeds(model, kwargs) -> torch.Tensor:
    """What the unpatched model feeds its language model for ``kwargs`` (features merged)."""
    return language_inputs(model, kwargs)["inputs_embeds"]


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


def mrope_pruned_rows(model, kwargs, keep: torch.Tensor):
    """Per prompt row, a function ``next_logits(tokens)``: the unpatched language model run (no
    cache) on the row's kept columns only - their embeddings, their original (t, h, w)
    positions and, for Qwen3-VL, their visual mask and exactly their DeepStack rows - followed
    by ``tokens`` (text; each at the next position on every axis); returns the last logits."""
    seen = language_inputs(model, kwargs)
    visual = seen.get("visual_pos_masks")
    llm, embed = model.model.language_model, model.get_input_embeddings()

    def row(b):
        cols = keep[b]
        prompt = seen["inputs_embeds"][b, cols][None]
        positions = seen["position_ids"][-3:, b, cols][:, None]
        extra = {}
        if visual is not None:
            mine = torch.zeros_like(visual)
            mine[b] = cols
            rows_kept = mine[visual]  # DeepStack rows are row-major over the visual positions
            extra = dict(visual_pos_masks=visual[b, cols][None],
                         deepstack_visual_embeds=[d[rows_kept] for d in seen["deepstack_visual_embeds"]])

        def next_logits(tokens):
            n = len(tokens)
            with torch.no_grad():
                embeds = torch.cat([prompt, embed(torch.tensor([list(tokens)], dtype=torch.long))], dim=1)
                pos = torch.cat([positions, positions.amax(dim=2, keepdim=True) + 1 + torch.arange(n)], dim=2)
                more = dict(extra)
                if extra:
                    more["visual_pos_masks"] = torch.cat([extra["visual_pos_masks"], extra["visual_pos_masks"].new_zeros(1, n)], 1)
                hidden = llm(inputs_embeds=embeds, position_ids=pos, use_cache=False, **more).last_hidden_state
                return model.lm_head(hidden[0, -1])

        return next_logits

    return [row(b) for b in range(keep.shape[0])]


def mrope_pruned_greedy(model, kwargs, keep: torch.Tensor, steps: int, tail: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Greedy decoding by hand for M-RoPE models (Qwen2.5-VL, Qwen3-VL, Qwen3.5) over each
    row's hand-pruned sequence (``mrope_pruned_rows``). ``tail`` [B, n]: text tokens that follow
    the prompt (a later turn). Returns the new tokens [B, steps]."""
    out = []
    for b, next_logits in enumerate(mrope_pruned_rows(model, kwargs, keep)):
        tokens = [] if tail is None else tail[b].tolist()
        start = len(tokens)
        for _ in range(steps):
            tokens.append(int(next_logits(tokens).argmax()))
        out.append(tokens[start:])
    return torch.tensor(out)


def mrope_pruned_beams(model, kwargs, keep: torch.Tensor, steps: int, num_beams: int, num_return: int) -> torch.Tensor:
    """Beam search by hand over each row's hand-pruned sequence, as generate() does it without
    an end-of-sequence token: every step keeps the ``num_beams`` continuations of highest total
    log-probability; the result is the ``num_return`` best beams, best first (all have the same
    length, so the length penalty does not reorder them). Returns [B * num_return, steps]."""
    out = []
    for next_logits in mrope_pruned_rows(model, kwargs, keep):
        beams = [((), 0.0)]
        for _ in range(steps):
            candidates = []
            for tokens, score in beams:
                logp = torch.log_softmax(next_logits(tokens).float(), dim=-1)
                top = logp.topk(num_beams)
                candidates += [(tokens + (int(t),), score + float(v)) for v, t in zip(top.values, top.indices)]
            beams = sorted(candidates, key=lambda c: -c[1])[:num_beams]
        out += [list(tokens) for tokens, _ in beams[:num_return]]
    return torch.tensor(out)
