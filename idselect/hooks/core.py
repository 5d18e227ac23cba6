"""Model-independent part of the hooks: attribute patching, per-image selection, pruning of
the LLM input, and the position / mask bookkeeping that keeps generate() right afterwards.

How a patched model runs (LLaVA family; other families plug in the same way):

1. The model's feature functions (``get_image_features`` ...) are wrapped: after the original
   runs, the family adapter attaches a list of ``Media`` (tokens per image or video, saliency,
   which tokens are candidates) to the returned output.
2. The model's own forward is wrapped only to note which input positions hold which modality.
3. The language model's forward is wrapped: on a prefill that carries media it scores the media
   tokens, selects per medium with ``idselect.select`` (one op call per distinct budget), drops
   the rest from ``inputs_embeds``, attention mask and positions, and runs the original LLM on
   the shorter sequence. Decode steps that continue that cache get their mask and positions
   translated to the pruned numbering.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from .. import importance as imp
from ..api import select as id_select

IMPORTANCE_CHOICES = ("auto", "unified", "saliency", "relevance")


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


@dataclass
class Options:
    keep: float
    gamma: float
    importance: str
    alpha: float
    relevance_layer: int
    relevance_rope: bool

    def budget(self, num_tokens: int) -> int:
        """Tokens the LLM receives for a medium of num_tokens tokens."""
        if isinstance(self.keep, int):
            return min(self.keep, num_tokens)
        return min(num_tokens, max(1, round(self.keep * num_tokens)))


@dataclass
class DecodeState:
    """What decode steps of a pruned prefill need: bound to that prefill's cache object."""

    cache_id: int
    original_length: int  # prefill length before pruning (columns)
    pruned_length: int  # after pruning (columns, padding included)
    pruned_mask: Optional[torch.Tensor]  # [B, pruned_length], None = all ones
    next_positions: torch.Tensor  # [R, B]: position of the first token after the prefill
    position_rows: int  # 0: positions were [B, L]; R: they were [R, B, L] (M-RoPE)


@dataclass
class _Pending:
    """Set by the model-forward wrapper, consumed by the LLM wrapper in the same call."""

    modality_masks: Dict[str, torch.Tensor]  # modality -> [B, L] bool
    media: Dict[str, List[Media]] = field(default_factory=dict)


MEDIA_ATTR = "idselect_media"  # attribute of a feature function's output: its List[Media]


class PatchHandle:
    """Returned by ``idselect.patch``; ``remove()`` restores the model exactly.

    Attributes
    ----------
    last_stats : dict
        For the last prefill that carried images or videos: ``visual_tokens_before``,
        ``visual_tokens_after`` (summed over the batch), ``sequence_length_before`` /
        ``_after``, ``importance_ms`` and ``select_ms`` (importance + selection).
    """

    def __init__(self, model: nn.Module, adapter: "FamilyAdapter", options: Options):
        self.model = model
        self.adapter = adapter
        self.options = options
        self.last_stats: Dict[str, Any] = {}
        self._saved: List[tuple] = []
        self._pending: Optional[_Pending] = None
        self._decode: Optional[DecodeState] = None

    # -- patching -----------------------------------------------------------------------
    def replace(self, obj: Any, name: str, make: Callable[[Callable], Callable]) -> None:
        """Shadow ``obj.name`` with ``make(original)`` as an instance attribute."""
        had_own = name in obj.__dict__  # e.g. an accelerate hook's forward: restored as is
        previous = obj.__dict__.get(name)
        original = getattr(obj, name)
        # functools.wraps keeps the signature visible: generate() inspects these functions.
        object.__setattr__(obj, name, functools.wraps(original)(make(original)))
        self._saved.append((obj, name, had_own, previous))

    def remove(self) -> None:
        """Undo every replacement, in reverse order; the model is as before ``patch``."""
        for obj, name, had_own, previous in reversed(self._saved):
            if had_own:
                object.__setattr__(obj, name, previous)
            else:
                obj.__dict__.pop(name, None)
        self._saved.clear()
        self._pending = self._decode = None
        if getattr(self.model, "_idselect_handle", None) is self:
            del self.model._idselect_handle

    def __enter__(self) -> "PatchHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- wrappers -----------------------------------------------------------------------
    def wrap_feature_fn(self, original: Callable, saliency_layer: Callable[..., Optional[nn.Module]],
                        describe: Callable[..., List[Media]]) -> Callable:
        """Run the feature function, capturing the input of the vision layer whose [CLS]
        attention gives saliency (a forward pre-hook: nothing the model computes changes),
        and attach the List[Media] the adapter derives from both to the output."""
        def feature_fn(*args, **kwargs):
            layer = saliency_layer(*args, **kwargs)
            captured: List[torch.Tensor] = []
            hook = None
            if layer is not None:
                hook = layer.register_forward_pre_hook(
                    lambda mod, a, kw: captured.append(a[0] if a else kw["hidden_states"]), with_kwargs=True)
            try:
                output = original(*args, **kwargs)
            finally:
                if hook is not None:
                    hook.remove()
            media = describe(output, captured[0] if captured else None, *args, **kwargs)
            try:
                setattr(output, MEDIA_ATTR, media)
            except AttributeError:  # a plain tuple (return_dict=False): the call below still sees it
                pass
            if self._pending is not None and media:
                self._pending.media.setdefault(media[0].modality, []).extend(media)
            return output

        return feature_fn

    def wrap_model_forward(self, original: Callable, token_masks: Callable[..., Dict[str, torch.Tensor]]) -> Callable:
        def forward(*args, **kwargs):
            masks = token_masks(*args, **kwargs)
            if not masks or not any(bool(m.any()) for m in masks.values()):
                return original(*args, **kwargs)
            pending = _Pending(modality_masks=masks)
            for modality, output in (kwargs.get("mm_encoder_outputs") or {}).items():
                media = getattr(output, MEDIA_ATTR, None) if output is not None else None
                if media:
                    pending.media.setdefault(modality, []).extend(media)
            self._pending = pending
            try:
                return original(*args, **kwargs)
            finally:
                self._pending = None

        return forward

    def wrap_language_model(self, original: Callable) -> Callable:
        def forward(*args, **kwargs):
            pending, self._pending = self._pending, None
            if pending is not None and kwargs.get("inputs_embeds") is not None and pending.media:
                return self._prefill(original, pending, args, kwargs)
            cache = kwargs.get("past_key_values")
            state = self._decode
            if state is not None and cache is not None and id(cache) == state.cache_id and cache.get_seq_length() > 0:
                return original(*args, **self._translate_decode(state, cache, kwargs))
            if cache is None or cache.get_seq_length() == 0:
                self._decode = None  # a new sequence: forget the old prefill
            return original(*args, **kwargs)

        return forward

    # -- prefill: score, select, prune ----------------------------------------------------
    def _media_positions(self, pending: _Pending) -> List[tuple]:
        """(Media, row, positions[num_tokens]) for every medium, in placeholder order."""
        found = []
        for modality, mask in pending.modality_masks.items():
            media = pending.media.get(modality, [])
            rows, cols = mask.nonzero(as_tuple=True)  # row-major: the order features fill in
            if sum(m.num_tokens for m in media) != rows.numel():
                raise RuntimeError(
                    f"idselect: {rows.numel()} {modality} placeholder tokens but the "
                    f"{modality} features describe {sum(m.num_tokens for m in media)}"
                )
            start, placed = 0, []
            for m in media:
                r, c = rows[start : start + m.num_tokens], cols[start : start + m.num_tokens]
                if m.num_tokens and not bool((r == r[0]).all()):
                    raise RuntimeError(f"idselect: a {modality}'s tokens span two batch rows")
                placed.append((m, int(r[0]) if m.num_tokens else 0, c))
                start += m.num_tokens
            if modality in self.adapter.merge_adjacent:
                placed = _merge_adjacent(placed)
            found += placed
        return found

    def _prefill(self, original, pending, args, kwargs):
        opts = self.options
        embeds = kwargs["inputs_embeds"]
        B, L, _ = embeds.shape
        attention_mask = kwargs.get("attention_mask")
        media = self._media_positions(pending)
        plan = [(m, row, cols, opts.budget(m.num_tokens)) for m, row, cols in media]
        before = sum(m.num_tokens for m, _, _ in media)
        self.last_stats = {"visual_tokens_before": before, "visual_tokens_after": before,
                           "sequence_length_before": L, "sequence_length_after": L,
                           "importance_ms": 0.0, "select_ms": 0.0}
        to_prune = [p for p in plan if p[3] < p[0].num_tokens]
        if not to_prune:  # keep = everything: run the model untouched
            self._decode = None
            return original(*args, **kwargs)

        sync = embeds.device.type == "cuda"
        if sync:
            torch.cuda.synchronize(embeds.device)
        t0 = time.perf_counter()
        scores = self._importance(original, to_prune, embeds, attention_mask, kwargs)
        if sync:
            torch.cuda.synchronize(embeds.device)
        t1 = time.perf_counter()
        keep_cols = torch.ones(B, L, dtype=torch.bool, device=embeds.device)
        self._select(to_prune, scores, embeds, keep_cols)
        if sync:
            torch.cuda.synchronize(embeds.device)
        t2 = time.perf_counter()

        new_kwargs, state = self._prune(kwargs, keep_cols)
        after = before - int((~keep_cols).sum())  # what was really kept (budgets may exceed candidates)
        self.last_stats.update(visual_tokens_after=after, sequence_length_after=state.pruned_length,
                               importance_ms=(t1 - t0) * 1e3, select_ms=(t2 - t0) * 1e3)
        output = original(*args, **new_kwargs)
        cache = getattr(output, "past_key_values", None)
        if cache is not None:
            state.cache_id = id(cache)
            self._decode = state
            self.adapter.after_prefill(self.model, state)
        else:
            self._decode = None
        return output

    def _importance(self, llm_forward, plan, embeds, attention_mask, kwargs) -> List[torch.Tensor]:
        """Importance in [0, 1] over each planned medium's candidate tokens."""
        opts = self.options
        want = opts.importance
        saliency_ok = all(m.saliency is not None for m, *_ in plan)
        if want == "auto":
            want = "unified" if saliency_ok else "relevance"
        if want in ("saliency", "unified") and not saliency_ok:
            raise ValueError(
                f"idselect: importance={opts.importance!r} needs visual saliency, which this "
                f"model ({self.adapter.model_type}) does not provide; use 'relevance'"
            )
        relevance_hidden = None
        if want in ("relevance", "unified"):
            relevance_hidden = self._relevance_inputs(llm_forward, embeds, attention_mask, kwargs)
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

    def _relevance_inputs(self, llm_forward, embeds, attention_mask, kwargs):
        """Hidden states entering LLM layer ``relevance_layer`` (and positions for rotary)."""
        opts = self.options
        llm = self.adapter.language_model(self.model)
        layers = self.adapter.decoder_layers(llm)
        if not 0 <= opts.relevance_layer < len(layers):
            raise ValueError(f"idselect: relevance_layer must be in [0, {len(layers) - 1}], got {opts.relevance_layer}")
        B, L, _ = embeds.shape
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = torch.arange(L, device=embeds.device)[None].expand(B, L)
        hidden = embeds
        if opts.relevance_layer > 0:
            hidden = _run_until_layer(llm_forward, layers[opts.relevance_layer], kwargs)
        last = _last_token_index(attention_mask, B, L, embeds.device)
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

    def _select(self, plan, scores, embeds, keep_cols) -> None:
        """One idselect.select call per distinct budget (ragged media padded, with lengths).
        Records, per pruned medium, the kept token indices within it (for visualisation)."""
        opts = self.options
        kept: List[Optional[torch.Tensor]] = [None] * len(plan)
        for m, row, cols, _ in plan:
            keep_cols[row, cols] = False
        groups: Dict[int, List[int]] = {}
        for i, (_, _, _, k) in enumerate(plan):
            groups.setdefault(k, []).append(i)
        for k, members in groups.items():
            cand_cols = [plan[i][0].candidate_part(plan[i][2]) for i in members]
            sizes = [c.numel() for c in cand_cols]
            k_eff = min([k] + sizes)
            width = max(sizes)
            feats = embeds.new_zeros(len(members), width, embeds.shape[-1])
            s = torch.zeros(len(members), width, device=embeds.device)
            for j, i in enumerate(members):
                feats[j, : sizes[j]] = embeds[plan[i][1], cand_cols[j]]
                s[j, : sizes[j]] = scores[i]
            lengths = torch.tensor(sizes, device=embeds.device)
            picked = id_select(feats.detach(), s, k_eff, opts.gamma, lengths, validate=False)
            for j, i in enumerate(members):
                chosen = cand_cols[j][picked[j]]
                keep_cols[plan[i][1], chosen] = True
                # Index within the medium: its tokens are plan[i][2] in order.
                kept[i] = torch.searchsorted(plan[i][2], chosen.sort().values).cpu()
        self.last_stats["kept_indices"] = kept

    def _prune(self, kwargs, keep_cols):
        """Drop the unselected columns; re-left-pad rows that lost different numbers.

        Positions: 1-D positions (and the text row of 4-row M-RoPE positions, which only
        shapes the mask) are renumbered contiguously: a kept token's position minus the tokens
        removed before it. M-RoPE (t, h, w) rows keep every kept token's original position."""
        embeds = kwargs["inputs_embeds"]
        B, L, H = embeds.shape
        device = embeds.device
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise ValueError(f"idselect: needs a 2-D attention_mask, got shape {list(mask.shape)}")
        positions = kwargs.get("position_ids")
        cache = kwargs.get("past_key_values")
        past = cache.get_seq_length() if cache is not None else 0
        if positions is None:
            positions = (torch.arange(L, device=device) + past)[None].expand(B, L)
        rows_of = positions[None] if positions.dim() == 2 else positions  # [R, B, L]
        renumber = [0] if positions.dim() == 2 or rows_of.shape[0] == 4 else []
        removed_before = torch.cumsum((~keep_cols).long(), dim=1)

        lengths = keep_cols.sum(dim=1)
        Lp = int(lengths.max())
        pad = Lp - lengths  # left padding added per row
        dest = pad[:, None] + torch.cumsum(keep_cols.long(), dim=1) - 1  # column of each kept token
        rows = torch.arange(B, device=device)[:, None].expand(B, L)
        src_r, dst_c = rows[keep_cols], dest[keep_cols]

        new_embeds = embeds.new_zeros(B, Lp, H)
        new_embeds[src_r, dst_c] = embeds[keep_cols]
        new_rows = rows_of.new_zeros(rows_of.shape[0], B, Lp)
        for r in range(rows_of.shape[0]):
            values = rows_of[r] - removed_before if r in renumber else rows_of[r]
            new_rows[r, src_r, dst_c] = values[keep_cols]
        new_mask = None
        if mask is not None or bool((pad > 0).any()):
            source = mask if mask is not None else torch.ones(B, L, dtype=torch.long, device=device)
            new_mask = source.new_zeros(B, Lp)
            new_mask[src_r, dst_c] = source[keep_cols]
        real = new_mask.bool() if new_mask is not None else torch.ones(B, Lp, dtype=torch.bool, device=device)
        next_positions = torch.where(real[None], new_rows, new_rows.new_full((), -1)).amax(dim=2) + 1  # [R, B]

        new_kwargs = dict(kwargs)
        new_kwargs.update(inputs_embeds=new_embeds, attention_mask=new_mask,
                          position_ids=new_rows[0] if positions.dim() == 2 else new_rows)
        state = DecodeState(0, L, Lp, new_mask, next_positions, 0 if positions.dim() == 2 else rows_of.shape[0])
        return new_kwargs, state

    # -- decode ----------------------------------------------------------------------------
    def _translate_decode(self, state: DecodeState, cache, kwargs):
        """Mask and positions of tokens that follow a pruned prefill in the same cache. The
        positions continue from the prefill's last ones, whatever the caller computed for the
        unpruned sequence (which may rest on the pruned cache length)."""
        new_kwargs = dict(kwargs)
        q = kwargs["inputs_embeds"].shape[1] if kwargs.get("inputs_embeds") is not None else kwargs["input_ids"].shape[1]
        cached = cache.get_seq_length()
        B = state.next_positions.shape[1]
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            head = state.pruned_mask if state.pruned_mask is not None else mask.new_ones(B, state.pruned_length)
            new_kwargs["attention_mask"] = torch.cat([head, mask[:, state.original_length:]], dim=1)
        elif mask is None and state.pruned_mask is not None:
            extra = cached + q - state.pruned_length
            new_kwargs["attention_mask"] = torch.cat([state.pruned_mask, state.pruned_mask.new_ones(B, extra)], dim=1)
        after = cached - state.pruned_length  # tokens already decoded after the prefill
        steps = torch.arange(q, device=state.next_positions.device) + after
        positions = state.next_positions[..., None] + steps  # [R, B, q]
        new_kwargs["position_ids"] = positions[0] if state.position_rows == 0 else positions
        return new_kwargs


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


def _run_until_layer(llm_forward, layer: nn.Module, kwargs) -> torch.Tensor:
    """Run the LLM on the full sequence until ``layer``; return that layer's input."""
    captured = {}

    def grab(module, args, kw):
        captured["hidden"] = args[0] if args else kw["hidden_states"]
        raise _StopForward

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        run_kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "use_cache")}
        with torch.no_grad():
            llm_forward(**run_kwargs, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["hidden"]


def _last_token_index(attention_mask, B, L, device) -> torch.Tensor:
    """Column of the last real token per row (the end of the instruction)."""
    if attention_mask is None:
        return torch.full((B,), L - 1, device=device, dtype=torch.long)
    cols = torch.arange(L, device=device)[None].expand(B, L)
    return torch.where(attention_mask.bool(), cols, -1).amax(dim=1)


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

    def install(self, handle: PatchHandle) -> None:
        raise NotImplementedError

    def after_prefill(self, model: nn.Module, state: DecodeState) -> None:
        """Hook for model state that depends on the pruned length (Qwen2.5-VL's rope_deltas)."""
