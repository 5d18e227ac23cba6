"""``idselect.patch`` on a transformers release outside the verified range: prove, or refuse.

Inside ``compat.SUPPORTED_TRANSFORMERS`` nothing runs. Outside it (an older release, or a newer
one that did not exist when idselect was tested), the first ``patch()`` of each family in a
process builds a tiny random-weight model of that family from configs and runs
``idselect.testing.battery`` (a left-padded batch decoded greedily, beam search, a continued
cache), each against the unpatched model on the hand-pruned sequence. Any difference raises
``UnverifiedTransformersError``; if all are equal, one warning says so and patching goes on.
``IDSELECT_SKIP_SELF_CHECK=1`` skips the check (with a warning): the hooks then run unverified.
"""
from __future__ import annotations

import contextvars
import os
import threading
import time
import warnings
from typing import Dict, List

from . import compat

SKIP_ENV = "IDSELECT_SKIP_SELF_CHECK"


class UnverifiedTransformersError(RuntimeError):
    """The installed transformers is outside the verified range and the hooks' self-check
    found a generation pattern they do not reproduce exactly."""


_lock = threading.Lock()
_results: Dict[tuple, List[str]] = {}  # (transformers version, model_type) -> failures
_checking: contextvars.ContextVar = contextvars.ContextVar("idselect_self_check", default=False)


def _range_text() -> str:
    low, high = compat.SUPPORTED_TRANSFORMERS
    return f"{low} to {high}"


def ensure_verified(model_type: str) -> None:
    """Return if the installed transformers is verified for the hooks, or if the self-check
    passes for ``model_type`` (run once per process and family); raise otherwise."""
    version = compat.transformers_version()
    if compat.in_supported_range(version) or _checking.get():
        return
    low, high = compat.SUPPORTED_TRANSFORMERS
    if os.environ.get(SKIP_ENV, "") == "1":
        _warn_once(("skip", version), f"idselect: transformers {version} is outside the verified range ({_range_text()}) "
                                      f"and {SKIP_ENV}=1 skips the self-check: the hooks run unverified")
        return
    key = (version, model_type)
    passed_now = None
    with _lock:  # one check per family, even when threads patch at once
        if key not in _results:
            token = _checking.set(True)
            started = time.perf_counter()
            try:
                _results[key] = _run_battery(model_type)
            finally:
                _checking.reset(token)
            passed_now = time.perf_counter() - started if not _results[key] else None
        failures = _results[key]
    if passed_now is not None:  # warned outside the lock: a warnings filter set to "error" raises here
        warnings.warn(
            f"idselect: transformers {version} is outside the verified range ({_range_text()}); the self-check "
            f"for {model_type} passed ({', '.join(_patterns())}; {passed_now:.1f} s), so the hooks go on",
            stacklevel=3)
    if failures:
        raise UnverifiedTransformersError(
            f"idselect.patch: transformers {version} is outside the range idselect is verified on ({_range_text()}), "
            f"and the self-check for {model_type} found generation patterns the hooks do not reproduce exactly:\n  "
            + "\n  ".join(failures)
            + f"\nInstall a verified release (pip install 'transformers>={low},<={high}'), or an idselect verified on "
            f"{version}. {SKIP_ENV}=1 skips this check at your own risk: results may be silently wrong."
        )


def _run_battery(model_type: str) -> List[str]:
    """The battery, leaving the caller's random-number state and default dtype as they were
    (the tiny model's weights are drawn from a fixed seed)."""
    import torch

    from ..testing import battery

    dtype = torch.get_default_dtype()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.set_default_dtype(torch.float32)
            return battery.run(model_type)
    finally:
        torch.set_default_dtype(dtype)


_warned: set = set()


def _warn_once(key, message: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, stacklevel=4)


def _patterns() -> List[str]:
    from ..testing import battery

    return list(battery.PATTERNS)
