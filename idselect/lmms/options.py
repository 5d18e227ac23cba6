"""The parts of the lmms-eval plugin that need no lmms-eval: idselect's options from
model_args, patching a loaded model, and the statistics of a run.

lmms-eval splits ``--model_args a=1,b=x`` on commas and turns each value into a bool
("true"/"false"), an int (digits only), a float, or leaves it a string; the parsers here accept
those and the plain strings, so the classes also work when built by hand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Union

from ..hooks import IMPORTANCE_CHOICES, SELECTION_CHOICES, patch
from ..options import parse_gamma
from ..options import parse_keep as parse_keep_value

#: idselect's model_args, with their defaults (those of ``idselect.patch``); ``keep`` is required.
OPTION_DEFAULTS: Dict[str, Any] = {
    "keep": None, "gamma": 20.0, "importance": "auto", "alpha": 0.5, "relevance_layer": None, "relevance_rope": False,
    "selection": "id",
}

_PREFIX = "idselect (lmms-eval model_args)"


def _fail(name: str, value: Any, need: str) -> ValueError:
    return ValueError(f"{_PREFIX}: {name} must be {need}, got {name}={value!r}")


def parse_keep(value: Any) -> Optional[Union[int, float]]:
    """``keep`` as ``idselect.patch`` means it; None for "all" (every visual token kept).

    Parameters
    ----------
    value : int, float or str
        A whole number of tokens per image (``64``, ``"64"``), a fraction in (0, 1]
        (``0.25``, ``"0.25"``), or ``"all"``.

    Returns
    -------
    int, float or None
    """
    if value is None:
        raise ValueError(f"{_PREFIX}: keep is required (tokens per image such as keep=64, a fraction "
                         f"such as keep=0.25, or keep=all for no pruning)")
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    try:
        return parse_keep_value(value, _PREFIX, text=True)
    except TypeError as error:  # model_args errors are ValueErrors, whatever the kind
        raise ValueError(str(error)) from None


def _parse_gamma(value: Any) -> float:
    try:
        return parse_gamma(value, _PREFIX, text=True)
    except TypeError as error:  # model_args errors are ValueErrors, whatever the kind
        raise ValueError(str(error)) from None


def _parse_float(name: str, value: Any, low: float, high: float) -> float:
    need = f"a number in [{low:g}, {high:g}]" if math.isfinite(high) else f"a finite number >= {low:g}"
    if isinstance(value, bool):
        raise _fail(name, value, need)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(name, value, need) from None
    if not (math.isfinite(number) and low <= number <= high):
        raise _fail(name, value, need)
    return number


def _parse_int(name: str, value: Any) -> int:
    need = "a whole number >= 0"
    if isinstance(value, bool) or isinstance(value, float):
        raise _fail(name, value, need)
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise _fail(name, value, need)
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise _fail(name, value, need)
    return value


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise _fail(name, value, "true or false")


@dataclass(frozen=True)
class PluginOptions:
    """idselect's settings for one evaluation (``keep=None``: all visual tokens kept)."""

    keep: Optional[Union[int, float]]
    gamma: float = 20.0
    importance: str = "auto"
    alpha: float = 0.5
    relevance_layer: Optional[int] = None  # None: the model's first softmax-attention layer
    relevance_rope: bool = False
    selection: str = "id"  # "id" or "topk" (the baseline: no diversity step)

    def patch_kwargs(self) -> Dict[str, Any]:
        """Arguments for ``idselect.patch``. keep=all patches with ``keep=1.0`` (a fraction of
        1 keeps every token: an exact no-op), so the hooks run and the run reports its tokens."""
        return {"keep": 1.0 if self.keep is None else self.keep, "gamma": self.gamma, "importance": self.importance,
                "alpha": self.alpha, "relevance_layer": self.relevance_layer, "relevance_rope": self.relevance_rope,
                "selection": self.selection}

    def settings(self) -> Dict[str, Any]:
        """The settings as the user gave them (keep "all" stays "all"), for logs and results."""
        return {**self.patch_kwargs(), "keep": "all" if self.keep is None else self.keep}


def parse_options(keep: Any = None, gamma: Any = 20.0, importance: Any = "auto", alpha: Any = 0.5,
                  relevance_layer: Any = None, relevance_rope: Any = False, selection: Any = "id") -> PluginOptions:
    """Check and convert idselect's model_args; errors name the argument and the value.

    Raises
    ------
    ValueError
        A value of the wrong kind or out of range (checked before any weights are loaded).
    """
    if importance not in IMPORTANCE_CHOICES:
        raise _fail("importance", importance, f"one of {', '.join(IMPORTANCE_CHOICES)}")
    if selection not in SELECTION_CHOICES:  # model_args are text: a custom function cannot come this way
        raise _fail("selection", selection, f"one of {', '.join(SELECTION_CHOICES)}")
    return PluginOptions(
        keep=parse_keep(keep),
        gamma=_parse_gamma(gamma),
        importance=importance,
        alpha=_parse_float("alpha", alpha, 0.0, 1.0),
        relevance_layer=None if relevance_layer is None else _parse_int("relevance_layer", relevance_layer),
        relevance_rope=_parse_bool("relevance_rope", relevance_rope),
        selection=selection,
    )


def pop_options(kwargs: Dict[str, Any]) -> PluginOptions:
    """Remove idselect's model_args from ``kwargs`` (the rest go to the wrapped lmms-eval model)
    and parse them."""
    return parse_options(**{name: kwargs.pop(name, default) for name, default in OPTION_DEFAULTS.items()})


#: Summed over a run; the keys of ``handle.last_stats`` that add up.
SUMMED_STATS = ("visual_tokens_before", "visual_tokens_after", "importance_ms", "select_ms")


@dataclass
class RunStats:
    """What idselect did during a run: sums over every prefill that carried images or videos."""

    generate_calls: int = 0
    prefills: int = 0
    totals: Dict[str, float] = field(default_factory=lambda: {key: 0.0 for key in SUMMED_STATS})

    def add_prefill(self, last_stats: Dict[str, Any]) -> None:
        self.prefills += 1
        for key in SUMMED_STATS:
            self.totals[key] += float(last_stats[key])

    def as_dict(self) -> Dict[str, float]:
        return {"generate_calls": self.generate_calls, "prefills": self.prefills, **self.totals}

    def summed_over_processes(self, all_reduce_sum: Optional[Callable[[list], list]]) -> "RunStats":
        """These statistics summed over the processes of a data-parallel run:
        ``all_reduce_sum`` sums a list of floats over processes (None: one process)."""
        values = [float(self.generate_calls), float(self.prefills)] + [self.totals[key] for key in SUMMED_STATS]
        if all_reduce_sum is not None:
            values = all_reduce_sum(values)
        return RunStats(int(round(values[0])), int(round(values[1])), dict(zip(SUMMED_STATS, values[2:])))

    def minus(self, earlier: "RunStats") -> "RunStats":
        return RunStats(self.generate_calls - earlier.generate_calls, self.prefills - earlier.prefills,
                        {key: self.totals[key] - earlier.totals[key] for key in SUMMED_STATS})

    def copy(self) -> "RunStats":
        return RunStats(self.generate_calls, self.prefills, dict(self.totals))


class PatchedModel:
    """``idselect.patch`` applied to a loaded model, plus a record of every ``generate()`` call.

    The model's ``generate`` is shadowed by an instance attribute (removed by ``remove()``)
    that adds each call's ``handle.last_stats`` to ``stats``, and keeps any exception it
    raised: some lmms-eval models catch generation errors and answer "" instead, which would
    hide a failure of the hooks (``raise_if_failed`` re-raises it).
    """

    def __init__(self, model, options: PluginOptions):
        self.model = model
        self.options = options
        self.handle = patch(model, **options.patch_kwargs())
        self.stats = RunStats()
        self.error: Optional[BaseException] = None
        self._had_own_generate = "generate" in model.__dict__
        self._own_generate = model.__dict__.get("generate")
        original = model.generate

        def generate(*args, **kwargs):
            # A call whose prompts carry no images or videos leaves last_stats as it was.
            before = self.handle.media_prefills
            try:
                output = original(*args, **kwargs)
            except BaseException as error:
                self.error = self.error or error
                raise
            self.stats.generate_calls += 1
            if self.handle.media_prefills != before:
                self.stats.add_prefill(self.handle.last_stats)
            return output

        object.__setattr__(model, "generate", generate)

    def raise_if_failed(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"idselect: generate() failed during the evaluation: {error!r}") from error

    def remove(self) -> None:
        """Restore ``generate`` and remove the patch: the model is as loaded (and no longer
        referenced from here). A second call does nothing."""
        if self.model is None:
            return
        if self._had_own_generate:
            object.__setattr__(self.model, "generate", self._own_generate)
        else:
            self.model.__dict__.pop("generate", None)
        self.handle.remove()
        self.model = None
