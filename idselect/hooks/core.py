"""Deprecated: the hooks' old single module, split into ``engine``, ``compaction``,
``scoring``, ``family``, ``handle``, ``generation`` and ``integration`` (docs/hooks.md,
"How the hooks are built"). Its names still resolve here, with a DeprecationWarning."""
from __future__ import annotations

import importlib
import warnings

_MOVED = {
    "PatchHandle": "handle", "HANDLE_ATTR": "handle", "COMPILE_REASON": "handle",
    "Media": "engine", "Options": "engine", "IMPORTANCE_CHOICES": "engine", "SELECTION_CHOICES": "engine",
    "CacheState": "compaction", "STATE_ATTR": "generation", "cache_state": "generation",
    "MEDIA_ATTR": "integration", "SALIENCY_REASON": "integration",
}


def __getattr__(name: str):
    if name == "FamilyAdapter":
        # Not an alias: a family is now declared (idselect.hooks.family.Family), with no
        # install() / token_masks() / after_prefill() for an old subclass to override.
        raise AttributeError(
            "idselect.hooks.core.FamilyAdapter was replaced by the declarative idselect.hooks.family.Family; "
            "see docs/hooks.md, \"Adding a family\""
        )
    if name == "MEDIA_INPUTS":
        raise AttributeError("idselect.hooks.core.MEDIA_INPUTS was replaced by each family's Family.media_inputs "
                             "(idselect.hooks.registry.REGISTRY[model_type].media_inputs)")
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = f"idselect.hooks.{_MOVED[name]}"
    warnings.warn(f"idselect.hooks.core.{name} is deprecated; use {where}.{name}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(where), name)
