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
    "MEDIA_ATTR": "integration", "FamilyAdapter": "family",
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = f"idselect.hooks.{_MOVED[name]}"
    new_name = "Family" if name == "FamilyAdapter" else name
    warnings.warn(f"idselect.hooks.core.{name} is deprecated; use {where}.{new_name}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(where), new_name)
