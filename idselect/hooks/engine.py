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

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
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
    #: [num_tokens] bool on the host; None = all (False: never kept when pruning). A device tensor
    #: is read with the prefill's layout (``host_candidates``), not where the family builds it.
    candidates: Optional[Any] = None
    #: The model's forward may append one newline token after these features (LLaVA-OneVision
    #: videos before transformers 5.23): decided when the candidates are read - if the last
    #: token is a candidate (not a newline), one more token, never a candidate, follows.
    newline_may_follow: bool = False
    #: A medium joined from several (InternVL's tiles): its parts' saliency in order, read
    #: concatenated with every other medium's (``saliencies``), not concatenated per medium.
    saliency_parts: Tuple[torch.Tensor, ...] = ()
    #: Saliency and candidates a family can only lay out with host values (LLaVA-NeXT's image
    #: sizes): read with the prompt's layout, then ``deferred.resolve`` gives item ``deferred_item``'s.
    deferred: Optional["Deferred"] = None
    deferred_item: int = 0

    def saliencies(self) -> Optional[Tuple[torch.Tensor, ...]]:
        """Its saliency as consecutive parts, None if unavailable."""
        if self.saliency_parts:
            return self.saliency_parts
        return None if self.saliency is None else (self.saliency,)

    def candidate_mask(self) -> np.ndarray:
        """[num_tokens] bool on the host: which tokens may be kept."""
        if self.candidates is None:
            return np.ones(self.num_tokens, dtype=bool)
        return np.asarray(self.candidates, dtype=bool)


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
    columns: np.ndarray  # [num_tokens] int64 on the host, its placeholder columns in order
    budget: int = 0  # tokens it keeps (``plan``)
    candidates: Optional[np.ndarray] = None  # indices within it of the tokens it may keep (``plan``)

    @property
    def pruned(self) -> bool:
        return self.budget < self.media.num_tokens


@dataclass
class Selection:
    """What ``select`` decided for one batch (tensors on the device; nothing read back)."""

    keep_columns: torch.Tensor  # [B, L] bool: the columns the LLM receives
    table: "CandidateTable"  # the pruned media, in table order
    kept: List[torch.Tensor]  # per budget group: [media, k] kept indices within each medium, ascending
    replay: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per budget group: (features, scores, picks)

    def kept_indices(self) -> List[torch.Tensor]:
        """Per pruned medium, in the planned order: its kept tokens' indices within it (empty
        for a medium none of whose tokens may be kept, e.g. all masked)."""
        rows = [row for group in self.kept for row in group.unbind(0)]
        empty = self.keep_columns.new_empty(0, dtype=torch.long)
        return self.in_planned_order(rows, [empty] * len(self.table.empty))

    def in_planned_order(self, values: List[Any], for_empty: List[Any]) -> List[Any]:
        """Per-medium values in table order (and ``for_empty`` for the media left out of the
        table), in the order of the planned media."""
        ranked = sorted([(self.table.order[r], v) for r, v in enumerate(values)]
                        + list(zip(self.table.empty, for_empty)), key=lambda pair: pair[0])
        return [v for _, v in ranked]


# -- host reads and uploads ------------------------------------------------------------------
def read_to_host(values: torch.Tensor) -> np.ndarray:
    """The prefill's one read of device values on the host (the prompt's layout): every
    other step works from what it returns, so nothing else on the hot path waits for the
    device."""
    return values.detach().cpu().numpy()


def upload(arrays: Sequence[np.ndarray], device: torch.device) -> List[torch.Tensor]:
    """Host int64 arrays on ``device`` in one copy (pinned and asynchronous on CUDA, so the
    host does not wait for the stream), returned with their shapes."""
    flat = np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1) for a in arrays])
    buffer = torch.from_numpy(flat)
    if device.type == "cuda":
        buffer = buffer.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        buffer = buffer.to(device)
    out, start = [], 0
    for a in arrays:
        a = np.asarray(a)
        out.append(buffer[start:start + a.size].view(a.shape))
        start += a.size
    return out


class Deferred:
    """Device values (``values``) that a feature function's media need on the host to lay out
    their saliency and candidates: read in the prefill's one read, then ``resolve`` runs once
    for all the media of that call."""

    def __init__(self, values: Optional[torch.Tensor]):
        self.values = values

    def resolve(self, host: Optional[np.ndarray]) -> List[Tuple[Optional[torch.Tensor], Optional[np.ndarray]]]:
        """Per item: (saliency [tokens] or None, candidates [tokens] bool on the host or None)."""
        raise NotImplementedError


def with_host_candidates(media: Media, read: Optional[np.ndarray]) -> Media:
    """``media`` with its candidate mask as read on the host (``read``, None if it had none
    on the device), and the newline the model appends after it where there is one."""
    candidates = media.candidates if read is None else read.astype(bool)
    if media.newline_may_follow and candidates is not None and candidates[-1]:
        return dataclasses.replace(media, num_tokens=media.num_tokens + 1, candidates=np.append(candidates, False),
                                   newline_may_follow=False)
    if read is None:
        return media
    return dataclasses.replace(media, candidates=candidates)


def _host_bool(mask) -> np.ndarray:
    return mask if isinstance(mask, np.ndarray) else read_to_host(mask)


# -- placing -------------------------------------------------------------------------------
def place_media(modality_masks: Dict[str, Any], media: Dict[str, List[Media]],
                merge_adjacent: Sequence[str] = ()) -> List[PlacedMedium]:
    """Every medium on its row and columns, in placeholder order (host arrays, no device work).

    Parameters
    ----------
    modality_masks : dict of str to ndarray
        modality -> [B, L] bool on the host, where its placeholder tokens are (a CPU tensor is
        read as such).
    media : dict of str to list of Media
        modality -> the media its feature functions described, in the order they fill the
        placeholders (row-major). Fewer than the rows need when generate() repeated rows. A
        modality whose feature functions did not run in this call has no media: its
        placeholder ids are plain text here, as for the unpatched model.
    merge_adjacent : sequence of str
        Modalities whose media directly following each other in a row form one (InternVL's
        tiles of one image).
    """
    found: List[PlacedMedium] = []
    for modality, mask in modality_masks.items():
        described = media.get(modality, [])
        if not described:
            continue
        mask = _host_bool(mask)
        rows, cols = np.nonzero(mask)  # row-major: the order features fill in
        ordered = expand_for_rows(described, mask.sum(axis=1).tolist(), modality)
        start, placed = 0, []
        for m in ordered:
            r, c = rows[start : start + m.num_tokens], cols[start : start + m.num_tokens]
            if m.num_tokens and r[0] != r[-1]:
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
            if last.row == p.row and last.media.modality == p.media.modality and last.columns[-1] + 1 == p.columns[0]:
                parts, cand = (), None
                if last.media.saliencies() is not None and p.media.saliencies() is not None:
                    parts = last.media.saliencies() + p.media.saliencies()
                if last.media.candidates is not None or p.media.candidates is not None:
                    cand = np.concatenate([last.media.candidate_mask(), p.media.candidate_mask()])
                joined[-1] = PlacedMedium(Media(p.media.modality, last.media.num_tokens + p.media.num_tokens, None, cand,
                                                saliency_parts=parts),
                                          p.row, np.concatenate([last.columns, p.columns]))
                continue
        joined.append(p)
    return joined


def plan(placed: List[PlacedMedium], options: Options, real: Optional[np.ndarray] = None) -> List[PlacedMedium]:
    """The media with their budgets set (``Options.budget``) and their candidate tokens: the
    family's candidates that the 2-D mask ``real`` ([B, L] bool on the host) does not mask.
    A masked token is never kept, so a medium keeps at most its unmasked candidates."""
    for p in placed:
        p.budget = options.budget(p.media.num_tokens)
        usable = p.media.candidate_mask()
        if real is not None:
            usable = usable & real[p.row, p.columns]
        p.candidates = np.flatnonzero(usable)
    return placed


# -- the candidate table -------------------------------------------------------------------
@dataclass
class CandidateTable:
    """The candidate tokens of every pruned medium of one prefill as one padded table, built
    on the host and uploaded in one copy; every later step indexes it, so the number of
    kernels does not depend on the number of media or rows.

    Table rows are the media sorted by (budget, candidates): ``budget_groups`` and
    ``size_groups`` are runs of equal effective budget and of equal candidate count.
    """

    media: List[PlacedMedium]  # table order
    order: List[int]  # table row -> index in the planned list
    empty: List[int]  # pruned media with no candidate (all masked): indices in the planned list
    rows: torch.Tensor  # [G, n] int64: batch row of each candidate (padding repeats a valid one)
    columns: torch.Tensor  # [G, n] int64: its column in the sequence
    index: torch.Tensor  # [G, n] int64: its index within the medium
    lengths: torch.Tensor  # [G] int64: candidates per medium
    saliency_index: Optional[torch.Tensor]  # [G, n] int64 into the media's saliency, concatenated
    keep_base: torch.Tensor  # [B, L] bool: real columns that belong to no pruned medium
    query_columns: torch.Tensor  # [G] int64: column of the last real token of each medium's row
    budgets: np.ndarray  # [G]: tokens each medium keeps (budget, at most its candidates)
    row_lengths: np.ndarray  # [B]: columns each row keeps after selection
    budget_groups: List[Tuple[int, int, int]]  # (start, stop, k)
    size_groups: List[Tuple[int, int, int]]  # (start, stop, n)

    def gather(self, values: torch.Tensor, start: int = 0, stop: Optional[int] = None,
               width: Optional[int] = None) -> torch.Tensor:
        """[B, L, ...] -> [stop - start, width, ...]: the values at table rows start:stop."""
        rows, cols = self.rows[start:stop, :width], self.columns[start:stop, :width]
        return values[rows, cols]

    def saliency(self) -> torch.Tensor:
        """[G, n] float: every medium's saliency at its candidates (one cat, one gather)."""
        if not self.media:  # every pruned medium is masked out: an empty table
            return torch.zeros(self.rows.shape, dtype=torch.float32, device=self.rows.device)
        flat = torch.cat([part.reshape(-1) for p in self.media for part in p.media.saliencies()])
        return flat.to(self.rows.device)[self.saliency_index]


def candidate_table(planned: List[PlacedMedium], real: np.ndarray, device: torch.device,
                    with_saliency: bool) -> CandidateTable:
    """The table of ``planned``'s pruned media (``pruned`` True), with ``real`` the [B, L]
    host mask of real tokens."""
    to_prune = [i for i, p in enumerate(planned) if p.pruned]
    sizes = {i: planned[i].candidates.size for i in to_prune}
    budgets = {i: min(planned[i].budget, sizes[i]) for i in to_prune}
    empty = [i for i in to_prune if sizes[i] == 0]  # keep nothing: no row in the table
    order = sorted((i for i in to_prune if sizes[i]), key=lambda i: (budgets[i], sizes[i]))
    media = [planned[i] for i in order]
    G, width = len(media), max([sizes[i] for i in order] + [1])
    B, L = real.shape
    rows = np.zeros((G, width), dtype=np.int64)
    cols = np.zeros((G, width), dtype=np.int64)
    index = np.zeros((G, width), dtype=np.int64)
    sal_index = np.zeros((G, width), dtype=np.int64)
    keep_base = real.copy()
    row_lengths = real.sum(axis=1).astype(np.int64)
    for i in empty:
        keep_base[planned[i].row, planned[i].columns] = False
        row_lengths[planned[i].row] -= int(real[planned[i].row, planned[i].columns].sum())
    offset = 0
    for g, p in enumerate(media):
        n = p.candidates.size
        within = np.concatenate([p.candidates, np.full(width - n, p.candidates[0] if n else 0)])
        rows[g], cols[g], index[g] = p.row, p.columns[within], within
        sal_index[g] = offset + within
        offset += p.media.num_tokens
        keep_base[p.row, p.columns] = False
        row_lengths[p.row] -= int(real[p.row, p.columns].sum()) - budgets[order[g]]
    last = np.where(real.any(axis=1), L - 1 - np.argmax(real[:, ::-1], axis=1), 0)
    budget_arr = np.array([budgets[i] for i in order], dtype=np.int64)
    size_arr = np.array([sizes[i] for i in order], dtype=np.int64)
    arrays = [rows, cols, index, size_arr, keep_base.astype(np.int64), last[rows[:, 0]]]
    if with_saliency:
        arrays.append(sal_index)
    up = upload(arrays, device)
    return CandidateTable(media, order, empty, up[0], up[1], up[2], up[3], up[6] if with_saliency else None,
                          up[4].bool(), up[5], budget_arr, row_lengths,
                          _runs(budget_arr), _runs(size_arr))


def _runs(values: np.ndarray) -> List[Tuple[int, int, int]]:
    """(start, stop, value) of each run of equal values."""
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i, int(values[start])))
            start = i
    return runs


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


def select(table: CandidateTable, scores: torch.Tensor, embeds: torch.Tensor, options: Options,
           features: Optional[torch.Tensor] = None) -> Selection:
    """Select each pruned medium's tokens: one selection call per distinct effective budget
    over the table's rows (ragged media padded, with lengths), one scatter into the keep mask
    and one sort of the kept indices per call; no host synchronisation.

    Parameters
    ----------
    table : CandidateTable
    scores : Tensor
        [G, n], importance in [0, 1] of the table's candidates.
    embeds : Tensor
        [B, L, D], the LLM input the features are read from.
    options : Options
        ``gamma`` and ``selection``.
    features : Tensor, optional
        ``table.gather(embeds)``, if already gathered.
    """
    fn, check = selection_function(options.selection)
    feats = (table.gather(embeds) if features is None else features).detach()
    keep_columns = table.keep_base.clone()
    kept, replay = [], []
    for start, stop, k in table.budget_groups:
        lengths = table.lengths[start:stop]
        picked = fn(feats[start:stop], scores[start:stop], k, options.gamma, lengths)
        if check:
            picked = checked_picks(picked, lengths, k)
        rows = table.rows[start:stop, :1].expand(-1, k)
        keep_columns.index_put_((rows, table.columns[start:stop].gather(1, picked)),
                                torch.ones((), dtype=torch.bool, device=keep_columns.device))
        kept.append(table.index[start:stop].gather(1, picked).sort(dim=1).values)
        replay.append((feats[start:stop], scores[start:stop], picked))
    return Selection(keep_columns, table, kept, replay)


def checked_picks(picked: Any, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """What a caller's selection function returned, checked before it prunes anything (one
    synchronisation: only a caller's function pays it)."""
    if not isinstance(picked, torch.Tensor) or picked.dtype != torch.long or tuple(picked.shape) != (lengths.numel(), k):
        raise TypeError(
            f"idselect: the selection function must return an int64 tensor of shape {[lengths.numel(), k]}, got "
            + (f"{picked.dtype} {list(picked.shape)}" if isinstance(picked, torch.Tensor) else type(picked).__name__)
        )
    if bool(((picked < 0) | (picked >= lengths[:, None])).any()):
        raise ValueError(f"idselect: the selection function returned indices outside [0, length) per row: {picked.tolist()}")
    return picked


def zero_score_picks(replay: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                     gamma: float) -> List[int]:
    """Per medium (in the order of ``replay``'s rows), the picks made when its best remaining
    score was 0 (the rule then takes the smallest index).

    ``replay`` holds (features [G, n, D], scores [G, n], picks [G, k]) per selection call. A
    pick's score when it is picked depends only on the scores of the picks before it, so the
    replay runs on the k x k similarities of the picks: their suppression weights are computed
    on the device in one batch, read once, and the k steps run on the host over all media at
    once with the reference's update (``idselect.reference.suppress``), in float32.
    """
    out: List[int] = []
    for feats, scores, picks in replay:
        G, k = picks.shape
        if k == 0:
            out += [0] * G
            continue
        f = feats.float()
        f = f / f.norm(dim=2, keepdim=True).clamp_min(reference.EPS)
        chosen = f.gather(1, picks[..., None].expand(-1, -1, f.shape[-1]))  # [G, k, D]
        cos = (chosen @ chosen.transpose(1, 2)).clamp(-1.0, 1.0)  # [G, k, k]: cos[g, t, u] between picks t and u
        start = scores.float().gather(1, picks)
        cos, s = cos.cpu(), torch.where(start > 0, start, torch.zeros_like(start)).cpu()
        zero = torch.zeros(G, dtype=torch.long)
        for t in range(k):
            at = s[:, t : t + 1]
            zero += (at[:, 0] <= 0).long()
            s = reference.suppress(s, cos[:, t], at, gamma)
        out += zero.tolist()
    return out


class Timing:
    """Named points in time of one pruning, without host synchronisation: on CUDA, events are
    recorded on the stream and read only when the statistics are read."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: Dict[str, Any] = {}

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks[name] = event
        else:
            self.marks[name] = time.perf_counter()

    def elapsed_ms(self, start: str, end: str) -> float:
        """Milliseconds from mark ``start`` to mark ``end`` (0.0 if either was not reached)."""
        if start not in self.marks or end not in self.marks:
            return 0.0
        a, b = self.marks[start], self.marks[end]
        if self.cuda:
            b.synchronize()
            return float(a.elapsed_time(b))
        return (b - a) * 1e3
