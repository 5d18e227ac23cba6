"""How one call into the language model is translated for a patched model: its arguments
compacted (``compaction.compact``) under the names, mask formats and cache objects of the
installed transformers, and the state the cache it fills records."""
from __future__ import annotations

from typing import Optional

import torch

from . import compat
from .compaction import CacheState, compact
from .generation import STATE_ATTR, current_generation


def renumbers_text_row(position_ids: Optional[torch.Tensor]) -> bool:
    """Whether row 0 of a model's positions is renumbered contiguously when tokens are dropped:
    1-D positions, and the text row that transformers puts before the three M-RoPE rows (4-row
    position_ids, which only shape the mask)."""
    return position_ids is None or position_ids.dim() == 2 or position_ids.shape[0] == 4


class LanguageModelCalls:
    """The translation of calls into one patched model's language model."""

    def __init__(self, handle):
        self.handle = handle
        self.family = handle.family
        self.base = self.family.base(handle.model)
        self.cache_arg = handle.cache_arg

    def compacted(self, kwargs, state: Optional[CacheState], keep_columns: Optional[torch.Tensor],
                  chunk_mask: Optional[torch.Tensor] = None, row_lengths=None, kept_media_tokens: int = 0,
                  padded: Optional[bool] = None):
        """The LLM's keyword arguments for this call's tokens, compacted and continuing
        ``state``'s cache (``compaction.compact``), and the compaction itself. ``padded``: whether
        this call's tokens hold padding, when known on the host (a prefill); otherwise a 2-D mask
        given to this call says it may."""
        embeds, ids = kwargs.get("inputs_embeds"), kwargs.get("input_ids")
        sequence = embeds if embeds is not None else ids
        B, q = sequence.shape[:2]
        # The LLM gets a mask only where there is padding (in the cache, in this call, or left by
        # compaction): an all-ones mask would cost the LLM's mask code a synchronisation.
        mask_known = padded if padded is not None else self._mask_known(kwargs)
        if chunk_mask is None:
            chunk_mask = self.chunk_mask(dict(kwargs, inputs_embeds=sequence), state, q)
        past = self.past_length(kwargs) if state is None else state.length
        caller_mask = kwargs.get("attention_mask")
        caller_head = None
        if state is None and past > 0 and isinstance(caller_mask, torch.Tensor) and caller_mask.dim() == 2:
            caller_head = caller_mask[:, :past].long()
        positions = kwargs.get("position_ids")
        c = compact(chunk_mask, keep_columns, positions, state, past, caller_head, mask_known,
                    renumber_text_row=renumbers_text_row(positions), row_lengths=row_lengths)
        new_kwargs = dict(kwargs)
        if c.keep is not None:
            if embeds is not None:
                new_kwargs["inputs_embeds"] = c.place(embeds)
            else:
                new_kwargs["input_ids"] = c.place(ids)
            self.family.prune_language_inputs(kwargs, new_kwargs, c.keep, c.place, kept_media_tokens)
        new_kwargs["attention_mask"] = c.attention_mask
        new_kwargs["position_ids"] = c.positions
        if kwargs.get("cache_position") is not None:
            new_kwargs["cache_position"] = torch.arange(c.past, c.past + c.width, device=sequence.device)
        return new_kwargs, c

    def run_compacted(self, original, kwargs, state: Optional[CacheState], keep_columns):
        new_kwargs, compacted = self.compacted(kwargs, state, keep_columns)
        return self.run(original, new_kwargs, compacted.state)

    def run(self, original, new_kwargs, new_state: CacheState):
        """Run the LLM on the translated call; the cache it filled (passed in, or created by
        the LLM itself) records the new state."""
        output = original(**new_kwargs)
        cache = new_kwargs.get(self.cache_arg)
        if cache is None:
            cache = compat.output_cache(output, self.cache_arg)
        if cache is not None and new_kwargs.get("use_cache", True) is not False:
            new_state.generation = current_generation(self.handle)
            setattr(cache, STATE_ATTR, new_state)
            if self.family.positions == "mrope" and new_state.position_rows:
                # The model's cached M-RoPE delta: next position = pruned cache length + delta, per row.
                self.base.rope_deltas = (new_state.next_positions[-1] - new_state.length)[:, None]
        return output

    def device(self) -> torch.device:
        """Where the language model runs (its input embeddings' device)."""
        return self.family.language_model(self.handle.model).get_input_embeddings().weight.device

    def past_length(self, kwargs) -> int:
        cache = kwargs.get(self.cache_arg)
        return int(cache.get_seq_length()) if cache is not None else 0

    def _mask_known(self, kwargs) -> bool:
        """Whether this call was given a 2-D mask (which may hold padding)."""
        mask = kwargs.get("attention_mask")
        return isinstance(mask, torch.Tensor) and mask.dim() == 2

    def chunk_mask(self, kwargs, state: Optional[CacheState], q: int) -> torch.Tensor:
        """[B, q] 2-D mask of the tokens of this call (1 = real token)."""
        embeds = kwargs["inputs_embeds"]
        B = embeds.shape[0]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            return mask[:, -q:]
        gen = current_generation(self.handle)
        given = gen.attention_mask if gen is not None else None
        if given is not None and B % given.shape[0] == 0:
            # generate() may hand the model prepared 4-D masks (static caches, beams): use the
            # 2-D mask it was given, rows repeated as generate() repeats them.
            full = given.repeat_interleave(B // given.shape[0], dim=0)
            start = state.original_length if state is not None else self.past_length(kwargs)
            tail = full[:, start : start + q].to(embeds.device)
            if tail.shape[1] < q:
                tail = torch.cat([tail, tail.new_ones(B, q - tail.shape[1])], dim=1)
            return tail
        if mask is None or isinstance(mask, dict) or (state is not None and given is None):
            # No 2-D mask anywhere: nothing is padded. A call continuing a pruned cache whose
            # generate() was given none (a static cache gets generate()'s 4-D masks) brings new
            # tokens only; the cached columns' padding is in the state.
            return torch.ones(B, q, dtype=torch.long, device=embeds.device)
        raise ValueError(
            f"idselect: needs a 2-D attention_mask [batch, length] (or none) on a patched model, got "
            f"a tensor of shape {list(mask.shape)}; pass the 2-D padding mask and let the model build the rest"
        )
