"""``idselect.patch``: ID-Selection inside Hugging Face LVLMs (see docs/hooks.md)."""
from __future__ import annotations

from typing import Dict, Union

from torch import nn

from .core import IMPORTANCE_CHOICES, FamilyAdapter, Options, PatchHandle
from .internvl import InternVLAdapter
from .llava import LlavaAdapter, LlavaNextAdapter, VideoLlavaAdapter
from .qwen2_5_vl import Qwen25VLAdapter

#: model_type -> adapter; a family registers itself here.
REGISTRY: Dict[str, FamilyAdapter] = {
    a.model_type: a
    for a in (LlavaAdapter(), LlavaNextAdapter(), VideoLlavaAdapter(), Qwen25VLAdapter(), InternVLAdapter())
}


def supported_model_types():
    return tuple(sorted(REGISTRY))


def patch(
    model: nn.Module,
    keep: Union[int, float],
    gamma: float = 20.0,
    importance: str = "auto",
    alpha: float = 0.5,
    relevance_layer: int = 0,
    relevance_rope: bool = False,
) -> PatchHandle:
    """Make ``model`` feed its LLM only the visual tokens chosen by ID-Selection.

    Parameters
    ----------
    model : transformers model
        A ``...ForConditionalGeneration`` (or its base model) of a supported ``model_type``.
    keep : int or float
        int: tokens the LLM receives per image (per video for videos); float in (0, 1]: that
        fraction of each image's tokens (rounded, at least 1). A budget >= the image's token
        count leaves that image untouched.
    gamma : float
        Suppression sharpness of the selection (paper: 20).
    importance : {"auto", "unified", "saliency", "relevance"}
        "auto" is "unified" where the vision tower has a [CLS] token, else "relevance".
    alpha : float
        Weight of saliency in "unified".
    relevance_layer : int
        LLM layer whose W_Q / W_K score instruction relevance (0: on the input embeddings).
    relevance_rope : bool
        Apply the LLM's rotary embedding to q and k for relevance.

    Returns
    -------
    PatchHandle
        ``.remove()`` (or leaving its ``with`` block) restores the model exactly;
        ``.last_stats`` describes the last prefill.

    Raises
    ------
    TypeError
        The model's ``config.model_type`` is not supported (the message lists those that are).
    RuntimeError
        The model is already patched (remove the first handle before patching again).
    ValueError
        An option is out of range.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in REGISTRY:
        raise TypeError(
            f"idselect.patch: model_type {model_type!r} ({type(model).__name__}) is not supported; "
            f"supported: {', '.join(supported_model_types())}"
        )
    if getattr(model, "_idselect_handle", None) is not None:
        raise RuntimeError(
            "idselect.patch: this model is already patched; call .remove() on the handle "
            "returned by the first patch() before patching it again"
        )
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise TypeError(f"idselect.patch: keep must be an int or a float, got {type(keep).__name__} {keep!r}")
    if isinstance(keep, int) and keep < 1:
        raise ValueError(f"idselect.patch: keep must be >= 1 tokens, got keep={keep}")
    if isinstance(keep, float) and not 0.0 < keep <= 1.0:
        raise ValueError(f"idselect.patch: a fractional keep must be in (0, 1], got keep={keep}")
    if importance not in IMPORTANCE_CHOICES:
        raise ValueError(f"idselect.patch: importance must be one of {IMPORTANCE_CHOICES}, got {importance!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"idselect.patch: alpha must be in [0, 1], got alpha={alpha}")
    if not gamma >= 0 or gamma == float("inf"):
        raise ValueError(f"idselect.patch: gamma must be finite and >= 0, got gamma={gamma}")
    if isinstance(relevance_layer, bool) or not isinstance(relevance_layer, int) or relevance_layer < 0:
        raise ValueError(f"idselect.patch: relevance_layer must be an int >= 0, got {relevance_layer!r}")
    options = Options(keep, float(gamma), importance, float(alpha), relevance_layer, bool(relevance_rope))
    adapter = REGISTRY[model_type]
    handle = PatchHandle(model, adapter, options)
    try:
        adapter.install(handle)
    except Exception:
        handle.remove()
        raise
    model._idselect_handle = handle
    return handle
