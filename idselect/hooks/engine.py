"""The pruning engine: plain tensors in, plain tensors out; nothing here knows transformers.

It takes what the integration layer (``idselect.hooks.integration``) read from a model call -
where each modality's placeholder tokens are, the media the feature functions described, the
options - and decides what the LLM receives:

1. ``place_media``: each medium (image, video) on its batch row and columns, in placeholder
   order, with generate()'s row expansion (beams, several returned sequences) undone and
   adjacent tiles joined where a family asks for it;
2. ``plan``: each medium's budget;
3. ``select``: one selection call per distinct budget, returning the columns that stay;
4. ``idselect.hooks.compaction``: drops the other columns and sets masks, positions and the
   state a cache needs to be continued.

Importance (step 2.5) is ``idselect.hooks.scoring``. The unit tests in tests/test_engine.py
call every step here on plain tensors.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .. import reference
from ..api import select as op_select

IMPORTANCE_CHOICES = ("auto", "unified", "saliency", "relevance")
SELECTION_CHOICES = ("id", "topk")  # ID-Selection; plain top-k by importance (the baseline)

#: A selection function: the op's signature,
#: ``fn(features [G, n, D], scores [G, n], k, gamma, lengths [G]) -> int64 [G, k]``.
SelectionFunction = Callable[[torch.Tensor, torch.Tensor, int, float, torch.Tensor], torch.Tensor]


@dataclass
class Media:
    """One image or video as the LLM receives it."""

    modality: str  # "image" or "video"
    num_tokens: int  # placeholder tokens it fills in the LLM input
    saliency: Optional[torch.Tensor] = None  # [num_tokens] in [0, 1], None if unavailable
    candidates: Optional[torch.Tensor] = None  # [num_tokens] bool; None = all (False: never kept when pruning)

    def candidate_part(self, values: torch.Tensor) -> torch.Tensor:
        """The entries of a per-token tensor that belong to candidate tokens."""
        return values if self.candidates is None else values[self.candidates.to(values.device)]


@dataclass(frozen=True)
class Options:
    """The options of one ``idselect.patch`` handle, checked and resolved."""

    keep: Union[int, float]  # int: tokens per medium; float in (0, 1]: fraction
    gamma: float
    importance: str  # resolved: "unified", "saliency" or "relevance"
    alpha: float
    relevance_layer: int
    relevance_rope: bool
    selection: Union[str, SelectionFunction] = "id"  # "id", "topk", or a SelectionFunction

    def budget(self, num_tokens: int) -> int:
        """Tokens the LLM receives for a medium of num_tokens tokens."""
        if isinstance(self.keep, int):
            return min(self.keep, num_tokens)
        return min(num_tokens, max(1, round(self.keep * num_tokens)))


@dataclass
class PlacedMedium:
    """A medium where it sits in the LLM input, and its budget once planned."""

    media: Media
    row: int  # batch row
    columns: torch.Tensor  # [num_tokens] int64, its placeholder columns in order
    budget: int = 0  # tokens it keeps (``plan``)

    @property
    def pruned(self) -> bool:
        return self.budget < self.media.num_tokens

    @property
    def candidate_columns(self) -> torch.Tensor:
        return self.media.candidate_part(self.columns)


@dataclass
class Selection:
    """What ``select`` decided for one batch."""

    keep_columns: torch.Tensor  # [B, L] bool: the columns the LLM receives
    kept: List[torch.Tensor]  # per planned medium: its kept tokens' indices within it, ascending
    replay: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per medium: (features, scores, picks)


# -- placing -------------------------------------------------------------------------------
def place_media(modality_masks: Dict[str, torch.Tensor], media: Dict[str, List[Media]],
                merge_adjacent: Sequence[str] = ()) -> List[PlacedMedium]:
    """Every medium on its row and columns, in placeholder order.

    Parameters
    ----------
    modality_masks : dict of str to Tensor
        modality -> [B, L] bool, where its placeholder tokens are.
    media : dict of str to list of Media
        modality -> the media its feature functions described, in the order they fill the
        placeholders (row-major). Fewer than the rows need when generate() repeated rows.
    merge_adjacent : sequence of str
        Modalities whose media directly following each other in a row form one (InternVL's
        tiles of one image).
    """
    found: List[PlacedMedium] = []
    for modality, mask in modality_masks.items():
        rows, cols = mask.nonzero(as_tuple=True)  # row-major: the order features fill in
        ordered = expand_for_rows(media.get(modality, []), mask.sum(dim=1).tolist(), modality)
        start, placed = 0, []
        for m in ordered:
            r, c = rows[start : start + m.num_tokens], cols[start : start + m.num_tokens]
            if m.num_tokens and not bool((r == r[0]).all()):
                raise RuntimeError(
                    f"idselect: {modality} features of {m.num_tokens} tokens fall on batch rows "
                    f"{sorted(set(r.tolist()))}: the placeholders of one {modality} must lie in one row"
                )
            placed.append(PlacedMedium(m, int(r[0]) if m.num_tokens else 0, c))
            start += m.num_tokens
        found += join_adjacent(placed) if modality in merge_adjacent else placed
    return found


def expand_for_rows(media: List[Media], row_counts: List[int], modality: str) -> List[Media]:
    """The media in placeholder order for rows that generate() may have expanded (beams,
    several return sequences: each prompt's rows repeated, its encoded media recorded once)."""
    total = sum(row_counts)
    described = sum(m.num_tokens for m in media)
    if described == total:
        return media
    expand = total // described if described else 0
    if not described or expand * described != total or len(row_counts) % expand:
        raise RuntimeError(f"idselect: {total} {modality} placeholder tokens but the {modality} features describe {described}")
    out, start = [], 0
    for first in range(0, len(row_counts), expand):
        need, group = row_counts[first], []
        while need > 0 and start < len(media):
            group.append(media[start])
            need -= media[start].num_tokens
            start += 1
        if need != 0 or any(c != row_counts[first] for c in row_counts[first:first + expand]):
            raise RuntimeError(f"idselect: the {modality} placeholders of batch rows {first}.. do not match their features")
        out += group * expand
    return out


def join_adjacent(placed: List[PlacedMedium]) -> List[PlacedMedium]:
    """Join media whose placeholder tokens directly follow each other in one row into one
    medium with one budget."""
    joined: List[PlacedMedium] = []
    for p in placed:
        if joined:
            last = joined[-1]
            if last.row == p.row and last.media.modality == p.media.modality and int(last.columns[-1]) + 1 == int(p.columns[0]):
                sal = None
                if last.media.saliency is not None and p.media.saliency is not None:
                    sal = torch.cat([last.media.saliency, p.media.saliency])
                joined[-1] = PlacedMedium(Media(p.media.modality, last.media.num_tokens + p.media.num_tokens, sal),
                                          p.row, torch.cat([last.columns, p.columns]))
                continue
        joined.append(p)
    return joined


def plan(placed: List[PlacedMedium], options: Options) -> List[PlacedMedium]:
    """The media with their budgets set (``Options.budget``)."""
    for p in placed:
        p.budget = options.budget(p.media.num_tokens)
    return placed


# -- selecting -----------------------------------------------------------------------------
def topk_select(features: torch.Tensor, scores: torch.Tensor, k: int, gamma: float,
                lengths: torch.Tensor) -> torch.Tensor:
    """The ``k`` best scores per row, ties to the smaller index: the no-diversity baseline
    (``selection="topk"``), with the op's signature (``features`` and ``gamma`` unused)."""
    width = scores.shape[1]
    valid = torch.arange(width, device=scores.device)[None] < lengths[:, None]
    order = torch.where(valid, scores, scores.new_full((), -1.0)).sort(dim=1, descending=True, stable=True).indices
    return order[:, :k]


def _op(features, scores, k, gamma, lengths):
    return op_select(features, scores, k, gamma, lengths, validate=False)  # scores come from importance, in [0, 1]


def selection_function(selection: Union[str, SelectionFunction]) -> Tuple[SelectionFunction, bool]:
    """The function behind ``Options.selection``, and whether its result must be checked
    (a caller's function is; the op and top-k are trusted)."""
    if callable(selection):
        return selection, True
    return {"id": _op, "topk": topk_select}[selection], False


def select(planned: List[PlacedMedium], scores: List[torch.Tensor], embeds: torch.Tensor,
           options: Options) -> Selection:
    """Select each pruned medium's tokens: one selection call per distinct effective budget
    (ragged media padded, with lengths).

    Parameters
    ----------
    planned : list of PlacedMedium
        The media to prune (``pruned`` True), budgets set.
    scores : list of Tensor
        Per medium, importance in [0, 1] over its candidate tokens.
    embeds : Tensor
        [B, L, D], the LLM input the features are read from.
    options : Options
        ``gamma`` and ``selection``.
    """
    fn, check = selection_function(options.selection)
    B, L = embeds.shape[:2]
    keep_columns = torch.ones(B, L, dtype=torch.bool, device=embeds.device)
    kept: List[Optional[torch.Tensor]] = [None] * len(planned)
    replay: List[Optional[tuple]] = [None] * len(planned)
    candidate_cols = [p.candidate_columns for p in planned]
    for p in planned:
        keep_columns[p.row, p.columns] = False
    # One call per effective budget: a medium with fewer candidates than its budget keeps
    # them all without lowering the budget of the others.
    groups: Dict[int, List[int]] = {}
    for i, p in enumerate(planned):
        groups.setdefault(min(p.budget, candidate_cols[i].numel()), []).append(i)
    for k_eff, members in groups.items():
        cand_cols = [candidate_cols[i] for i in members]
        sizes = [c.numel() for c in cand_cols]
        width = max(sizes)
        feats = embeds.new_zeros(len(members), width, embeds.shape[-1])
        s = torch.zeros(len(members), width, device=embeds.device)
        for j, i in enumerate(members):
            feats[j, : sizes[j]] = embeds[planned[i].row, cand_cols[j]]
            s[j, : sizes[j]] = scores[i]
        lengths = torch.tensor(sizes, device=embeds.device)
        picked = fn(feats.detach(), s, k_eff, options.gamma, lengths)
        if check:
            picked = checked_picks(picked, lengths, k_eff)
        for j, i in enumerate(members):
            chosen = cand_cols[j][picked[j]]
            keep_columns[planned[i].row, chosen] = True
            kept[i] = torch.searchsorted(planned[i].columns, chosen.sort().values)  # index within the medium
            replay[i] = (feats[j, : sizes[j]].detach(), s[j, : sizes[j]], picked[j])
    return Selection(keep_columns, kept, replay)


def checked_picks(picked: Any, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """What a caller's selection function returned, checked before it prunes anything."""
    if not isinstance(picked, torch.Tensor) or picked.dtype != torch.long or tuple(picked.shape) != (lengths.numel(), k):
        raise TypeError(
            f"idselect: the selection function must return an int64 tensor of shape {[lengths.numel(), k]}, got "
            + (f"{picked.dtype} {list(picked.shape)}" if isinstance(picked, torch.Tensor) else type(picked).__name__)
        )
    if bool(((picked < 0) | (picked >= lengths[:, None])).any()):
        raise ValueError(f"idselect: the selection function returned indices outside [0, length) per row: {picked.tolist()}")
    return picked


def zero_score_picks(replay: List[Optional[tuple]], gamma: float) -> List[Optional[int]]:
    """Per medium, the picks made when its best remaining score was 0 (the rule then takes
    the smallest index): the selection replayed on the recorded picks with the reference's
    update (``idselect.reference.suppress``), in float32."""
    out: List[Optional[int]] = []
    for sel in replay:
        if sel is None:
            out.append(None)
            continue
        feats, scores, picks = sel
        f = feats.float()
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = (f[picks] @ f.T).clamp(-1.0, 1.0)  # [k, n]
        s = torch.where(scores.float() > 0, scores.float(), torch.zeros_like(scores, dtype=torch.float32))
        zero = torch.zeros((), dtype=torch.long, device=s.device)
        for t in range(picks.numel()):
            at = s[picks[t]]
            zero += (at <= 0).long()
            s = reference.suppress(s, cos[t], at, gamma)
        out.append(int(zero))  # one synchronisation per medium
    return out


class Timing:
    """Importance and selection time of one pruning, without host synchronisation: on CUDA,
    events are recorded on the stream and read only when the statistics are read."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: List[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def elapsed_ms(self, start: int, end: int) -> float:
        a, b = self.marks[start], self.marks[end]
        if self.cuda:
            b.synchronize()
            return float(a.elapsed_time(b))
        return (b - a) * 1e3
