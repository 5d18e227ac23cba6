"""What one ``generate()`` call of a patched model needs across its steps, and the wrapper that
gives each call its own: its 2-D mask, the selection reused with ``use_cache=False``, the
pruned cache it continues (a context variable for the duration of the call, so threads and
nested calls never see each other's)."""
from __future__ import annotations

import contextvars
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch

from . import compat
from .compaction import CacheState

STATE_ATTR = "_idselect_state"  # attribute of a cache object: its CacheState


@dataclass
class Generation:
    """One ``generate()`` call of the patched model."""

    handle: Any  # the PatchHandle whose model runs it
    input_length: int  # columns of the sequence given to generate()
    attention_mask: Optional[torch.Tensor]  # the caller's 2-D mask, if any
    continues: Optional[CacheState]  # state of the pruned cache it continues, if any
    use_cache: bool
    first_forward: bool = True
    no_cache_keep: Optional[torch.Tensor] = None  # use_cache=False: the first step's kept columns


GENERATION: contextvars.ContextVar = contextvars.ContextVar("idselect_generation", default=None)


def with_context(var: contextvars.ContextVar, value, fn: Callable, args, kwargs):
    """``fn(*args, **kwargs)`` with ``var`` set to ``value`` for the duration of the call."""
    token = var.set(value)
    try:
        return fn(*args, **kwargs)
    finally:
        var.reset(token)


def cache_state(cache) -> Optional[CacheState]:
    """The pruning state a cache filled through a patched model carries, if any."""
    return getattr(cache, STATE_ATTR, None) if cache is not None else None


def current_generation(handle) -> Optional[Generation]:
    gen = GENERATION.get()
    return gen if gen is not None and gen.handle is handle else None


def wrap_generate(handle, media_inputs, original: Callable) -> Callable:
    """Give one ``generate()`` call a context of its own (``Generation``)."""
    def generate(*args, **kwargs):
        named = compat.bound_arguments(original, args, kwargs, handle.cache_arg, compat.GENERATE_CACHE_ALIASES)
        sequence = next((named[k] for k in ("inputs", "input_ids", "inputs_embeds") if named.get(k) is not None), None)
        mask = named.get("attention_mask")
        use_cache = named.get("use_cache")
        config = named.get("generation_config") or handle.model.generation_config
        if use_cache is None:  # as generate() resolves it: its config argument, else the model's
            use_cache = getattr(config, "use_cache", True)
        refuse_broken_expansion(handle, media_inputs, named, config)
        continues = cache_state(named.get(handle.cache_arg))
        refuse_assisted_decoding(handle, media_inputs, original, named, continues)
        input_length = int(sequence.shape[1]) if sequence is not None else 0
        if continues is not None and input_length <= continues.original_length:
            raise ValueError(
                f"idselect: generate() continues a pruned cache that already holds the first "
                f"{continues.original_length} tokens of the conversation, but was given {input_length}: "
                "pass the whole conversation (the previous sequences plus the new tokens), as for the unpatched model"
            )
        gen = Generation(handle, input_length=input_length,
                         attention_mask=mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None,
                         continues=continues, use_cache=use_cache is not False)
        return with_context(GENERATION, gen, original, args, kwargs)

    return generate


def refuse_assisted_decoding(handle, media_inputs, original: Callable, named: Dict[str, Any],
                             continues: Optional[CacheState]) -> None:
    """Refuse, before anything runs, a generate() call that decodes with a candidate generator
    (``assistant_model=``, ``prompt_lookup_num_tokens=``, ``assistant_early_exit=``, ``use_mtp``,
    in the call or its generation config: whatever transformers' own ``get_generation_mode``
    calls assisted generation) where the patched model could prune: with media whose tokens the
    budget may cut, or continuing a pruned cache. Verifying the candidates crops the KV cache
    (``cache.crop()``) to the accepted tokens, which a pruned cache's state cannot follow, so
    such a call used to fail only at its first rejected draft, mid-generation."""
    has_media = any(named.get(k) is not None for k in media_inputs)
    if continues is None and not has_media:
        return
    try:
        # The configuration generate() itself will use: the call's generation_config (or the
        # model's), the model's defaults, then the call's keyword arguments.
        params = inspect.signature(original).parameters
        extra = {k: v for k, v in named.items() if k not in params}
        config, _ = handle.model._prepare_generation_config(named.get("generation_config"), **extra)
        mode = config.get_generation_mode(named.get("assistant_model"))
    except Exception:  # an invalid configuration: generate() raises its own error for it
        return
    if getattr(mode, "value", mode) != "assisted_generation":
        return
    if continues is None and not could_prune(handle, named):
        return  # keep covers every medium: the patch is an identity for this call
    raise NotImplementedError(
        "idselect: assisted decoding (assistant_model, prompt_lookup_num_tokens, assistant_early_exit, "
        f"use_mtp; here in {'the call' if named.get('assistant_model') is not None else 'the generation config'}) "
        f"is not supported on a patched {handle.family.model_type} model with keep={handle.options.keep!r} "
        "for a call with images or videos, or one that continues a pruned cache: checking the drafts crops the "
        "KV cache, which the pruning state of the cache cannot follow. Generate without it, or call "
        "handle.remove() first"
    )


def could_prune(handle, named: Dict[str, Any]) -> bool:
    """Whether this call's media may lose tokens: a medium has at most as many tokens as its
    row has placeholders of its modality, and a budget at least that large leaves it whole. Without input ids
    (embeddings only), assume it may."""
    keep = handle.options.keep
    if isinstance(keep, float):
        return keep < 1.0
    ids = next((named[k] for k in ("input_ids", "inputs") if isinstance(named.get(k), torch.Tensor)), None)
    if ids is None or ids.dim() != 2 or ids.is_floating_point():
        return True
    config = handle.family.base(handle.model).config
    most = max(int((ids == handle.family.placeholder_token_id(config, m)).sum(dim=1).max())
               for m in handle.family.modalities)
    return keep < most


def refuse_broken_expansion(handle, media_inputs, named: Dict[str, Any], config) -> None:
    """Refuse a generate() call with media that this transformers release repeats wrongly
    for beams or several returned sequences (compat.BROKEN_EXPANSION, ITEMWISE_EXPANSION)."""
    copies = max(int(named.get("num_beams") or getattr(config, "num_beams", 1) or 1),
                 int(named.get("num_return_sequences") or getattr(config, "num_return_sequences", 1) or 1))
    if copies == 1 or not any(named.get(k) is not None for k in media_inputs):
        return
    model_type = handle.family.model_type
    version = compat.transformers_version()
    if compat.broken_expansion(model_type, version, several_items=True) is None:
        return  # this release expands every prompt right: no need to count its items (a host sync)
    reason = compat.broken_expansion(model_type, version, several_items_per_prompt(handle, named))
    if reason is not None:
        raise NotImplementedError(
            f"idselect: transformers {version} cannot run generate() with num_beams / num_return_sequences > 1 on "
            f"{model_type} with these images or videos: {reason}; the unpatched model is affected too. "
            "Upgrade transformers, or generate one sequence per prompt"
        )


def several_items_per_prompt(handle, named: Dict[str, Any]) -> bool:
    """Whether a prompt of this generate() call may hold more than one item of a modality
    (images, videos; InternVL: tiles): more items than prompts that show that modality.
    Media it cannot count (embeddings only, lists, pre-encoded outputs) count as several:
    this only matters where a release mis-expands them, and there refusing is the safe side."""
    ids = next((named[k] for k in ("input_ids", "inputs") if isinstance(named.get(k), torch.Tensor)), None)
    if ids is None or ids.dim() != 2 or ids.is_floating_point() or named.get("mm_encoder_outputs") is not None:
        return True
    config = handle.family.base(handle.model).config
    for modality, item_inputs in (("image", ("image_grid_thw", "pixel_values", "pixel_values_images")),
                                  ("video", ("video_grid_thw", "pixel_values_videos"))):
        given = [named[k] for k in item_inputs if named.get(k) is not None]
        if not given:
            continue
        token = getattr(config, f"{modality}_token_id", None)
        if not isinstance(given[0], torch.Tensor) or token is None:
            return True
        if given[0].shape[0] > int((ids == token).any(dim=1).sum()):
            return True
    return False


def drop_cached_overlap(handle, gen: Generation, named: Dict[str, Any]) -> Dict[str, Any]:
    """generate() continuing a pruned cache slices the conversation by the cache's length,
    so it re-feeds the last (original_length - length) tokens the cache already holds:
    drop them here, before the model embeds them."""
    state = gen.continues
    cache = named.get(handle.cache_arg)
    if state is None or cache_state(cache) is not state:
        return named
    overlap = state.original_length - state.length
    sequence = named.get("input_ids") if named.get("input_ids") is not None else named.get("inputs_embeds")
    if overlap <= 0 or sequence is None or gen.input_length - sequence.shape[1] != state.length:
        return named
    named = dict(named)
    for key in ("input_ids", "inputs_embeds", "mm_token_type_ids", "token_type_ids"):
        if isinstance(named.get(key), torch.Tensor):
            named[key] = named[key][:, overlap:]
    if isinstance(named.get("position_ids"), torch.Tensor):
        named["position_ids"] = named["position_ids"][..., overlap:]
    if isinstance(named.get("cache_position"), torch.Tensor):
        named["cache_position"] = named["cache_position"][overlap:]
    return named
