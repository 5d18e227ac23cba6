"""The deprecation path of modules that moved out of the package root (issue 18): the old
module name stays importable, warns, and is the new module itself."""
from __future__ import annotations

import importlib
import sys
import warnings


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
