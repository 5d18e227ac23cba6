"""Deprecation paths (issue 18): a module that moved out of the package root stays importable
under its old name, warns, and is the new module itself (``alias``); names that moved out of a
module still resolve there, with a warning (``moved_names``)."""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Callable, Dict, Optional


def alias(old: str, new: str) -> None:
    """Make module ``old`` (being imported now) the module ``new``, with a DeprecationWarning.

    Parameters
    ----------
    old : str
        The module being imported, e.g. ``"idselect.flops"``; called from its body.
    new : str
        Where it lives now, e.g. ``"idselect.tools.flops"``.

    Notes
    -----
    ``sys.modules[old]`` becomes the new module, so ``from idselect.flops import X`` and
    ``idselect.flops.X`` give the very objects of ``idselect.tools.flops`` (private names
    included; monkeypatching either name patches both). The import system hands the importer
    whatever ``sys.modules[old]`` holds once the old module's body has run.
    """
    # stacklevel 3: alias -> the old module's body -> the importer (the warnings module skips
    # importlib's frames in between), so the warning names the line that imported the old name.
    warnings.warn(f"{old} moved to {new}; import {new} instead ({old} will be removed)",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)


def moved_names(module: str, moved: Dict[str, str], gone: Optional[Dict[str, str]] = None) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for names that moved out of ``module``.

    Parameters
    ----------
    module : str
        The old module, e.g. ``"idselect.hooks.core"``.
    moved : dict of str to str
        name -> the module it lives in now; reading it warns (DeprecationWarning, pointing at
        the reader) and gives that module's object.
    gone : dict of str to str, optional
        name -> why it has no replacement to alias; reading it raises AttributeError with that.
    """
    gone = gone or {}

    def __getattr__(name: str) -> Any:
        if name in gone:
            raise AttributeError(gone[name])
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where = moved[name]
        warnings.warn(f"{module}.{name} is deprecated; use {where}.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(where), name)

    return __getattr__
