"""The transformers releases the hooks are verified on, and what differs between them.

This module is the one place that declares the supported range and the one place that knows
how those releases differ for the hooks (read in each release's code; the table with every
difference is in docs/hooks.md, "Supported transformers versions"):

- 5.25.0: nothing the hooks read changed (Qwen3.5's cache answers ``get_seq_length()`` from its
  first layer, a linear-attention one, with a token count kept as a 0-d tensor; the hooks read
  ``int(cache.get_seq_length())``, the same count as before).
- 5.24.0 renamed the cache argument: forwards take ``cache`` and outputs carry ``cache``;
  ``past_key_values`` (and Qwen3.5's ``cache_params``) survive as deprecated aliases that
  transformers renames with a warning, and generate() passes ``cache=``. The name is read from
  the language model's forward signature and checked at ``patch()`` against the model's other
  wrapped forwards, so a release that renames it again is refused there, not misread later.
- Before 5.19.0 (and for some families until 5.20.1) generate() gives the copies of a prompt
  that beams or several returned sequences make the wrong images or videos, in the unpatched
  model too: ``BROKEN_EXPANSION`` and ``ITEMWISE_EXPANSION`` say where, and the hooks refuse
  those calls.
"""
from __future__ import annotations

import inspect
import re
import weakref
from typing import Any, Callable, Dict, Optional, Tuple

#: Lowest and highest transformers releases the hooks are verified on (every generation
#: pattern of every family, against oracles that do not use the hooks). Outside this range
#: ``idselect.patch`` runs its self-check first (idselect.hooks.selfcheck).
SUPPORTED_TRANSFORMERS: Tuple[str, str] = ("5.17.0", "5.25.0")

#: Names a forward may take its cache under, newest first. 5.24 renamed past_key_values to
#: cache (and Qwen3.5's linear-attention layers' cache_params to cache).
CACHE_ARGUMENTS = ("cache", "past_key_values")
GENERATE_CACHE_ALIASES = ("past_key_values", "cache_params")  # generate()'s deprecated names of "cache" (>= 5.24)


#: Releases whose generate() gives the copies of a prompt that beam search or several returned
#: sequences make the wrong images or videos - the unpatched model included, so no oracle can be
#: met: the hooks refuse those calls (read in each release's generate() and model code, pinned
#: by tests/test_transformers_versions.py against what the unpatched model does).
#:
#: Any prompt with media: model_type -> (first, last release, why).
BROKEN_EXPANSION: Dict[str, Tuple[str, str, str]] = {
    "video_llava": ("5.18.0", "5.18.0", "its generate() repeats a video's encoded frames one by one"),
    "qwen3_5": ("5.18.0", "5.20.1",
                "Qwen3_5ForConditionalGeneration does not declare its image and video inputs (input_modalities), so "
                "generate() repeats pixel_values patch by patch instead of image by image (fixed in 5.20.2)"),
}
#: A prompt with several items of one modality (images, videos; InternVL: an image's tiles):
#: generate() repeats the encoded items one by one ([A, A, B, B] where each copy needs [A, B];
#: fixed in 5.19.0). model_type -> (first, last release).
ITEMWISE_EXPANSION: Dict[str, Tuple[str, str]] = {
    "llava": ("5.17.0", "5.18.0"),
    "llava_next": ("5.17.0", "5.18.0"),
    "video_llava": ("5.17.0", "5.17.0"),
    "llava_onevision": ("5.17.0", "5.18.0"),
    "internvl": ("5.17.0", "5.18.0"),
    "qwen2_5_vl": ("5.18.0", "5.18.0"),
    "qwen3_vl": ("5.18.0", "5.18.0"),
}


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def version_tuple(version: str) -> Tuple[int, ...]:
    """(major, minor, patch) of a release string; a local tag (+cpu) is ignored."""
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts)))


def is_final_release(version: str) -> bool:
    """Whether ``version`` is a final release (5.24.0, 5.24.0+local), not a pre-release or a
    development build (5.25.0.dev0, 5.24.0rc1), which may differ from the release it precedes."""
    return re.fullmatch(r"\d+\.\d+(\.\d+)?(\.post\d+)?(\+[\w.]+)?", version) is not None


def in_supported_range(version: str) -> bool:
    low, high = SUPPORTED_TRANSFORMERS
    return is_final_release(version) and version_tuple(low) <= version_tuple(version) <= version_tuple(high)


def _within(version: str, first: str, last: str) -> bool:
    return version_tuple(first) <= version_tuple(version) <= version_tuple(last)


def broken_expansion(model_type: str, version: str, several_items: bool) -> Optional[str]:
    """Why this release's generate() cannot repeat a prompt with media for ``model_type``
    (beams, several returned sequences), None if it can. ``several_items``: some prompt holds
    more than one item of a modality (images, videos; InternVL: tiles)."""
    entry = BROKEN_EXPANSION.get(model_type)
    if entry is not None and _within(version, entry[0], entry[1]):
        return entry[2]
    itemwise = ITEMWISE_EXPANSION.get(model_type)
    if several_items and itemwise is not None and _within(version, *itemwise):
        return ("it repeats a prompt's images / videos one by one, so a prompt with several of them (InternVL: an "
                "image of several tiles) gets them in the wrong order in its copies (fixed in 5.19.0)")
    return None


def cache_argument(fn: Callable) -> Optional[str]:
    """The name ``fn`` takes the cache under (``cache`` or ``past_key_values``), None if it
    names neither."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    return next((name for name in CACHE_ARGUMENTS if name in params), None)


_SIGNATURES: "weakref.WeakKeyDictionary[Callable, inspect.Signature]" = weakref.WeakKeyDictionary()


def signature(fn: Callable) -> inspect.Signature:
    """``inspect.signature(fn)``, computed once per function object (the wrapped functions are
    called on every prefill and decode step). Not cached while torch.compile traces: dynamo
    would guard on the weak dictionary's keys by position, and a key collected before the
    guards are built made it fail ("list index out of range")."""
    import torch

    if torch.compiler.is_compiling():
        return inspect.signature(fn)
    try:
        return _SIGNATURES[fn]
    except (KeyError, TypeError):
        sig = inspect.signature(fn)
    try:
        _SIGNATURES[fn] = sig
    except TypeError:  # not weakly referenceable: not cached
        pass
    return sig


def bound_arguments(fn: Callable, args, kwargs, cache_arg: Optional[str] = None,
                    aliases: Tuple[str, ...] = ("past_key_values",)) -> Dict[str, Any]:
    """A call's arguments by name (the wrapped functions are called both ways). With
    ``cache_arg="cache"`` (transformers >= 5.24), the deprecated ``aliases`` of the cache are
    handled as transformers' own ``deprecate_kwarg`` handles them for ``fn``: renamed to
    ``cache``, or dropped when ``cache`` is given too. Forwards take ``past_key_values`` as an
    alias; generate() also ``cache_params``. So a caller using an old name is read the same way,
    and the original function gets the current name (no deprecation warning)."""
    try:
        bound = signature(fn).bind_partial(*args, **kwargs)
    except TypeError:
        named = dict(kwargs)
    else:
        named = dict(bound.arguments)
        named.update(named.pop("kwargs", {}) or {})
    if cache_arg == "cache":
        for alias in aliases:
            if alias in named:
                value = named.pop(alias)
                named.setdefault("cache", value)
    return named


def output_cache(output: Any, cache_arg: str):
    """The cache a model output carries, read under the release's own name (no warning)."""
    if isinstance(output, dict):  # ModelOutput is an OrderedDict of its non-None fields
        return output.get(cache_arg) if cache_arg in output.keys() else None
    return getattr(output, cache_arg, None)
