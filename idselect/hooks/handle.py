"""``PatchHandle``: what ``idselect.patch`` returns. It owns the options, the attributes it
replaced (to restore them) and the statistics of the last pruning; the hooks that run inside
the model are ``idselect.hooks.integration``."""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from .engine import Options, Timing, zero_score_picks

HANDLE_ATTR = "_idselect_handle"  # attribute of a patched base model: its PatchHandle
COMPILE_REASON = (
    "idselect: pruning gives the LLM a sequence whose length depends on the data, which one graph "
    "cannot hold; use torch.compile(model) without fullgraph=True (the model's parts still compile), "
    "or compile the language model alone"
)


class PatchHandle:
    """Returned by ``idselect.patch``; ``remove()`` restores the model exactly.

    Thread-safe in use: one patched model can serve forward() and generate() calls from
    several threads at once (docs/hooks.md says what is shared).

    Attributes
    ----------
    model : nn.Module
        The patched ``...ForConditionalGeneration`` model.
    family : idselect.hooks.family.Family
        What the hooks know of the model's family.
    options : idselect.hooks.engine.Options
        The checked options of this handle.
    cache_arg : str
        The installed transformers' name of the cache argument (``compat.cache_argument``).
    """

    def __init__(self, model: nn.Module, family, options: Options, cache_arg: str):
        self.model = model
        self.family = family
        self.options = options
        self.cache_arg = cache_arg
        self._saved: List[tuple] = []
        self._stats_lock = threading.Lock()
        self._last: Optional[Dict[str, Any]] = None  # raw statistics of the last pruning
        self._media_prefills = 0

    # -- statistics ---------------------------------------------------------------------
    @property
    def last_stats(self) -> Dict[str, Any]:
        """Statistics of the last prefill that carried images or videos (any thread):
        ``visual_tokens_before`` / ``_after`` (summed over the batch), ``sequence_length_before``
        / ``_after``, ``importance_ms`` and ``select_ms`` (importance + selection), ``hooks_ms``
        (everything the hooks do in the language model's prefill call: layout read, importance,
        selection, compaction) and ``vision_ms`` (the feature functions: vision tower and
        projector) - on CUDA read from events, so reading them waits for that work, and nothing
        else does -,
        ``kept_indices`` (per pruned medium, its kept tokens' indices within it) and
        ``zero_score_picks`` (per pruned medium, picks made after every remaining score had
        been suppressed to 0, i.e. by index; computed when first read, in one batch with one
        synchronisation)."""
        with self._stats_lock:
            last = self._last
            if last is None:
                return {}
            # Resolved once, on the first read: the timing events, the kept indices (per medium
            # views of the selection's batched result) and the zero-score replay.
            if last.get("timing") is not None:
                timing = last.pop("timing")
                last["stats"].update(importance_ms=timing.elapsed_ms("scoring", "scored"),
                                     select_ms=timing.elapsed_ms("scoring", "selected"),
                                     hooks_ms=timing.elapsed_ms("entry", "compacted"))
            if last.get("vision") is not None:
                last["stats"]["vision_ms"] = sum(t.elapsed_ms("start", "end") for t in last.pop("vision"))
            selection = last.pop("selection", None)
            if selection is not None:
                last["stats"]["kept_indices"] = selection.kept_indices()
                last["stats"]["zero_score_picks"] = selection.in_planned_order(
                    zero_score_picks(selection.replay, self.options.gamma), [0] * len(selection.table.empty))
            return dict(last["stats"])

    @property
    def media_prefills(self) -> int:
        """How many prefills with images or videos (each one sets ``last_stats``) this handle
        has seen: compare before and after a call to know whether it made one."""
        return self._media_prefills

    def record(self, stats: Dict[str, Any], timing: Optional[Timing] = None, selection=None,
               vision: Optional[List[Timing]] = None) -> None:
        """Store the statistics of a prefill with media (called by the hooks); what needs the
        device (timing events, the selection's results) is resolved when they are read."""
        with self._stats_lock:
            self._last = {"stats": stats, "timing": timing, "selection": selection, "vision": vision}
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
        base = self.family.base(self.model)
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
