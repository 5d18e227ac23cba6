"""Deprecated: the hooks' old single module, split into ``engine``, ``compaction``,
``scoring``, ``family``, ``handle``, ``generation`` and ``integration`` (docs/hooks.md,
"How the hooks are built"). Its names still resolve here, with a DeprecationWarning."""
from __future__ import annotations

from .._moved import moved_names

_MOVED = {
    "PatchHandle": "handle", "HANDLE_ATTR": "handle", "COMPILE_REASON": "handle",
    "Media": "engine", "Options": "engine", "IMPORTANCE_CHOICES": "engine", "SELECTION_CHOICES": "engine",
    "CacheState": "compaction", "STATE_ATTR": "generation", "cache_state": "generation",
    "MEDIA_ATTR": "integration", "SALIENCY_REASON": "integration",
}
_GONE = {
    # Not an alias: a family is now declared (idselect.hooks.family.Family), with no
    # install() / token_masks() / after_prefill() for an old subclass to override.
    "FamilyAdapter": "idselect.hooks.core.FamilyAdapter was replaced by the declarative idselect.hooks.family.Family; "
                     "see docs/hooks.md, \"Adding a family\"",
    "MEDIA_INPUTS": "idselect.hooks.core.MEDIA_INPUTS was replaced by each family's Family.media_inputs "
                    "(idselect.hooks.registry.REGISTRY[model_type].media_inputs)",
}

__getattr__ = moved_names(__name__, {name: f"idselect.hooks.{where}" for name, where in _MOVED.items()}, _GONE)
