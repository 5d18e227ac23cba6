"""Compaction and continuation: drop columns from a batch, left-pad, set the mask and the
positions, and record how the cache relates to the caller's sequence (``CacheState``).
Plain tensors; nothing here knows transformers.

Positions. Without a state, the caller's positions are used; 1-D positions (and the text row of
4-row M-RoPE positions, which only shapes the mask) are renumbered contiguously - a kept token's
position minus the real tokens removed before it; M-RoPE (t, h, w) rows keep every kept token's
original position. With a state (a later call on a pruned cache), positions continue from the
cache's next position on every row, whatever the caller computed for the unpruned sequence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch


@dataclass
class CacheState:
    """How a cache filled through a patched model relates to the caller's sequence.

    Lives on the cache object (``idselect.hooks.generation.STATE_ATTR``)."""

    length: int  # columns in the cache
    original_length: int  # columns of the caller's (unpruned) sequence they stand for
    mask: Optional[torch.Tensor]  # [B, length] 2-D mask of the cached columns; None = all ones
    next_positions: torch.Tensor  # [R, B]: position of the next token
    position_rows: int  # 0: positions are [B, L]; R: they are [R, B, L] (M-RoPE)
    generation: Any = None  # the generate() call (generation.Generation) whose steps made it, if any


@dataclass
class Compacted:
    """One call's tokens as the LLM receives them (``compact``)."""

    keep: Optional[torch.Tensor]  # [B, q] bool, the columns that stay; None: every column (nothing pruned)
    place: Optional[Callable[[torch.Tensor], torch.Tensor]]  # [B, q, ...] -> [B, width, ...]; None if keep is
    width: int  # columns after compaction
    positions: torch.Tensor  # [B, width] or [R, B, width], the layout of the positions given
    attention_mask: Optional[torch.Tensor]  # [B, past + width]; None when nothing needs one
    past: int  # columns already in the cache
    state: CacheState  # of the cache after this call


def chunk_positions(caller_positions: Optional[torch.Tensor], state: Optional[CacheState],
                    counted: torch.Tensor, past: int) -> torch.Tensor:
    """Positions of a call's tokens: the caller's (fresh cache; contiguous from ``past`` if
    none), or the cache's next positions plus each token's rank among the ``counted`` ones
    (a cache with a state)."""
    B, q = counted.shape
    device = counted.device
    if state is not None:
        rank = torch.cumsum(counted.long(), dim=1) - 1  # [B, q]
        positions = state.next_positions.to(device)[..., None] + rank  # [R, B, q]
        return positions[0] if state.position_rows == 0 else positions
    if caller_positions is None:
        return (torch.arange(q, device=device) + past)[None].expand(B, q)
    return caller_positions


def compact(chunk_mask: torch.Tensor, keep_columns: Optional[torch.Tensor], caller_positions: Optional[torch.Tensor],
            state: Optional[CacheState], past_length: int, caller_head: Optional[torch.Tensor], mask_known: bool,
            renumber_text_row: bool, row_lengths: Optional[Sequence[int]] = None) -> Compacted:
    """Run a call's tokens as the continuation of ``state``'s cache (or as a fresh prefill
    when ``state`` is None): drop the columns ``keep_columns`` marks False and every padding
    column, left-pad the rest to one width, set mask and positions.

    Parameters
    ----------
    chunk_mask : Tensor
        [B, q], 1 for the call's real tokens, 0 for padding.
    keep_columns : Tensor or None
        [B, q] bool, the columns selection keeps; None: nothing is pruned (decode steps), so
        the width is known without a synchronisation.
    caller_positions : Tensor or None
        The positions the caller computed for the unpruned call, [B, q] or [R, B, q].
    state : CacheState or None
        The state of the cache this call continues.
    past_length : int
        Columns in the cache when it has no state.
    caller_head : Tensor or None
        [B, past_length], the caller's 2-D mask of the cached columns (no state).
    mask_known : bool
        Whether the caller said anything about padding; without it and without padding after
        compaction, no mask is passed on.
    renumber_text_row : bool
        Whether row 0 of fresh positions is renumbered contiguously (1-D positions, and the
        text row of 4-row M-RoPE positions).
    row_lengths : sequence of int, optional
        Columns each row keeps (``keep_columns & chunk_mask``), known on the host; the hooks
        always pass it, so compaction never reads the device. Without it (unit tests), it is
        read from the tensors.
    """
    B, q = chunk_mask.shape
    device = chunk_mask.device
    real = chunk_mask.bool()
    past = state.length if state is not None else past_length
    keep, placer = None, None
    if keep_columns is None:
        width = q
        positions = chunk_positions(caller_positions, state, real, past)  # padding advances no position
        rows_of = positions[None] if positions.dim() == 2 else positions  # [R, B, q]
        new_rows, new_chunk_mask = rows_of, chunk_mask.long()
    else:
        keep = keep_columns & real  # padding columns go too: no column is padding in every row
        positions = chunk_positions(caller_positions, state, keep, past)
        rows_of = positions[None] if positions.dim() == 2 else positions
        renumber = (0,) if state is None and renumber_text_row else ()
        removed_before = torch.cumsum((real & ~keep).long(), dim=1)
        if row_lengths is None:
            row_lengths = keep.sum(dim=1).tolist()
        width = int(max(row_lengths))
        if width == 0:
            raise ValueError("idselect: the attention mask masks every token of every row; nothing is left to run")
        ragged = int(min(row_lengths)) < width
        pad = width - keep.sum(dim=1)  # left padding per row
        # Each kept token's column after compaction (left padding first); every other column
        # goes to a scratch column past the end, so placing is one scatter with no mask read.
        dest = torch.where(keep, pad[:, None] + torch.cumsum(keep.long(), dim=1) - 1, width)
        batch_rows = torch.arange(B, device=device)[:, None].expand(B, q)

        def place(values: torch.Tensor) -> torch.Tensor:
            """[B, q, ...] -> [B, width, ...]: each row's kept columns in order, left-padded with 0."""
            out = values.new_zeros((B, width + 1) + tuple(values.shape[2:]))
            out[batch_rows, dest] = values
            return out[:, :width]

        placer = place
        new_rows = torch.stack([place(rows_of[r] - removed_before if r in renumber else rows_of[r])
                                for r in range(rows_of.shape[0])])
        new_chunk_mask = place(torch.ones_like(keep, dtype=torch.long))
        mask_known = mask_known or ragged

    head = state.mask if state is not None else (caller_head if past > 0 else None)
    if head is None and not mask_known:
        full_mask = None  # no padding anywhere, and the caller gave no mask: none needed
    else:
        head = head if head is not None else torch.ones(B, past, dtype=torch.long, device=device)
        full_mask = torch.cat([head.to(device), new_chunk_mask], dim=1)

    previous = state.next_positions if state is not None else rows_of.new_zeros(rows_of.shape[0], B)
    new_real = new_chunk_mask.bool()
    newest = torch.where(new_real[None], new_rows, new_rows.new_full((), -1)).amax(dim=2) + 1 if width else previous
    new_state = CacheState(
        length=past + width,
        original_length=(state.original_length if state is not None else past) + q,
        mask=full_mask.long() if full_mask is not None else None,
        next_positions=torch.maximum(previous, newest),
        position_rows=0 if positions.dim() == 2 else rows_of.shape[0])
    return Compacted(keep=keep, place=placer, width=width, positions=new_rows[0] if positions.dim() == 2 else new_rows,
                     attention_mask=full_mask, past=past, state=new_state)
