"""ID-Selection for all the images of one vLLM encoder step in one batched pass.

The architectures (``llava.py`` and others) gather every image of an encoder step, then call
``kept_rows`` (or ``kept_embeddings``) once. Everything that depends on an image's size is
planned on the host from numbers the host already has (token counts, keeps, gammas and the
candidate rows), so the pass reads nothing back from the device and its number of kernels does
not grow with the number of images:

* one upload of every host index (the candidate table, its lengths, the rows of images kept
  whole or with all their candidates), in one copy;
* one ``cat`` of the pruned images' embeddings and of their scores, one gather of each into a
  padded ``[G, Nmax]`` table (a padding slot repeats the row's first candidate, so a row's
  min and max are those of its candidates and ``minmax`` on the table gives every score bit for
  bit what it gives on the image alone);
* one op call per distinct (keep, gamma), with ``lengths`` and ``validate=False`` (scores come
  from ``minmax``, in [0, 1]), one sort and one gather of its picks.

The picks are those of the per-image path (``idselect.select`` on each image's candidates with
scores min-max normalised over them), bit for bit: tests/test_vllm_selection.py checks it.

This module does not import vLLM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import importance as imp
from ..hooks.engine import upload  # noqa: F401 (one host-to-device copy; llava.py imports it from here)
from ..api import select as op_select

__all__ = ["kept_rows", "kept_embeddings"]


def kept_rows(features: Sequence[torch.Tensor], scores: Sequence[torch.Tensor], keeps: Sequence[int],
              gammas: Sequence[float], candidates: Optional[Sequence[Optional[Sequence[int]]]] = None) -> List[torch.Tensor]:
    """Per image i: features[i] [T_i, D] (the LLM's input embeddings of the image, on the device), scores[i] [T_i]
    raw importance >= 0 (not yet normalised), keeps[i] (int >= 1) and gammas[i] (float) host numbers, candidates[i]
    host row indices that may be picked (None: all rows). Returns per image int64 row indices on the device, ascending:
    all T_i rows if keeps[i] >= T_i; else all candidates if keeps[i] >= len(candidates); else the min(keep, candidates)
    rows ID-Selection picks with scores min-max normalised over the candidates (idselect.importance.minmax).

    Candidates are taken in ascending order (duplicates or rows outside [0, T_i) are refused),
    so ties in the selection go to the smaller row. No host synchronisation; the number of
    kernels depends on the number of distinct (keep, gamma) among the pruned images, not on
    the number of images. Host data may be lists, ranges or NumPy arrays; CPU tensors work too
    (``idselect.testing.counting`` counts reading them as host reads, which on the CPU they are
    not); a tensor on another device is refused (reading it would synchronise).
    """
    return _Step(features, scores, keeps, gammas, candidates).rows()


def kept_embeddings(features: Sequence[torch.Tensor], scores: Sequence[torch.Tensor], keeps: Sequence[int],
                    gammas: Sequence[float], candidates: Optional[Sequence[Optional[Sequence[int]]]] = None,
                    rows_of: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
    """``features[i][kept_rows(...)[i]]`` for every image, in one gather for the whole step: an
    image kept whole is returned as it is (no copy); the others are views of one tensor.
    ``rows_of``: per image [T_i, ...] tensors to take the kept rows from instead of the features
    the selection reads (e.g. the rows with channels the selection must not see)."""
    return _Step(features, scores, keeps, gammas, candidates).embeddings(rows_of)


# -- the plan (host) ---------------------------------------------------------------------------

WHOLE, ALL_CANDIDATES, SELECTED = 0, 1, 2


@dataclass
class _Plan:
    kinds: List[int]  # per image: WHOLE, ALL_CANDIDATES or SELECTED
    out_lengths: List[int]  # per image: rows kept (known on the host)
    partial: List[int]  # images not kept whole, in image order (their features are concatenated)
    offsets: Dict[int, int]  # partial image -> its first row in the concatenation
    table: List[int]  # SELECTED images in table order: sorted by (keep, gamma), stable
    groups: List[Tuple[int, int, int, float]]  # (start, stop, k, gamma): runs of the table
    width: int  # table width: the most candidates of a SELECTED image


def _candidate_rows(candidates: Optional[Sequence[int]], tokens: int, image: int) -> np.ndarray:
    if candidates is None:
        return np.arange(tokens, dtype=np.int64)
    if isinstance(candidates, torch.Tensor):
        if candidates.device.type != "cpu":
            raise TypeError(f"idselect: candidates[{image}] must be host indices (a CPU tensor, array or list), "
                            f"got a tensor on {candidates.device} (reading it would synchronise)")
        candidates = candidates.numpy()
    rows = np.asarray(candidates, dtype=np.int64).reshape(-1)
    ordered = np.unique(rows)
    if ordered.size != rows.size or (ordered.size and (ordered[0] < 0 or ordered[-1] >= tokens)):
        raise ValueError(f"idselect: candidates[{image}] must be distinct rows in [0, {tokens}), got "
                         f"{rows.size} rows ({ordered.size} distinct) in "
                         f"[{ordered[0] if ordered.size else '-'}, {ordered[-1] if ordered.size else '-'}]")
    return ordered


def _host_numbers(values, count: int, name: str, kind) -> list:
    if isinstance(values, torch.Tensor):
        if values.device.type != "cpu":
            raise TypeError(f"idselect: {name} must be host numbers, got a tensor on {values.device}")
        values = values.reshape(-1).tolist()
    values = [kind(v.item()) if isinstance(v, torch.Tensor) else kind(v) for v in values]
    if len(values) != count:
        raise ValueError(f"idselect: {len(values)} {name} for {count} images")
    return values


class _Step:
    """One encoder step's images: the host plan, its upload, and the selection."""

    def __init__(self, features, scores, keeps, gammas, candidates) -> None:
        count = len(features)
        if len(scores) != count:
            raise ValueError(f"idselect: {len(scores)} score vectors for {count} images")
        if candidates is not None and len(candidates) != count:
            raise ValueError(f"idselect: {len(candidates)} candidate lists for {count} images")
        self.features, self.scores = list(features), list(scores)
        self.keeps = _host_numbers(keeps, count, "keeps", int)
        self.gammas = _host_numbers(gammas, count, "gammas", float)
        self.device = features[0].device if count else torch.device("cpu")
        kinds, out_lengths, rows = [], [], []
        for i in range(count):
            tokens = self.features[i].shape[0]
            if self.features[i].dim() != 2 or tuple(self.scores[i].shape) != (tokens,):
                raise ValueError(f"idselect: image {i}: features must be [T, D] and scores [T], got "
                                 f"{list(self.features[i].shape)} and {list(self.scores[i].shape)}")
            keep = self.keeps[i]
            if keep < 1:
                raise ValueError(f"idselect: keeps[{i}] = {keep}: must be >= 1")
            if keep >= tokens:
                kinds.append(WHOLE)
                out_lengths.append(tokens)
                rows.append(None)
                continue
            cand = _candidate_rows(None if candidates is None else candidates[i], tokens, i)
            rows.append(cand)
            if keep >= cand.size:
                kinds.append(ALL_CANDIDATES)
                out_lengths.append(int(cand.size))
            else:
                kinds.append(SELECTED)
                out_lengths.append(keep)
        partial = [i for i in range(count) if kinds[i] != WHOLE]
        offsets, offset = {}, 0
        for i in partial:
            offsets[i] = offset
            offset += self.features[i].shape[0]
        table = sorted((i for i in range(count) if kinds[i] == SELECTED), key=lambda i: (self.keeps[i], self.gammas[i]))
        groups, start = [], 0
        for g in range(1, len(table) + 1):
            if g == len(table) or (self.keeps[table[g]], self.gammas[table[g]]) != (self.keeps[table[start]],
                                                                                    self.gammas[table[start]]):
                groups.append((start, g, self.keeps[table[start]], self.gammas[table[start]]))
                start = g
        width = max([rows[i].size for i in table] + [1])
        self.plan = _Plan(kinds, out_lengths, partial, offsets, table, groups, width)
        self.candidates = rows

    # -- device ---------------------------------------------------------------------------

    def _upload(self, with_whole: bool):
        """Every host index in one copy: per table row its candidates (local rows, and rows of
        the concatenation), the table's lengths, and the rows of the images that need no
        selection (local and in the concatenation)."""
        plan, rows = self.plan, self.candidates
        G, W = len(plan.table), plan.width
        local = np.zeros((G, W), dtype=np.int64)
        lengths = np.zeros(G, dtype=np.int64)
        for g, i in enumerate(plan.table):
            n = rows[i].size
            local[g, :n], local[g, n:] = rows[i], rows[i][0]
            lengths[g] = n
        flat = local + np.array([plan.offsets[i] for i in plan.table], dtype=np.int64).reshape(G, 1)
        direct_local, direct_flat = [], []  # images with no selection, in image order
        for i, kind in enumerate(plan.kinds):
            if kind == ALL_CANDIDATES:
                direct_local.append(rows[i])
                direct_flat.append(rows[i] + plan.offsets[i])
            elif kind == WHOLE and with_whole:
                direct_local.append(np.arange(self.features[i].shape[0], dtype=np.int64))
        arrays = [local, flat, lengths] + direct_local + direct_flat
        return upload(arrays, self.device), len(direct_local)

    def _identity(self) -> Optional[int]:
        """T when the table is the concatenation itself: every pruned image is selected from all
        its rows, all have T rows, in table order (no gather needed); else None."""
        plan = self.plan
        if len(plan.table) != len(plan.partial) or plan.table != plan.partial:
            return None
        tokens = {self.features[i].shape[0] for i in plan.table}
        if len(tokens) != 1 or any(self.candidates[i].size != self.features[i].shape[0] for i in plan.table):
            return None
        return tokens.pop()

    def _picks(self, up) -> List[torch.Tensor]:
        """Per group of the table, its picks [g, k] (indices into the rows' candidates), ascending."""
        plan = self.plan
        if not plan.table:
            return []
        flat, lengths = up[1], up[2]
        source = joined([self.features[i] for i in plan.partial]).detach()
        raw = joined([self.scores[i] for i in plan.partial]).detach()
        tokens = self._identity()
        if tokens is not None:  # the table is the concatenation: views, no gather
            feats, table_scores = source.view(len(plan.table), tokens, -1), raw.view(len(plan.table), tokens)
        else:
            feats, table_scores = source[flat], raw[flat]  # [G, W, D], [G, W]
        normalised = imp.minmax(table_scores)  # padding repeats a candidate, so min/max are the candidates'
        self.source = source
        out = []
        for start, stop, k, gamma in plan.groups:
            picked = op_select(feats[start:stop], normalised[start:stop], k, gamma, lengths[start:stop], validate=False)
            out.append(picked.sort(dim=1).values)
        return out

    def rows(self) -> List[torch.Tensor]:
        plan = self.plan
        up, directs = self._upload(with_whole=True)
        out: List[Optional[torch.Tensor]] = [None] * len(plan.kinds)
        direct = iter(up[3:3 + directs])
        for i, kind in enumerate(plan.kinds):
            if kind != SELECTED:
                out[i] = next(direct)
        for (start, stop, _, _), picks in zip(plan.groups, self._picks(up)):
            chosen = up[0][start:stop].gather(1, picks)
            for g in range(start, stop):
                out[plan.table[g]] = chosen[g - start]
        return out

    def embeddings(self, rows_of: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
        plan = self.plan
        if rows_of is not None and [r.shape[0] for r in rows_of] != [f.shape[0] for f in self.features]:
            raise ValueError(f"idselect: rows_of has {[r.shape[0] for r in rows_of]} rows per image, the features "
                             f"{[f.shape[0] for f in self.features]}")
        rows = self.features if rows_of is None else rows_of
        out: List[Optional[torch.Tensor]] = [None] * len(plan.kinds)
        for i, kind in enumerate(plan.kinds):
            if kind == WHOLE:
                out[i] = rows[i]
        if not plan.partial:
            return out
        up, directs = self._upload(with_whole=False)
        picks = self._picks(up)
        if not plan.table:
            self.source = joined([self.features[i] for i in plan.partial])
        # The rows of the concatenation each partial image keeps, in one index: the images with
        # all candidates kept (image order), then the table's rows (table order).
        order = [i for i in plan.partial if plan.kinds[i] == ALL_CANDIDATES] + plan.table
        index = [up[3 + directs + j] for j in range(directs)]
        index += [up[1][start:stop].gather(1, p).reshape(-1) for (start, stop, _, _), p in zip(plan.groups, picks)]
        source = self.source if rows_of is None else joined([rows_of[i] for i in plan.partial])
        gathered = source[torch.cat(index) if len(index) > 1 else index[0]]
        for i, part in zip(order, gathered.split([plan.out_lengths[i] for i in order])):
            out[i] = part
        return out


def joined(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors)``, without the copy when they already lie one after the other in one
    storage (as the images of one projector call do): a view of it then (host metadata only)."""
    first = tensors[0]
    shape, step = first.shape, first.numel()
    if all(t.shape == shape and t.dtype == first.dtype and t.is_contiguous() for t in tensors) and step and all(
            t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
            and t.storage_offset() == first.storage_offset() + j * step for j, t in enumerate(tensors)):
        return first.as_strided((len(tensors) * shape[0], *shape[1:]), first.stride(), first.storage_offset())
    return torch.cat(tensors)
