"""The transformers integration: the only part of the hooks that knows argument names, cache
objects, mask formats and how they differ by release (``compat``, the table). It wraps a
patched model's functions, reads each call's arguments once, and hands plain tensors to the
engine (``engine``, ``scoring``, ``compaction``).

How a patched model runs:

1. The family's feature functions (``get_image_features`` ...) are wrapped: after the original
   runs, the family's ``describe`` turns its output (and the captured input of the vision
   layer whose [CLS] attention gives saliency) into a list of ``Media``, attached to the output
   and to the current call.
2. The base model's forward is wrapped to note which input positions hold which modality and
   to collect the media of this call, and - on the first forward of a ``generate()`` call that
   continues a pruned cache - to drop the tokens that cache already holds.
3. The language model's forward is wrapped: on a call that carries media it places, plans,
   scores and selects (``engine``), compacts the sequence (``compaction``) and runs the LLM on
   the shorter one. Every later call on that cache gets its mask and positions translated.

Where state lives (docs/hooks.md, "Generation patterns"):

- what one forward call learns (its media): ``Call``, in a context variable for that call;
- what a prefill learns (the cache's columns against the caller's sequence, its mask, the next
  positions): ``CacheState``, on the cache object it filled;
- what one ``generate()`` call needs across its steps: ``generation.Generation``, in a context
  variable for that call;
- options and the statistics of the last pruning: the ``PatchHandle``.
"""
from __future__ import annotations

import contextvars
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from . import compat, engine, scoring
from .compaction import CacheState, chunk_positions
from .family import cls_attention_of, layer_position
from .generation import STATE_ATTR, cache_state, current_generation, drop_cached_overlap, with_context, wrap_generate
from .llm_call import LanguageModelCalls

MEDIA_ATTR = "idselect_media"  # attribute of a feature function's output: its List[Media]
VISION_ATTR = "idselect_vision_timing"  # and the engine.Timing of the call that made it
SALIENCY_REASON = "idselect: the vision layer's input is captured for [CLS] saliency"
#: Inputs that carry media in every family, besides its own ``media_inputs``: encodings made
#: earlier by the model (transformers >= 5.22 passes them back in).
COMMON_MEDIA_INPUTS = ("mm_encoder_outputs",)


#: A call's output_hidden_states in a form no proof is kept for (read by a hook every time).
UNREADABLE = object()


def hidden_states_request(asked: Any) -> Any:
    """A call's ``output_hidden_states`` as a key of what the tower returns: None, True or False
    as given; indices (an int, or a sequence of ints such as a list, tuple or array) as
    ``("layers", i, ...)``, so that ``1`` is not ``True``; UNREADABLE for anything else."""
    if asked is None or isinstance(asked, bool):
        return asked
    try:
        return ("layers",) + tuple(int(i) for i in (asked if hasattr(asked, "__iter__") else [asked]))
    except (TypeError, ValueError):
        return UNREADABLE


def state_at(states: Any, position: int) -> Optional[torch.Tensor]:
    """``states[position]`` of a tower's returned hidden states, None where there is none."""
    return states[position] if isinstance(states, (tuple, list)) and len(states) > position else None


@dataclass
class Call:
    """One forward call of the patched model: set by the model-forward wrapper, read by the
    feature and LLM wrappers further down the same call."""

    handle: Any
    modality_masks: Dict[str, torch.Tensor]  # modality -> [B, L] bool
    media: Dict[str, List[engine.Media]] = field(default_factory=dict)
    vision: List[engine.Timing] = field(default_factory=list)  # each feature function's start and end


_CALL: contextvars.ContextVar = contextvars.ContextVar("idselect_call", default=None)
_LABELS: contextvars.ContextVar = contextvars.ContextVar("idselect_labels", default=None)  # handle of a call with labels=
_FEATURES: contextvars.ContextVar = contextvars.ContextVar("idselect_features", default=None)  # handle whose feature function runs
_TUPLE_ASKED: contextvars.ContextVar = contextvars.ContextVar("idselect_tuple_asked", default=None)  # Hooks.as_requested


def placeholder_mask(base: nn.Module, token_id: int, input_ids, inputs_embeds) -> torch.Tensor:
    """[B, L] bool, where ``token_id`` placeholders are (read from the ids, else the embeddings)."""
    if input_ids is not None:
        return input_ids == token_id
    token = base.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
    return (inputs_embeds == token).all(-1)


class _StopForward(Exception):
    pass


def run_until_layer(llm_forward, layer: nn.Module, kwargs, cache_arg: str) -> torch.Tensor:
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


def kept_media_tokens(masks: Dict[str, np.ndarray], media: Dict[str, list], real: np.ndarray,
                      table: engine.CandidateTable) -> int:
    """Placeholder columns (of the modalities with media in this call) the LLM receives after
    the selection, over the batch, from host values: every real one, less what pruned media drop."""
    planes = [masks[m] for m in masks if media.get(m)]
    if not planes:
        return 0
    kept = int((np.logical_or.reduce(planes) & real).sum())
    return kept - sum(int(real[p.row, p.columns].sum()) - int(k) for p, k in zip(table.media, table.budgets))


class Hooks:
    """The wrappers one ``PatchHandle`` installs, and the prefill they run."""

    def __init__(self, handle):
        self.handle = handle
        self.family = handle.family
        self.model = handle.model
        self.base = self.family.base(handle.model)
        self.cache_arg = handle.cache_arg
        self.media_inputs = tuple(self.family.media_inputs) + COMMON_MEDIA_INPUTS
        self.calls = LanguageModelCalls(handle)
        #: (feature function, saliency layer position, the call's output_hidden_states) ->
        #: whether its output's hidden_states hold that layer's input (learned on the first
        #: such call, which captures it by a hook).
        self._saliency_from_states: Dict[tuple, bool] = {}

    def install(self) -> None:
        """Replace the family's feature functions, the base model's and the LLM's forward,
        and the top model's forward and generate()."""
        h = self.handle
        for name, (modality, tower) in self.family.feature_functions.items():
            h.replace(self.base, name, lambda orig, m=modality, t=tower: self.wrap_feature_fn(orig, m, t))
        h.replace(self.base, "forward", self.wrap_model_forward)
        h.replace(self.family.language_model(self.model), "forward", self.wrap_language_model)
        if self.base is not self.model:
            h.replace(self.model, "forward", self.wrap_top_forward)
            if hasattr(self.model, "generate"):
                h.replace(self.model, "generate", lambda orig: wrap_generate(h, self.media_inputs, orig))

    def _current_call(self) -> Optional[Call]:
        call = _CALL.get()
        return call if call is not None and call.handle is self.handle else None

    # -- wrappers -----------------------------------------------------------------------
    def wrap_top_forward(self, original: Callable) -> Callable:
        """Note a call with labels=, which pruning cannot serve (refused where it would prune)."""
        def forward(*args, **kwargs):
            if kwargs.get("labels") is None:
                return original(*args, **kwargs)
            return with_context(_LABELS, self.handle, original, args, kwargs)

        return forward

    def wrap_feature_fn(self, original: Callable, modality: str, tower_attr: Optional[str]) -> Callable:
        """Run the feature function and attach the media the family describes, with the input
        of the vision layer whose [CLS] attention gives saliency: read from the hidden states
        the tower returns where the first call proved them to be that input (no hook, so a
        compiled tower stays compiled), else captured by a forward pre-hook that only this
        thread's call fills (nothing the model computes changes)."""
        def feature_fn(*args, **kwargs):
            if _FEATURES.get() is self.handle:
                # Called by another wrapped feature function (Qwen3-VL's video features call its
                # image features): the outer call describes these media, as what they are.
                return original(*args, **kwargs)
            named = compat.bound_arguments(original, args, kwargs)
            layer = self.family.saliency_layer(self.base, tower_attr, named)
            position = None if layer is None else layer_position(getattr(self.base, tower_attr), layer)
            # Which hidden states the tower returns depends on the call's output_hidden_states
            # (5.2x's feature functions ask for the feature layer alone unless the caller asks
            # for more), so what the first call proved holds for calls that ask the same.
            request = hidden_states_request(named.get("output_hidden_states"))
            proof_key = None if request is UNREADABLE else (original, position, request)
            from_states = self._saliency_from_states.get(proof_key)
            captured: List[torch.Tensor] = []
            owner = threading.get_ident()
            hook = None
            if layer is not None and not from_states:
                def capture(mod, a, kw):
                    if threading.get_ident() == owner and not captured:
                        captured.append(a[0] if a else kw["hidden_states"])
                hook = layer.register_forward_pre_hook(capture, with_kwargs=True)
            # Under torch.compile a compiled tower may skip a hook added after compilation:
            # a tower whose input is captured runs eagerly.
            run = original if hook is None else torch.compiler.disable(original, reason=SALIENCY_REASON)
            call = self._current_call()
            timing = engine.Timing(self.calls.device())
            timing.mark("start")
            try:
                output = with_context(_FEATURES, self.handle, run, args, kwargs)
            finally:
                if hook is not None:
                    hook.remove()
            timing.mark("end")
            if call is not None:
                call.vision.append(timing)
            states = getattr(output, "hidden_states", None)
            if from_states:
                held = state_at(states, position)
                if held is None:
                    # Not what the proof saw (a config changed in between): no saliency rather
                    # than a guess; the next such call captures again.
                    self._saliency_from_states[proof_key] = False
                else:
                    captured.append(held)
            elif hook is not None and captured and proof_key is not None:
                # The tower's own hidden states hold this layer's input: read them from now on.
                self._saliency_from_states[proof_key] = state_at(states, position) is captured[0]
            attention = cls_attention_of(layer, captured[0] if captured else None)
            media = self.family.describe(modality, self.base, named, output, attention)
            setattr(output, MEDIA_ATTR, media)  # a ModelOutput: as_requested asks for return_dict=True
            setattr(output, VISION_ATTR, timing)  # for the forward that receives these encodings
            if call is not None and media:
                call.media.setdefault(media[0].modality, []).extend(media)
            return output

        return self.as_requested(feature_fn)

    def as_requested(self, feature_fn: Callable) -> Callable:
        """``feature_fn`` always run with ``return_dict=True`` (``describe`` reads the output's
        fields, and a plain tuple cannot carry the media), its output then given back in the
        form the unpatched function gives: a tuple for ``return_dict=False``, or for no
        ``return_dict`` with ``config.return_dict`` false, exactly as transformers'
        ``can_return_tuple`` resolves it on every wrapped feature function of every supported
        release; also a tuple where a nested feature function (Qwen3-VL's video features call
        its image features, without ``return_dict``) would have returned one."""
        def feature_fn_as_requested(*args, **kwargs):
            wanted = kwargs.pop("return_dict", None)
            if wanted is None:
                wanted = getattr(self.base.config, "return_dict", True)
            outer = _TUPLE_ASKED.get()
            if _FEATURES.get() is self.handle and outer is not None:
                # Called by another wrapped feature function, which describes this output: it
                # stays a dict, and the outer call turns it into a tuple where this one would have.
                outer.append(not wanted)
                return feature_fn(*args, return_dict=True, **kwargs)
            asked = [not wanted]
            output = with_context(_TUPLE_ASKED, asked, feature_fn, args, dict(kwargs, return_dict=True))
            return output.to_tuple() if any(asked) and not isinstance(output, tuple) else output

        return feature_fn_as_requested

    def wrap_model_forward(self, original: Callable) -> Callable:
        def forward(*args, **kwargs):
            named = compat.bound_arguments(original, args, kwargs, self.cache_arg)
            gen = current_generation(self.handle)
            if gen is not None and gen.first_forward:
                gen.first_forward = False
                named = drop_cached_overlap(self.handle, gen, named)
            if not any(named.get(k) is not None for k in self.media_inputs):
                return original(**named)  # decode steps: no synchronisation
            ids, embeds = named.get("input_ids"), named.get("inputs_embeds")
            masks = {m: placeholder_mask(self.base, self.family.placeholder_token_id(self.base.config, m), ids, embeds)
                     for m in self.family.modalities}
            # Whether any placeholder is there is read with the rest of the layout, in the prefill.
            call = Call(self.handle, modality_masks=masks)
            for modality, output in (named.get("mm_encoder_outputs") or {}).items():
                media = getattr(output, MEDIA_ATTR, None) if output is not None else None
                if media:
                    call.media.setdefault(modality, []).extend(media)
                    if getattr(output, VISION_ATTR, None) is not None:
                        call.vision.append(getattr(output, VISION_ATTR))
            return with_context(_CALL, call, original, (), named)

        return forward

    def wrap_language_model(self, original: Callable) -> Callable:
        def forward(*args, **kwargs):
            kwargs = compat.bound_arguments(original, args, kwargs, self.cache_arg)
            call = self._current_call()
            token = _CALL.set(None)  # consumed: a nested LLM call (relevance layers) sees none
            try:
                return self._language_model_call(original, call, kwargs)
            finally:
                _CALL.reset(token)

        return forward

    def _language_model_call(self, original, call: Optional[Call], kwargs):
        """One call into the language model: a prefill with media, or a call that continues a
        cache with a pruning state, or (neither) the model untouched."""
        cache = kwargs.get(self.cache_arg)
        state = cache_state(cache)
        if state is not None:
            held = cache.get_seq_length()
            gen = current_generation(self.handle)
            if isinstance(held, torch.Tensor) and gen is not None:
                # A cache that keeps its length on the device (static caches, Qwen3.5's hybrid
                # cache in 5.25): reading it would synchronise every decode step. Within
                # generate(), a state this call did not make and was not given is stale (the
                # cache was reused and reset), and one it made holds: no read needed.
                held = state.length if state.generation is gen or state is gen.continues else 0
            held = int(held)
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
            return self.calls.run_compacted(original, kwargs, state, None)
        return original(**kwargs)

    # -- prefill: place, plan, score, select, compact -------------------------------------
    def _read_layout(self, call: Call, chunk_mask: torch.Tensor):
        """The prefill's one read from the device: where each modality's placeholders are, the
        2-D mask of real tokens, the candidate masks families built on the device and the host
        values their deferred layouts need; returns (modality -> [B, L] bool, [B, L] bool,
        modality -> media with host candidates)."""
        names = list(call.modality_masks)
        device = chunk_mask.device
        parts = [call.modality_masks[m].to(device).reshape(-1) for m in names] + [(chunk_mask != 0).reshape(-1)]
        every = [m for ms in call.media.values() for m in ms]
        pending = [m for m in every if isinstance(m.candidates, torch.Tensor)]
        deferred = list({id(m.deferred): m.deferred for m in every if m.deferred is not None}.values())
        reads = [m.candidates for m in pending] + [d.values for d in deferred if d.values is not None]
        flat = engine.read_to_host(torch.cat(parts + [t.to(device).reshape(-1) for t in reads]))
        B, L = chunk_mask.shape
        planes = flat[: (len(names) + 1) * B * L].reshape(len(names) + 1, B, L).astype(bool)
        start = planes.size
        read = {}
        for m in pending:
            read[id(m)] = flat[start : start + m.candidates.numel()]
            start += m.candidates.numel()
        resolved = {}
        for d in deferred:
            host = None
            if d.values is not None:
                host = flat[start : start + d.values.numel()].reshape(tuple(d.values.shape))
                start += d.values.numel()
            resolved[id(d)] = d.resolve(host)
        media = {}
        for modality, ms in call.media.items():
            media[modality] = []
            for m in ms:
                if m.deferred is not None:
                    saliency, candidates = resolved[id(m.deferred)][m.deferred_item]
                    m = dataclasses.replace(m, saliency=saliency, candidates=candidates, deferred=None)
                media[modality].append(engine.with_host_candidates(m, read.get(id(m))))
        return dict(zip(names, planes[:-1])), planes[-1], media

    def _prefill(self, original, call: Call, kwargs, state: Optional[CacheState]):
        opts = self.handle.options
        embeds = kwargs["inputs_embeds"]
        B, L, _ = embeds.shape
        timing = engine.Timing(embeds.device)
        timing.mark("entry")
        chunk_mask = self.calls.chunk_mask(kwargs, state, L)
        masks, real, media = self._read_layout(call, chunk_mask)
        placed = engine.plan(engine.place_media(masks, media, self.family.merge_adjacent), opts, real)
        before = sum(p.media.num_tokens for p in placed)
        stats = {"visual_tokens_before": before, "visual_tokens_after": before,
                 "sequence_length_before": L, "sequence_length_after": L,
                 "importance_ms": 0.0, "select_ms": 0.0, "hooks_ms": 0.0, "vision_ms": 0.0,
                 "kept_indices": [], "zero_score_picks": []}
        to_prune = [p for p in placed if p.pruned]
        if to_prune and _LABELS.get() is self.handle:
            raise ValueError(
                "idselect: labels= (training or loss computation) is not supported on a patched "
                "model: the logits cover the pruned sequence, not input_ids; call handle.remove() first"
            )
        if state is not None and state.position_rows:
            raise NotImplementedError(
                f"idselect: new images or videos in a call that continues a pruned cache are not supported "
                f"for {self.family.model_type} (its M-RoPE positions of later media depend on the unpruned "
                "conversation); start a new cache for a turn that brings new media"
            )
        if to_prune and not real.any():
            raise ValueError("idselect: the attention mask masks every token of every row; nothing is left to run")
        if not to_prune:  # keep = everything: run the model untouched
            self.handle.record(stats, vision=call.vision)
            return self.calls.run_compacted(original, kwargs, state, None) if state is not None else original(**kwargs)
        gen = current_generation(self.handle)
        reuse = gen is not None and not gen.use_cache and gen.no_cache_keep is not None
        selection = None
        if reuse and gen.no_cache_keep[0].shape[0] == B and gen.no_cache_keep[0].shape[1] <= L:
            # use_cache=False: every step re-runs the whole sequence; the selection is the first
            # step's (as with a cache), not one made again with the latest token as the query.
            # generate() appends real tokens only, so each row keeps them all.
            first_keep, first_lengths, kept_media = gen.no_cache_keep
            keep_columns = torch.ones(B, L, dtype=torch.bool, device=embeds.device)
            keep_columns[:, : first_keep.shape[1]] = first_keep
            row_lengths = first_lengths + (L - first_keep.shape[1])
        else:
            timing.mark("scoring")
            if opts.importance in ("saliency", "unified") and not all(p.media.saliencies() is not None for p in to_prune):
                raise ValueError(
                    f"idselect: importance={opts.importance!r} needs visual saliency, which this model "
                    f"({self.family.model_type}) did not provide for this input; use importance='relevance'"
                )
            table = engine.candidate_table(placed, real, embeds.device, opts.importance in ("saliency", "unified"))
            features = table.gather(embeds)
            relevance = None
            if opts.importance in ("relevance", "unified"):
                relevance = self._relevance_inputs(original, embeds, chunk_mask, kwargs, state)
            scores = scoring.importance_scores(table, opts.importance, opts.alpha, relevance,
                                               features if relevance is not None and relevance.hidden is embeds else None)
            timing.mark("scored")
            selection = engine.select(table, scores, embeds, opts, features)
            timing.mark("selected")
            keep_columns, row_lengths = selection.keep_columns, table.row_lengths
            kept_media = kept_media_tokens(masks, media, real, table)
            if gen is not None and not gen.use_cache:
                gen.no_cache_keep = (keep_columns, row_lengths, kept_media)
        new_kwargs, compacted = self.calls.compacted(kwargs, state, keep_columns, chunk_mask, row_lengths, kept_media,
                                                     padded=not bool(real.all()))
        timing.mark("compacted")
        if selection is not None:  # a step that reuses a selection leaves its statistics alone
            # From shapes known on the host (no synchronisation): budgets may exceed candidates.
            removed = sum(p.media.num_tokens - int(k) for p, k in zip(selection.table.media, selection.table.budgets))
            removed += sum(placed[i].media.num_tokens for i in selection.table.empty)
            stats.update(visual_tokens_after=before - removed, sequence_length_after=compacted.width)
            self.handle.record(stats, timing, selection, call.vision)
        return self.calls.run(original, new_kwargs, compacted.state)

    def _relevance_inputs(self, llm_forward, embeds, chunk_mask, kwargs, state) -> scoring.RelevanceInputs:
        """Hidden states entering LLM layer ``relevance_layer`` (and rotary for relevance_rope)."""
        opts = self.handle.options
        llm = self.family.language_model(self.model)
        layers = self.family.decoder_layers(llm)
        past = self.calls.past_length(kwargs)
        if opts.relevance_layer > 0 and past > 0:
            raise NotImplementedError(
                f"idselect: relevance_layer={opts.relevance_layer} needs the LLM's layers on the whole "
                "conversation, but this call continues a cache; "
                + ("use relevance_layer=0 or start a new cache" if 0 in self.family.attention_layers(llm)
                   else "start a new cache")
            )
        hidden = embeds
        if opts.relevance_layer > 0:
            run = dict(kwargs, attention_mask=chunk_mask)
            if "cache_position" in run:
                run["cache_position"] = None
            hidden = run_until_layer(llm_forward, layers[opts.relevance_layer], run, self.cache_arg)
        rotary = None
        if opts.relevance_rope:
            positions = chunk_positions(kwargs.get("position_ids"), state, chunk_mask.bool(), past)
            if positions.dim() == 3 and positions.shape[0] == 4:  # text row + M-RoPE rows
                positions = positions[1:]
            rotary = tuple(llm.rotary_emb(hidden, positions))
        cfg = self.family.text_config(self.model)
        heads = cfg.num_attention_heads
        return scoring.RelevanceInputs(hidden, layers[opts.relevance_layer], heads,
                                       getattr(cfg, "num_key_value_heads", None) or heads, rotary)
