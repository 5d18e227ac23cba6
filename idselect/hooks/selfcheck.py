"""``idselect.patch`` on a transformers release outside the verified range: prove, or refuse.

Inside ``compat.SUPPORTED_TRANSFORMERS`` nothing runs. Outside it (an older release, or a newer
one that did not exist when idselect was tested), the first ``patch()`` of each family in a
process builds a tiny random-weight model of that family from configs and runs
``idselect.testing.battery`` (a left-padded batch decoded greedily with a dynamic cache, a static
cache and ``use_cache=False``, sampling with a seed, beam search, a continued cache, a second turn
with a new image, two threads), each against the unpatched model on the hand-pruned sequence.
Any difference raises ``UnverifiedTransformersError``; if all are equal, one warning says so and
patching goes on. ``IDSELECT_SKIP_SELF_CHECK=1`` skips the check (with a warning): the hooks then
run unverified.

The battery runs on the CPU in float32 whatever the caller's device / dtype context (``with
torch.device("meta")``, ``torch.set_default_device``, ``torch.set_default_dtype``, autocast), and
only a verdict the release is responsible for is kept for the process: a pass, or a pattern that
gave a wrong result. A check whose patterns only raised is refused but not kept (an exception may
come from the process rather than the release), so the next ``patch()`` checks again.
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
        failures = _results.get(key)
        if failures is None:
            token = _checking.set(True)
            started = time.perf_counter()
            try:
                failures = _run_battery(model_type)
            finally:
                _checking.reset(token)
            if not failures or any(getattr(f, "mismatch", True) for f in failures):
                _results[key] = failures  # the release's verdict; exceptions alone are not kept
            passed_now = time.perf_counter() - started if not failures else None
    if passed_now is not None:  # warned outside the lock: a warnings filter set to "error" raises here
        warnings.warn(
            f"idselect: transformers {version} is outside the verified range ({_range_text()}); the self-check "
            f"for {model_type} passed ({', '.join(_patterns())}; {passed_now:.1f} s), so the hooks go on",
            stacklevel=3)
    if failures:
        wrong = [f for f in failures if getattr(f, "mismatch", True)]
        raised = [f for f in failures if not getattr(f, "mismatch", True)]
        found = []
        if wrong:
            found.append("generation patterns the hooks do not reproduce exactly:\n  " + "\n  ".join(wrong))
        if raised:
            note = "an error may come from this process rather than from the release"
            if not wrong:
                note += "; this result is not kept: the next patch() checks again"
            found.append(f"patterns that raised ({note}):\n  " + "\n  ".join(raised))
        raise UnverifiedTransformersError(
            f"idselect.patch: transformers {version} is outside the range idselect is verified on ({_range_text()}), "
            f"and the self-check for {model_type} found " + "\nand ".join(found)
            + f"\nInstall a verified release (pip install 'transformers>={low},<={high}'), or an idselect verified on "
            f"{version}. {SKIP_ENV}=1 skips this check at your own risk: results may be silently wrong."
        )


def _run_battery(model_type: str) -> List[str]:
    """The battery, leaving the caller's random-number state as it was (the tiny model's weights
    are drawn from a fixed seed). ``battery.run`` pins the device (CPU), the default dtype
    (float32) and autocast (off) for its models, and restores the caller's."""
    import torch

    from ..testing import battery

    with torch.random.fork_rng(devices=[]):
        return battery.run(model_type)


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
