"""Model-independent part of the hooks: attribute patching, per-image selection, pruning of
the LLM input, and the mask / position bookkeeping that keeps every later call right.

How a patched model runs (LLaVA family; other families plug in the same way):

1. The model's feature functions (``get_image_features`` ...) are wrapped: after the original
   runs, the family adapter attaches a list of ``Media`` (tokens per image or video, saliency,
   which tokens are candidates) to the returned output.
2. The model's own forward is wrapped to note which input positions hold which modality, to
   collect the media of this call, and - on the first forward of a ``generate()`` call that
   continues a pruned cache - to drop the tokens that cache already holds.
3. The language model's forward is wrapped: on a call that carries media it scores the media
   tokens, selects per medium with ``idselect.select`` (one op call per distinct budget), drops
   the rest from ``inputs_embeds``, attention mask and positions, and runs the original LLM on
   the shorter sequence. Every later call on that cache gets its mask and positions translated.

Where state lives (docs/hooks.md, "Generation patterns"):

- What one forward call learns (its media) lives in a context variable for the duration of
  that call: threads never see each other's.
- What a prefill learns (how the cache's columns map to the caller's sequence, the mask of the
  cached columns, the next positions) lives on the cache object it filled (``CacheState``), so
  any number of caches can be continued in any order.
- What one ``generate()`` call needs across its steps (its 2-D mask, the selection to reuse
  with ``use_cache=False``, whether it continues a pruned cache) lives in a context variable
  for the duration of that ``generate()`` call.
- The handle holds only the options and the statistics of the last pruning.
"""
from __future__ import annotations

import contextvars
import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from .. import importance as imp
from .. import reference
from ..api import select as id_select
from . import compat
from .compat import bound_arguments, output_cache

IMPORTANCE_CHOICES = ("auto", "unified", "saliency", "relevance")
SELECTION_CHOICES = ("id", "topk")  # ID-Selection; plain top-k by importance (the baseline)
STATE_ATTR = "_idselect_state"  # attribute of a cache object: its CacheState
HANDLE_ATTR = "_idselect_handle"  # attribute of a patched base model: its PatchHandle
MEDIA_ATTR = "idselect_media"  # attribute of a feature function's output: its List[Media]
COMPILE_REASON = (
    "idselect: pruning gives the LLM a sequence whose length depends on the data, which one graph "
    "cannot hold; use torch.compile(model) without fullgraph=True (the model's parts still compile), "
    "or compile the language model alone"
)
#: Model inputs that carry images or videos (a call without any of them has no media to prune).
MEDIA_INPUTS = ("pixel_values", "pixel_values_images", "pixel_values_videos", "mm_encoder_outputs")
SALIENCY_REASON = "idselect: the vision layer's input is captured for [CLS] saliency"


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
    keep: float  # int: tokens per medium; float in (0, 1]: fraction
    gamma: float
    importance: str  # resolved: "unified", "saliency" or "relevance"
    alpha: float
    relevance_layer: int
    relevance_rope: bool
    selection: Any = "id"  # "id", "topk", or a function with the op's signature (patch's docstring)

    def budget(self, num_tokens: int) -> int:
        """Tokens the LLM receives for a medium of num_tokens tokens."""
        if isinstance(self.keep, int):
            return min(self.keep, num_tokens)
        return min(num_tokens, max(1, round(self.keep * num_tokens)))


@dataclass
class CacheState:
    """How a cache filled through a patched model relates to the caller's sequence.

    Lives on the cache object (attribute ``_idselect_state``)."""

    length: int  # columns in the cache
    original_length: int  # columns of the caller's (unpruned) sequence they stand for
    mask: Optional[torch.Tensor]  # [B, length] 2-D mask of the cached columns; None = all ones
    next_positions: torch.Tensor  # [R, B]: position of the next token
    position_rows: int  # 0: positions are [B, L]; R: they are [R, B, L] (M-RoPE)


def cache_state(cache) -> Optional[CacheState]:
    return getattr(cache, STATE_ATTR, None) if cache is not None else None


@dataclass
class _Call:
    """One forward call of the patched model: set by the model-forward wrapper, read by the
    feature and LLM wrappers further down the same call."""

    handle: "PatchHandle"
    modality_masks: Dict[str, torch.Tensor]  # modality -> [B, L] bool
    media: Dict[str, List[Media]] = field(default_factory=dict)


@dataclass
class _Generation:
    """One ``generate()`` call of the patched model."""

    handle: "PatchHandle"
    input_length: int  # columns of the sequence given to generate()
    attention_mask: Optional[torch.Tensor]  # the caller's 2-D mask, if any
    continues: Optional[CacheState]  # state of the pruned cache it continues, if any
    use_cache: bool
    first_forward: bool = True
    no_cache_keep: Optional[torch.Tensor] = None  # use_cache=False: the first step's kept columns


_CALL: contextvars.ContextVar = contextvars.ContextVar("idselect_call", default=None)
_LABELS: contextvars.ContextVar = contextvars.ContextVar("idselect_labels", default=None)  # handle of a call with labels=
_GENERATION: contextvars.ContextVar = contextvars.ContextVar("idselect_generation", default=None)
_FEATURES: contextvars.ContextVar = contextvars.ContextVar("idselect_features", default=None)  # handle whose feature function runs


class _Timing:
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


class PatchHandle:
    """Returned by ``idselect.patch``; ``remove()`` restores the model exactly.

    Thread-safe in use: one patched model can serve forward() and generate() calls from
    several threads at once (docs/hooks.md says what is shared).
    """

    def __init__(self, model: nn.Module, adapter: "FamilyAdapter", options: Options, cache_arg: str):
        self.model = model
        self.adapter = adapter
        self.options = options
        self.cache_arg = cache_arg  # the release's name of the cache argument (compat.cache_argument)
        self._saved: List[tuple] = []
        self._stats_lock = threading.Lock()
        self._last: Optional[Dict[str, Any]] = None  # raw statistics of the last pruning
        self._media_prefills = 0

    # -- statistics ---------------------------------------------------------------------
    @property
    def last_stats(self) -> Dict[str, Any]:
        """Statistics of the last prefill that carried images or videos (any thread):
        ``visual_tokens_before`` / ``_after`` (summed over the batch), ``sequence_length_before``
        / ``_after``, ``importance_ms`` and ``select_ms`` (importance + selection; on CUDA read
        from events, so reading them waits for that work, and nothing else does),
        ``kept_indices`` (per pruned medium, its kept tokens' indices within it) and
        ``zero_score_picks`` (per pruned medium, picks made after every remaining score had
        been suppressed to 0, i.e. by index; computed when read)."""
        with self._stats_lock:
            last = self._last
            if last is None:
                return {}
            # Resolved once, on the first read: the timing events and the zero-score replay.
            if last.get("timing") is not None:
                timing = last.pop("timing")
                last["stats"].update(importance_ms=timing.elapsed_ms(0, 1), select_ms=timing.elapsed_ms(0, 2))
            if last.get("selections") is not None:
                last["stats"]["zero_score_picks"] = _zero_score_picks(last.pop("selections"), self.options.gamma)
            return dict(last["stats"])

    @property
    def media_prefills(self) -> int:
        """How many prefills with images or videos (each one sets ``last_stats``) this handle
        has seen: compare before and after a call to know whether it made one."""
        return self._media_prefills

    def _record(self, stats: Dict[str, Any], timing: Optional[_Timing] = None, selections=None) -> None:
        with self._stats_lock:
            self._last = {"stats": stats, "timing": timing, "selections": selections}
            self._media_prefills += 1

    # -- patching -----------------------------------------------------------------------
    def replace(self, obj: Any, name: str, make: Callable[[Callable], Callable]) -> None:
        """Shadow ``obj.name`` with ``make(original)`` as an instance attribute."""
        had_own = name in obj.__dict__  # e.g. an accelerate hook's forward: restored as is
        previous = obj.__dict__.get(name)
        original = getattr(obj, name)
        # Dynamo does not trace the wrappers themselves (data-dependent lengths, context
        # variables): torch.compile(model) breaks the graph there and compiles what they call;
        # fullgraph=True stops with this reason. functools.wraps keeps the signature visible:
        # generate() inspects these functions.
        wrapper = torch.compiler.disable(make(original), recursive=False, reason=COMPILE_REASON)
        object.__setattr__(obj, name, functools.wraps(original)(wrapper))
        self._saved.append((obj, name, had_own, previous))

    def remove(self) -> None:
        """Undo every replacement, in reverse order; the model is as before ``patch``."""
        for obj, name, had_own, previous in reversed(self._saved):
            if had_own:
                object.__setattr__(obj, name, previous)
            else:
                obj.__dict__.pop(name, None)
        self._saved.clear()
        base = self.adapter.base(self.model)
        if base.__dict__.get(HANDLE_ATTR) is self:
            del base.__dict__[HANDLE_ATTR]

    def __enter__(self) -> "PatchHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __deepcopy__(self, memo):
        raise TypeError(
            "idselect: copy.deepcopy of a patched model would copy hooks that still call the "
            "original model; call handle.remove(), copy the model, then idselect.patch each copy"
        )

    def _current_call(self) -> Optional[_Call]:
        call = _CALL.get()
        return call if call is not None and call.handle is self else None

    def _current_generation(self) -> Optional[_Generation]:
        gen = _GENERATION.get()
        return gen if gen is not None and gen.handle is self else None

    # -- wrappers -----------------------------------------------------------------------
    def wrap_generate(self, original: Callable) -> Callable:
        """Give one ``generate()`` call a context of its own (see ``_Generation``)."""
        def generate(*args, **kwargs):
            named = bound_arguments(original, args, kwargs, self.cache_arg, compat.GENERATE_CACHE_ALIASES)
            sequence = next((named[k] for k in ("inputs", "input_ids", "inputs_embeds") if named.get(k) is not None), None)
            mask = named.get("attention_mask")
            use_cache = named.get("use_cache")
            config = named.get("generation_config") or self.model.generation_config
            if use_cache is None:  # as generate() resolves it: its config argument, else the model's
                use_cache = getattr(config, "use_cache", True)
            self._refuse_broken_expansion(named, config)
            continues = cache_state(named.get(self.cache_arg))
            input_length = int(sequence.shape[1]) if sequence is not None else 0
            if continues is not None and input_length <= continues.original_length:
                raise ValueError(
                    f"idselect: generate() continues a pruned cache that already holds the first "
                    f"{continues.original_length} tokens of the conversation, but was given {input_length}: "
                    "pass the whole conversation (the previous sequences plus the new tokens), as for the unpatched model"
                )
            gen = _Generation(
                self,
                input_length=input_length,
                attention_mask=mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None,
                continues=continues,
                use_cache=use_cache is not False,
            )
            return _with_context(_GENERATION, gen, original, args, kwargs)

        return generate

    def _refuse_broken_expansion(self, named: Dict[str, Any], config) -> None:
        """Refuse a generate() call with media that this transformers release repeats wrongly
        for beams or several returned sequences (compat.BROKEN_EXPANSION, ITEMWISE_EXPANSION)."""
        copies = max(int(named.get("num_beams") or getattr(config, "num_beams", 1) or 1),
                     int(named.get("num_return_sequences") or getattr(config, "num_return_sequences", 1) or 1))
        if copies == 1 or not any(named.get(k) is not None for k in MEDIA_INPUTS):
            return
        version = compat.transformers_version()
        if compat.broken_expansion(self.adapter.model_type, version, several_items=True) is None:
            return  # this release expands every prompt right: no need to count its items (a host sync)
        reason = compat.broken_expansion(self.adapter.model_type, version, self._several_items_per_prompt(named))
        if reason is not None:
            raise NotImplementedError(
                f"idselect: transformers {version} cannot run generate() with num_beams / num_return_sequences > 1 on "
                f"{self.adapter.model_type} with these images or videos: {reason}; the unpatched model is affected too. "
                "Upgrade transformers, or generate one sequence per prompt"
            )

    def _several_items_per_prompt(self, named: Dict[str, Any]) -> bool:
        """Whether a prompt of this generate() call may hold more than one item of a modality
        (images, videos; InternVL: tiles): more items than prompts that show that modality.
        Media it cannot count (embeddings only, lists, pre-encoded outputs) count as several:
        this only matters where a release mis-expands them, and there refusing is the safe side."""
        ids = next((named[k] for k in ("input_ids", "inputs") if isinstance(named.get(k), torch.Tensor)), None)
        if ids is None or ids.dim() != 2 or ids.is_floating_point() or named.get("mm_encoder_outputs") is not None:
            return True
        config = self.adapter.base(self.model).config
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

    def wrap_top_forward(self, original: Callable) -> Callable:
        """Note a call with labels=, which pruning cannot serve (refused where it would prune)."""
        def forward(*args, **kwargs):
            if kwargs.get("labels") is None:
                return original(*args, **kwargs)
            return _with_context(_LABELS, self, original, args, kwargs)

        return forward

    def wrap_feature_fn(self, original: Callable, saliency_layer: Callable[..., Optional[nn.Module]],
                        describe: Callable[..., List[Media]]) -> Callable:
        """Run the feature function, capturing the input of the vision layer whose [CLS]
        attention gives saliency (a forward pre-hook that only this thread's call fills:
        nothing the model computes changes), and attach the List[Media] the adapter derives
        from both to the output."""
        def feature_fn(*args, **kwargs):
            if _FEATURES.get() is self:
                # Called by another wrapped feature function (Qwen3-VL's video features call its
                # image features): the outer call describes these media, as what they are.
                return original(*args, **kwargs)
            layer = saliency_layer(*args, **kwargs)
            captured: List[torch.Tensor] = []
            owner = threading.get_ident()
            hook = None
            if layer is not None:
                def capture(mod, a, kw):
                    if threading.get_ident() == owner and not captured:
                        captured.append(a[0] if a else kw["hidden_states"])
                hook = layer.register_forward_pre_hook(capture, with_kwargs=True)
            # Under torch.compile a compiled tower may skip a hook added after compilation:
            # a tower whose input is captured runs eagerly.
            run = original if hook is None else torch.compiler.disable(original, reason=SALIENCY_REASON)
            try:
                output = _with_context(_FEATURES, self, run, args, kwargs)
            finally:
                if hook is not None:
                    hook.remove()
            media = describe(output, captured[0] if captured else None, *args, **kwargs)
            try:
                setattr(output, MEDIA_ATTR, media)
            except AttributeError:  # a plain tuple (return_dict=False): the call below still sees it
                pass
            call = self._current_call()
            if call is not None and media:
                call.media.setdefault(media[0].modality, []).extend(media)
            return output

        return feature_fn

    def wrap_model_forward(self, original: Callable, token_masks: Callable[..., Dict[str, torch.Tensor]]) -> Callable:
        def forward(*args, **kwargs):
            named = bound_arguments(original, args, kwargs, self.cache_arg)
            gen = self._current_generation()
            if gen is not None and gen.first_forward:
                gen.first_forward = False
                named = self._drop_cached_overlap(gen, named)
            carries_media = any(named.get(k) is not None for k in MEDIA_INPUTS)
            masks = token_masks(**named) if carries_media else None  # (decode steps: no synchronisation)
            if not masks or not any(bool(m.any()) for m in masks.values()):
                return original(**named)
            call = _Call(self, modality_masks=masks)
            for modality, output in (named.get("mm_encoder_outputs") or {}).items():
                media = getattr(output, MEDIA_ATTR, None) if output is not None else None
                if media:
                    call.media.setdefault(modality, []).extend(media)
            return _with_context(_CALL, call, original, (), named)

        return forward

    def _drop_cached_overlap(self, gen: _Generation, named: Dict[str, Any]) -> Dict[str, Any]:
        """generate() continuing a pruned cache slices the conversation by the cache's length,
        so it re-feeds the last (original_length - length) tokens the cache already holds:
        drop them here, before the model embeds them."""
        state = gen.continues
        cache = named.get(self.cache_arg)
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

    def wrap_language_model(self, original: Callable) -> Callable:
        def forward(*args, **kwargs):
            kwargs = bound_arguments(original, args, kwargs, self.cache_arg)
            call = self._current_call()
            token = _CALL.set(None)  # consumed: a nested LLM call (relevance layers) sees none
            try:
                return self._language_model_call(original, call, kwargs)
            finally:
                _CALL.reset(token)

        return forward

    def _language_model_call(self, original, call: Optional[_Call], kwargs):
        """One call into the language model: a prefill with media, or a call that continues a
        cache with a pruning state, or (neither) the model untouched."""
        cache = kwargs.get(self.cache_arg)
        state = cache_state(cache)
        if state is not None:
            held = int(cache.get_seq_length())
            if held == 0:
                cache.__dict__.pop(STATE_ATTR, None)
                state = None  # the cache was reset: a new sequence
            elif held != state.length:
                raise RuntimeError(
                    f"idselect: this cache holds {held} columns but its pruning state describes "
                    f"{state.length}: it was changed outside the patched model (a call after "
                    "handle.remove(), cache.crop(), assisted decoding); start a new cache"
                )
        if call is not None and kwargs.get("inputs_embeds") is not None and call.media:
            return self._prefill(original, call, kwargs, state)
        if state is not None:
            return self._run(original, *self._continue(kwargs, state, keep_cols=None))
        return original(**kwargs)

    # -- prefill: score, select, prune ----------------------------------------------------
    def _media_positions(self, call: _Call) -> List[tuple]:
        """(Media, row, positions[num_tokens]) for every medium, in placeholder order."""
        found = []
        for modality, mask in call.modality_masks.items():
            rows, cols = mask.nonzero(as_tuple=True)  # row-major: the order features fill in
            media = _expand_for_rows(call.media.get(modality, []), mask.sum(dim=1).tolist(), modality)
            start, placed = 0, []
            for m in media:
                r, c = rows[start : start + m.num_tokens], cols[start : start + m.num_tokens]
                if m.num_tokens and not bool((r == r[0]).all()):
                    raise RuntimeError(
                        f"idselect: {modality} features of {m.num_tokens} tokens fall on batch rows "
                        f"{sorted(set(r.tolist()))}: the placeholders of one {modality} must lie in one row"
                    )
                placed.append((m, int(r[0]) if m.num_tokens else 0, c))
                start += m.num_tokens
            if modality in self.adapter.merge_adjacent:
                placed = _merge_adjacent(placed)
            found += placed
        return found

    def _prefill(self, original, call, kwargs, state: Optional[CacheState]):
        opts = self.options
        embeds = kwargs["inputs_embeds"]
        B, L, _ = embeds.shape
        media = self._media_positions(call)
        plan = [(m, row, cols, opts.budget(m.num_tokens)) for m, row, cols in media]
        before = sum(m.num_tokens for m, _, _ in media)
        stats = {"visual_tokens_before": before, "visual_tokens_after": before,
                 "sequence_length_before": L, "sequence_length_after": L,
                 "importance_ms": 0.0, "select_ms": 0.0, "kept_indices": [], "zero_score_picks": []}
        to_prune = [p for p in plan if p[3] < p[0].num_tokens]
        if to_prune and _LABELS.get() is self:
            raise ValueError(
                "idselect: labels= (training or loss computation) is not supported on a patched "
                "model: the logits cover the pruned sequence, not input_ids; call handle.remove() first"
            )
        if state is not None and state.position_rows:
            raise NotImplementedError(
                f"idselect: new images or videos in a call that continues a pruned cache are not supported "
                f"for {self.adapter.model_type} (its M-RoPE positions of later media depend on the unpruned "
                "conversation); start a new cache for a turn that brings new media"
            )
        if not to_prune:  # keep = everything: run the model untouched
            self._record(stats)
            if state is not None:
                return self._run(original, *self._continue(kwargs, state, keep_cols=None))
            return original(**kwargs)
        chunk_mask = self._chunk_mask(kwargs, state, L)
        gen = self._current_generation()
        reuse = gen is not None and not gen.use_cache and gen.no_cache_keep is not None
        if reuse and gen.no_cache_keep.shape[0] == B and gen.no_cache_keep.shape[1] <= L:
            # use_cache=False: every step re-runs the whole sequence; the selection is the first
            # step's (as with a cache), not one made again with the latest token as the query.
            keep_cols = torch.ones(B, L, dtype=torch.bool, device=embeds.device)
            keep_cols[:, : gen.no_cache_keep.shape[1]] = gen.no_cache_keep
            timing, selections = None, None
        else:
            timing = _Timing(embeds.device)
            timing.mark()
            scores = self._importance(original, to_prune, embeds, chunk_mask, kwargs, state)
            timing.mark()
            keep_cols = torch.ones(B, L, dtype=torch.bool, device=embeds.device)
            kept, selections = self._select(to_prune, scores, embeds, keep_cols)
            timing.mark()
            stats["kept_indices"] = kept
            if gen is not None and not gen.use_cache:
                gen.no_cache_keep = keep_cols
        new_kwargs, new_state = self._continue(kwargs, state, keep_cols, chunk_mask)
        if timing is not None:  # a step that reuses a selection leaves its statistics alone
            # From shapes known on the host (no synchronisation): budgets may exceed candidates.
            removed = sum(m.num_tokens - kept.numel() for (m, *_), kept in zip(to_prune, stats["kept_indices"]))
            stats.update(visual_tokens_after=before - removed,
                         sequence_length_after=int(new_kwargs["inputs_embeds"].shape[1]))
            self._record(stats, timing, selections)
        return self._run(original, new_kwargs, new_state)

    def _mask_known(self, kwargs) -> bool:
        """Whether the caller said anything about padding (a mask to this call or to generate())."""
        mask = kwargs.get("attention_mask")
        gen = self._current_generation()
        return (isinstance(mask, torch.Tensor) and mask.dim() == 2) or (gen is not None and gen.attention_mask is not None)

    def _chunk_mask(self, kwargs, state: Optional[CacheState], q: int) -> torch.Tensor:
        """[B, q] 2-D mask of the tokens of this call (1 = real token)."""
        embeds = kwargs["inputs_embeds"]
        B = embeds.shape[0]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            return mask[:, -q:]
        gen = self._current_generation()
        given = gen.attention_mask if gen is not None else None
        if given is not None and B % given.shape[0] == 0:
            # generate() may hand the model prepared 4-D masks (static caches, beams): use the
            # 2-D mask it was given, rows repeated as generate() repeats them.
            full = given.repeat_interleave(B // given.shape[0], dim=0)
            start = state.original_length if state is not None else self._past_length(kwargs)
            tail = full[:, start : start + q].to(embeds.device)
            if tail.shape[1] < q:
                tail = torch.cat([tail, tail.new_ones(B, q - tail.shape[1])], dim=1)
            return tail
        if mask is None or isinstance(mask, dict):
            return torch.ones(B, q, dtype=torch.long, device=embeds.device)
        raise ValueError(
            f"idselect: needs a 2-D attention_mask [batch, length] (or none) on a patched model, got "
            f"a tensor of shape {list(mask.shape)}; pass the 2-D padding mask and let the model build the rest"
        )

    def _importance(self, llm_forward, plan, embeds, chunk_mask, kwargs, state) -> List[torch.Tensor]:
        """Importance in [0, 1] over each planned medium's candidate tokens."""
        opts = self.options
        want = opts.importance
        if want in ("saliency", "unified") and not all(m.saliency is not None for m, *_ in plan):
            raise ValueError(
                f"idselect: importance={want!r} needs visual saliency, which this "
                f"model ({self.adapter.model_type}) did not provide for this input; use importance='relevance'"
            )
        relevance_hidden = None
        if want in ("relevance", "unified"):
            relevance_hidden = self._relevance_inputs(llm_forward, embeds, chunk_mask, kwargs, state)
        out = []
        for m, row, cols, _ in plan:
            cand = m.candidate_part(cols)
            sal = None if m.saliency is None else m.candidate_part(m.saliency.to(embeds.device))
            if want == "saliency":
                out.append(imp.minmax(sal))
                continue
            rel = self._relevance(relevance_hidden, row, cand)
            out.append(rel if want == "relevance" else imp.unified(sal, rel, opts.alpha))
        return out

    def _relevance_inputs(self, llm_forward, embeds, chunk_mask, kwargs, state):
        """Hidden states entering LLM layer ``relevance_layer`` (and positions for rotary)."""
        opts = self.options
        llm = self.adapter.language_model(self.model)
        layers = self.adapter.decoder_layers(llm)
        B, L, _ = embeds.shape
        past = self._past_length(kwargs)
        if opts.relevance_layer > 0 and past > 0:
            first_is_attention = hasattr(layers[0], "self_attn")  # Qwen3.5: layer 0 is linear attention
            raise NotImplementedError(
                f"idselect: relevance_layer={opts.relevance_layer} needs the LLM's layers on the whole "
                "conversation, but this call continues a cache; "
                + ("use relevance_layer=0 or start a new cache" if first_is_attention else "start a new cache")
            )
        positions = self._chunk_positions(kwargs, state, chunk_mask)
        hidden = embeds
        if opts.relevance_layer > 0:
            run = dict(kwargs, attention_mask=chunk_mask)
            if "cache_position" in run:
                run["cache_position"] = None
            hidden = _run_until_layer(llm_forward, layers[opts.relevance_layer], run, self.cache_arg)
        last = _last_token_index(chunk_mask, B, L, embeds.device)
        rotary = None
        if opts.relevance_rope:
            if positions.dim() == 3 and positions.shape[0] == 4:  # text row + M-RoPE rows
                positions = positions[1:]
            cos, sin = llm.rotary_emb(hidden, positions)
            rotary = (cos, sin)
        return hidden, last, rotary, layers[opts.relevance_layer]

    def _relevance(self, inputs, row, cand):
        hidden, last, rotary, layer = inputs
        cfg = self.adapter.text_config(self.model)
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        rot = None
        if rotary is not None:
            cos, sin = rotary
            q_at = last[row]
            rot = (cos[row, q_at][None], sin[row, q_at][None], cos[row, cand], sin[row, cand])
        return imp.instruction_relevance(hidden[row, last[row]], hidden[row, cand], layer, heads, kv_heads, rot)

    def _select(self, plan, scores, embeds, keep_cols):
        """One idselect.select call per distinct budget (ragged media padded, with lengths).
        Returns, per pruned medium, the kept token indices within it (for visualisation), and
        what the zero-score diagnostics need."""
        opts = self.options
        kept: List[Optional[torch.Tensor]] = [None] * len(plan)
        selections: List[Optional[tuple]] = [None] * len(plan)
        candidate_cols = []
        for m, row, cols, _ in plan:
            keep_cols[row, cols] = False
            candidate_cols.append(m.candidate_part(cols))
        # One call per effective budget: a medium with fewer candidates than its budget keeps
        # them all without lowering the budget of the others.
        groups: Dict[int, List[int]] = {}
        for i, (_, _, _, k) in enumerate(plan):
            groups.setdefault(min(k, candidate_cols[i].numel()), []).append(i)
        for k_eff, members in groups.items():
            cand_cols = [candidate_cols[i] for i in members]
            sizes = [c.numel() for c in cand_cols]
            width = max(sizes)
            feats = embeds.new_zeros(len(members), width, embeds.shape[-1])
            s = torch.zeros(len(members), width, device=embeds.device)
            for j, i in enumerate(members):
                feats[j, : sizes[j]] = embeds[plan[i][1], cand_cols[j]]
                s[j, : sizes[j]] = scores[i]
            lengths = torch.tensor(sizes, device=embeds.device)
            if opts.selection == "topk":  # no diversity step: the k best scores, ties to the smaller index
                valid = torch.arange(width, device=s.device)[None] < lengths[:, None]
                order = torch.where(valid, s, s.new_full((), -1.0)).sort(dim=1, descending=True, stable=True).indices
                picked = order[:, :k_eff]
            elif callable(opts.selection):
                picked = _checked_picks(opts.selection(feats.detach(), s, k_eff, opts.gamma, lengths), lengths, k_eff)
            else:
                picked = id_select(feats.detach(), s, k_eff, opts.gamma, lengths, validate=False)
            for j, i in enumerate(members):
                chosen = cand_cols[j][picked[j]]
                keep_cols[plan[i][1], chosen] = True
                # Index within the medium: its tokens are plan[i][2] in order.
                kept[i] = torch.searchsorted(plan[i][2], chosen.sort().values)
                selections[i] = (feats[j, : sizes[j]].detach(), s[j, : sizes[j]], picked[j])
        return kept, selections

    # -- pruning and the calls that follow it ----------------------------------------------
    def _continue(self, kwargs, state: Optional[CacheState], keep_cols: Optional[torch.Tensor],
                  chunk_mask: Optional[torch.Tensor] = None):
        """Run this call's tokens as the continuation of ``state``'s cache (or as a fresh
        prefill when ``state`` is None): drop the columns ``keep_cols`` marks False and every
        padding column, left-pad the rest to one width, set mask and positions. Returns the
        LLM's keyword arguments and the state of the cache after this call.

        Positions: without a state the caller's positions are used; 1-D positions (and the
        text row of 4-row M-RoPE positions, which only shapes the mask) are renumbered
        contiguously - a kept token's position minus the real tokens removed before it; M-RoPE
        (t, h, w) rows keep every kept token's original position. With a state, positions
        continue from the cache's next position on every row, whatever the caller computed
        for the unpruned sequence."""
        embeds = kwargs.get("inputs_embeds")
        ids = kwargs.get("input_ids")
        sequence = embeds if embeds is not None else ids
        B, q = sequence.shape[:2]
        device = sequence.device
        mask_known = chunk_mask is not None or self._mask_known(kwargs)
        if chunk_mask is None:
            chunk_mask = self._chunk_mask(dict(kwargs, inputs_embeds=sequence), state, q)
        real = chunk_mask.bool()
        new_kwargs = dict(kwargs)
        if keep_cols is None:
            # Nothing pruned in this call (decode steps): every column stays, so the width is
            # known without a synchronisation; padding advances no position.
            keep, width = None, q
            positions = self._chunk_positions(kwargs, state, real)
            rows_of = positions[None] if positions.dim() == 2 else positions  # [R, B, q]
            new_rows, new_chunk_mask = rows_of, chunk_mask.long()
        else:
            keep = keep_cols & real  # padding columns go too: no column is padding in every row
            # With a state the kept tokens simply continue the cache's positions.
            positions = self._chunk_positions(kwargs, state, keep)
            rows_of = positions[None] if positions.dim() == 2 else positions  # [R, B, q]
            renumber = [0] if state is None and (positions.dim() == 2 or rows_of.shape[0] == 4) else []
            removed_before = torch.cumsum((real & ~keep).long(), dim=1)
            lengths = keep.sum(dim=1)
            width = int(lengths.max())
            pad = width - lengths  # left padding per row
            dest = pad[:, None] + torch.cumsum(keep.long(), dim=1) - 1  # column of each kept token
            batch_rows = torch.arange(B, device=device)[:, None].expand(B, q)
            src_r, dst_c = batch_rows[keep], dest[keep]

            def place(values: torch.Tensor) -> torch.Tensor:
                """[B, q, ...] -> [B, width, ...]: each row's kept columns in order, left-padded with 0."""
                out = values.new_zeros((B, width) + tuple(values.shape[2:]))
                out[src_r, dst_c] = values[keep]
                return out

            if embeds is not None:
                new_kwargs["inputs_embeds"] = place(embeds)
            else:
                new_kwargs["input_ids"] = place(ids)
            new_rows = torch.stack([place(rows_of[r] - removed_before if r in renumber else rows_of[r])
                                    for r in range(rows_of.shape[0])])
            new_chunk_mask = place(torch.ones_like(keep, dtype=torch.long))
            self.adapter.prune_language_inputs(kwargs, new_kwargs, keep, place)
            mask_known = mask_known or not bool(new_chunk_mask.bool().all())
        new_real = new_chunk_mask.bool()

        past = state.length if state is not None else self._past_length(kwargs)
        caller_mask = kwargs.get("attention_mask")
        head = None
        if state is not None:
            head = state.mask
        elif past > 0 and isinstance(caller_mask, torch.Tensor) and caller_mask.dim() == 2:
            head = caller_mask[:, :past].long()
        if head is None and not mask_known:
            full_mask = None  # no padding anywhere, and the caller gave no mask: none needed
        else:
            head = head if head is not None else torch.ones(B, past, dtype=torch.long, device=device)
            full_mask = torch.cat([head.to(device), new_chunk_mask], dim=1)
        new_kwargs["attention_mask"] = full_mask
        new_kwargs["position_ids"] = new_rows[0] if positions.dim() == 2 else new_rows
        if kwargs.get("cache_position") is not None:
            new_kwargs["cache_position"] = torch.arange(past, past + width, device=device)

        previous = state.next_positions if state is not None else rows_of.new_zeros(rows_of.shape[0], B)
        newest = torch.where(new_real[None], new_rows, new_rows.new_full((), -1)).amax(dim=2) + 1 if width else previous
        new_state = CacheState(
            length=past + width,
            original_length=(state.original_length if state is not None else past) + q,
            mask=full_mask.long() if full_mask is not None else None,
            next_positions=torch.maximum(previous, newest),
            position_rows=0 if positions.dim() == 2 else rows_of.shape[0])
        return new_kwargs, new_state

    def _run(self, original, new_kwargs, new_state: CacheState):
        """Run the LLM on the translated call; the cache it filled (passed in, or created by
        the LLM itself) records the new state."""
        output = original(**new_kwargs)
        cache = new_kwargs.get(self.cache_arg)
        if cache is None:
            cache = output_cache(output, self.cache_arg)
        if cache is not None and new_kwargs.get("use_cache", True) is not False:
            setattr(cache, STATE_ATTR, new_state)
            self.adapter.after_prefill(self.model, new_state)
        return output

    def _past_length(self, kwargs) -> int:
        cache = kwargs.get(self.cache_arg)
        return int(cache.get_seq_length()) if cache is not None else 0

    def _chunk_positions(self, kwargs, state: Optional[CacheState], counted: torch.Tensor) -> torch.Tensor:
        """Positions of this call's tokens: the caller's (fresh cache), or the cache's next
        positions plus the rank of each token among the ``counted`` ones (a cache with a state)."""
        B, q = counted.shape
        device = counted.device
        rank = torch.cumsum(counted.long(), dim=1) - 1  # [B, q]
        if state is not None:
            positions = state.next_positions.to(device)[..., None] + rank  # [R, B, q]
            return positions[0] if state.position_rows == 0 else positions
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = (torch.arange(q, device=device) + self._past_length(kwargs))[None].expand(B, q)
        return positions


def _with_context(var: contextvars.ContextVar, value, fn: Callable, args, kwargs):
    """``fn(*args, **kwargs)`` with ``var`` set to ``value`` for the duration of the call."""
    token = var.set(value)
    try:
        return fn(*args, **kwargs)
    finally:
        var.reset(token)


def _expand_for_rows(media: List[Media], row_counts: List[int], modality: str) -> List[Media]:
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


def _checked_picks(picked, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """What a selection function passed to patch() returned, checked before it prunes anything."""
    if not isinstance(picked, torch.Tensor) or picked.dtype != torch.long or tuple(picked.shape) != (lengths.numel(), k):
        raise TypeError(
            f"idselect: the selection function must return an int64 tensor of shape {[lengths.numel(), k]}, got "
            + (f"{picked.dtype} {list(picked.shape)}" if isinstance(picked, torch.Tensor) else type(picked).__name__)
        )
    if bool(((picked < 0) | (picked >= lengths[:, None])).any()):
        raise ValueError(f"idselect: the selection function returned indices outside [0, length) per row: {picked.tolist()}")
    return picked


def _zero_score_picks(selections, gamma: float) -> List[Optional[int]]:
    """Per medium, the picks made when its best remaining score was 0 (the rule then takes
    the smallest index): the selection replayed on the recorded picks, in float32."""
    out: List[Optional[int]] = []
    for sel in selections:
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


def _merge_adjacent(placed: List[tuple]) -> List[tuple]:
    """Join media whose placeholder tokens directly follow each other in one row (InternVL's
    tiles of one image) into one medium with one budget."""
    merged: List[tuple] = []
    for m, row, cols in placed:
        if merged:
            pm, prow, pcols = merged[-1]
            if prow == row and pm.modality == m.modality and int(pcols[-1]) + 1 == int(cols[0]):
                sal = None
                if pm.saliency is not None and m.saliency is not None:
                    sal = torch.cat([pm.saliency, m.saliency])
                merged[-1] = (Media(m.modality, pm.num_tokens + m.num_tokens, sal), row, torch.cat([pcols, cols]))
                continue
        merged.append((m, row, cols))
    return merged


class _StopForward(Exception):
    pass


def _run_until_layer(llm_forward, layer: nn.Module, kwargs, cache_arg: str) -> torch.Tensor:
    """Run the LLM on this call's sequence until ``layer``; return that layer's input. The
    hook acts only in this thread: other threads running the same model pass through."""
    captured = {}
    owner = threading.get_ident()

    def grab(module, args, kw):
        if threading.get_ident() == owner:
            captured["hidden"] = args[0] if args else kw["hidden_states"]
            raise _StopForward

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        run_kwargs = {k: v for k, v in kwargs.items() if k not in (cache_arg, "use_cache")}
        with torch.no_grad():
            llm_forward(**run_kwargs, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["hidden"]


def _last_token_index(chunk_mask, B, L, device) -> torch.Tensor:
    """Column of the last real token per row (the end of the instruction)."""
    cols = torch.arange(L, device=device)[None].expand(B, L)
    return torch.where(chunk_mask.bool(), cols, -1).amax(dim=1)


class FamilyAdapter:
    """What a model family tells the hooks: where things are and how to read its features."""

    model_type: str = ""
    merge_adjacent: tuple = ()  # modalities whose adjacent media form one (InternVL tiles)

    def base(self, model: nn.Module) -> nn.Module:
        return model.model if hasattr(model, "model") and hasattr(model.model, "language_model") else model

    def language_model(self, model: nn.Module) -> nn.Module:
        return self.base(model).language_model

    def text_config(self, model: nn.Module):
        return model.config.text_config

    def decoder_layers(self, llm: nn.Module):
        return llm.layers

    def has_saliency(self, model: nn.Module) -> bool:
        """Whether the vision tower offers [CLS] saliency."""
        return False

    def check(self, model: nn.Module) -> None:
        """Raise TypeError for a checkpoint of this model_type that the adapter cannot serve."""

    def install(self, handle: PatchHandle) -> None:
        raise NotImplementedError

    def install_common(self, handle: PatchHandle, token_masks: Callable[..., Dict[str, torch.Tensor]]) -> None:
        """The wrappers every family needs: model forward, language model, generate()."""
        base = self.base(handle.model)
        handle.replace(base, "forward", lambda orig: handle.wrap_model_forward(orig, token_masks))
        handle.replace(self.language_model(handle.model), "forward", handle.wrap_language_model)
        if base is not handle.model:
            handle.replace(handle.model, "forward", handle.wrap_top_forward)
            if hasattr(handle.model, "generate"):
                handle.replace(handle.model, "generate", handle.wrap_generate)

    def prune_language_inputs(self, kwargs: Dict[str, Any], new_kwargs: Dict[str, Any], keep: torch.Tensor,
                              place: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Prune the family's own per-token LLM inputs as the sequence is pruned (Qwen3-VL's
        deepstack features): ``keep`` [B, q] marks the columns that stay, ``place`` maps a
        [B, q, ...] tensor to the pruned layout. Writes into ``new_kwargs``."""

    def after_prefill(self, model: nn.Module, state: CacheState) -> None:
        """Hook for model state that depends on the pruned length (Qwen2.5-VL's rope_deltas)."""
