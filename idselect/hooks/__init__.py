"""``idselect.patch``: ID-Selection inside Hugging Face LVLMs (see docs/hooks.md)."""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from ..options import parse_gamma, parse_keep
from . import compat, selfcheck
from .engine import IMPORTANCE_CHOICES, SELECTION_CHOICES, Options
from .family import Family
from .handle import HANDLE_ATTR, PatchHandle
from .integration import Hooks
from .registry import REGISTRY, supported_model_types

__all__ = ["patch", "supported_model_types", "PatchHandle", "REGISTRY", "IMPORTANCE_CHOICES", "SELECTION_CHOICES"]


def patch(
    model: nn.Module,
    keep: Union[int, float],
    gamma: float = 20.0,
    importance: str = "auto",
    alpha: float = 0.5,
    relevance_layer: Optional[int] = None,
    relevance_rope: bool = False,
    selection: Union[str, Callable[..., torch.Tensor]] = "id",
) -> PatchHandle:
    """Make ``model`` feed its LLM only the visual tokens chosen by ID-Selection.

    Parameters
    ----------
    model : transformers model
        A ``...ForConditionalGeneration`` of a supported ``model_type`` (not its base model:
        its ``generate()`` is patched too).
    keep : int or float
        int (also a numpy integer or a 0-d integer tensor): tokens the LLM receives per image
        (per video for videos); float in (0, 1]: that fraction of each image's tokens (rounded,
        at least 1). A budget >= the image's token count leaves that image untouched.
    gamma : float
        Suppression sharpness of the selection (paper: 20).
    importance : {"auto", "unified", "saliency", "relevance"}
        "auto" is "unified" where the vision tower has a [CLS] token, else "relevance";
        "saliency" and "unified" are refused for towers without one.
    alpha : float
        Weight of saliency in "unified".
    relevance_layer : int, optional
        LLM layer whose W_Q / W_K score instruction relevance (0: on the input embeddings);
        must be a softmax-attention layer below the LLM's layer count. None (default): the
        first such layer - 0 in every family but Qwen3.5, whose first layers are linear
        attention (its relevance then runs those layers on the whole prompt first).
    relevance_rope : bool
        Apply the LLM's rotary embedding to q and k for relevance.
    selection : {"id", "topk"} or callable
        "id": ID-Selection (importance with similarity suppression); "topk": the ``keep``
        highest-importance tokens, no diversity step (the baseline of VisionZip / FasterVLM
        style pruning, for comparisons). A callable with the op's signature,
        ``fn(features [G, n, D], scores [G, n], k, gamma, lengths [G]) -> int64 [G, k]``
        (e.g. ``idselect.reference.select`` or ``idselect.device_path.select``), replaces the
        op for this handle: how benchmarks compare backends on one model.

    Returns
    -------
    PatchHandle
        ``.remove()`` (or leaving its ``with`` block) restores the model exactly;
        ``.last_stats`` describes the last prefill.

    Raises
    ------
    TypeError
        The model's ``config.model_type`` (or its vision tower) is not supported (the message
        lists those that are), or an option has the wrong type.
    RuntimeError
        The model is already patched (remove the first handle before patching again).
    UnverifiedTransformersError
        (a RuntimeError) The installed transformers is outside the verified range
        (``idselect.hooks.compat.SUPPORTED_TRANSFORMERS``) and the self-check on a tiny model
        of this family found a difference (docs/hooks.md, "Supported transformers versions").
    ValueError
        An option is out of range, or asks for something the model cannot do.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in REGISTRY:
        raise TypeError(
            f"idselect.patch: model_type {model_type!r} ({type(model).__name__}) is not supported; "
            f"supported: {', '.join(supported_model_types())}"
        )
    family = REGISTRY[model_type]
    family.check(model)
    base = family.base(model)
    if base is model:
        raise TypeError(
            f"idselect.patch: {type(model).__name__} is the base model; patch the "
            "...ForConditionalGeneration model that owns it (its generate() is patched too, "
            "which beams, multi-turn continuation, static caches and use_cache=False need)"
        )
    if isinstance(base.__dict__.get(HANDLE_ATTR), PatchHandle):
        raise RuntimeError(
            "idselect.patch: this model (or the model it belongs to / contains) is already patched; "
            "call .remove() on the handle returned by the first patch() before patching it again"
        )
    options = Options(
        keep=_keep_option(keep),
        gamma=parse_gamma(gamma, "idselect.patch"),
        importance=_importance_option(importance, family, model),
        alpha=_real_option("alpha", alpha, low=0.0, high=1.0),
        relevance_layer=_layer_option(relevance_layer, family, family.language_model(model)),
        relevance_rope=_bool_option("relevance_rope", relevance_rope),
        selection=selection if callable(selection) else _choice_option("selection", selection, SELECTION_CHOICES),
    )
    cache_arg = _cache_argument(model, family)
    selfcheck.ensure_verified(model_type)  # outside the verified transformers range: prove, or refuse
    handle = PatchHandle(model, family, options, cache_arg)
    try:
        Hooks(handle).install()
    except Exception:
        handle.remove()
        raise
    base.__dict__[HANDLE_ATTR] = handle
    return handle


def _cache_argument(model: nn.Module, family: Family) -> str:
    """The name this transformers release gives the cache argument, read from the language
    model's forward and required of the model's other forwards the hooks wrap: a release that
    renames it to something else is refused here, not misread later."""
    forwards = {"language model": family.language_model(model).forward, "base model": family.base(model).forward,
                "model": model.forward}
    names = {where: compat.cache_argument(fn) for where, fn in forwards.items()}
    found = set(names.values())
    if len(found) != 1 or None in found:
        raise TypeError(
            f"idselect.patch: cannot tell how transformers {compat.transformers_version()} passes the cache: the "
            f"forwards of {type(model).__name__} take it as {names} (idselect knows {', '.join(compat.CACHE_ARGUMENTS)}); "
            f"idselect is verified on transformers {compat.SUPPORTED_TRANSFORMERS[0]} to {compat.SUPPORTED_TRANSFORMERS[1]}: "
            "install a release in that range, or a newer idselect"
        )
    return found.pop()


def _keep_option(keep) -> Union[int, float]:
    return parse_keep(keep, "idselect.patch")


def _real_option(name: str, value, low: float, high: float = math.inf) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"idselect.patch: {name} must be a real number, got {type(value).__name__} {value!r}")
    if not (low <= value <= high) or math.isinf(value):
        bound = f"[{low:g}, {high:g}]" if high != math.inf else f"finite and >= {low:g}"
        raise ValueError(f"idselect.patch: {name} must be {'in ' if high != math.inf else ''}{bound}, got {name}={value}")
    return float(value)


def _bool_option(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"idselect.patch: {name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _layer_option(value, family: Family, llm: nn.Module) -> int:
    """The LLM layer for relevance: one with softmax attention, which relevance reads its
    W_Q / W_K from; None: the first one."""
    layers = family.decoder_layers(llm)
    with_attention = family.attention_layers(llm)
    if value is None:
        if not with_attention:
            raise TypeError("idselect.patch: this LLM has no softmax-attention layer to score instruction relevance with")
        return with_attention[0]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"idselect.patch: relevance_layer must be an int, got {type(value).__name__} {value!r}")
    if not 0 <= value < len(layers):
        raise ValueError(f"idselect.patch: relevance_layer must be in [0, {len(layers) - 1}] (the LLM has {len(layers)} layers), "
                         f"got relevance_layer={value}")
    if value not in with_attention:
        raise ValueError(f"idselect.patch: relevance_layer={value} is not a softmax-attention layer (it has no self_attn "
                         f"to score relevance with); layers with attention: {with_attention}")
    return int(value)


def _choice_option(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"idselect.patch: {name} must be one of {choices}, got {value!r}")
    return value


def _importance_option(importance, family: Family, model: nn.Module) -> str:
    _choice_option("importance", importance, IMPORTANCE_CHOICES)
    saliency = family.has_saliency(model)
    if importance == "auto":
        return "unified" if saliency else "relevance"
    if importance in ("saliency", "unified") and not saliency:
        raise ValueError(
            f"idselect.patch: importance={importance!r} needs [CLS] saliency, which this model's vision tower "
            f"({model.config.model_type}, {getattr(model.config.vision_config, 'model_type', '?')}) does not have; "
            "use importance='relevance' (or 'auto')"
        )
    return importance
