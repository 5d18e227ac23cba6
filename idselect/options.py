"""The one reading of ``keep`` and of ``gamma``, shared by every interface that takes them:
``idselect.patch``, the command-line tools' ``--keep``, lmms-eval's model_args and vLLM's
options. Each names itself in the messages; the rule and the wording of what is wrong are the
same everywhere."""
from __future__ import annotations

import math
import numbers
from typing import Any, Union

import numpy as np
import torch


def parse_keep(value: Any, where: str, text: bool = False) -> Union[int, float]:
    """``keep`` as idselect means it: an int >= 1 is visual tokens kept per image or video, a
    float in (0, 1] the fraction of each one's tokens.

    Parameters
    ----------
    value : int, float, 0-d tensor, or (with ``text``) str
        The value given. With ``text``, digits are a token count and a number with a decimal
        point or exponent a fraction (``"64"``, ``"0.25"``), as on a command line.
    where : str
        The interface, first in every message (``"idselect.patch"``, ``"--keep"``, ...).

    Returns
    -------
    int or float

    Raises
    ------
    TypeError
        Not a number (a bool, a list, a tensor of several values, text where none is read).
    ValueError
        A token count below 1, a fraction outside (0, 1] (64.0 included: a float is a fraction),
        NaN, or text that is not a number.
    """
    shown = f"keep={value!r}"
    number = value
    if text and isinstance(value, str):
        stripped = value.strip()
        try:
            number = int(stripped) if stripped.lstrip("+-").isdigit() else float(stripped)
        except ValueError:
            raise ValueError(f"{where}: keep must be a token count (64) or a fraction in (0, 1] (0.25), "
                             f"got {shown}") from None
    if isinstance(number, torch.Tensor) and number.dim() == 0 and number.dtype != torch.bool:
        number = number.item()
    if isinstance(number, (bool, np.bool_)) or not isinstance(number, numbers.Real):
        raise TypeError(f"{where}: keep must be an int or a float, got {shown} (a {type(value).__name__})")
    if isinstance(number, numbers.Integral):
        if number < 1:
            raise ValueError(f"{where}: keep must be >= 1 tokens, got {shown}")
        return int(number)
    if not 0.0 < number <= 1.0:  # NaN fails too
        raise ValueError(f"{where}: a fractional keep must be in (0, 1], got {shown}")
    return float(number)


def parse_gamma(value: Any, where: str, text: bool = False) -> float:
    """``gamma``, the suppression sharpness of the selection (the paper's 20): a finite
    number >= 0.

    Parameters
    ----------
    value : int, float, 0-d tensor, or (with ``text``) str
    where : str
        The interface, first in every message.

    Raises
    ------
    TypeError
        Not a number (a bool, text where none is read, a tensor of several values).
    ValueError
        Negative, infinite, NaN, or text that is not a number.
    """
    shown = f"gamma={value!r}"
    number = value
    if text and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{where}: gamma must be a finite number >= 0, got {shown}") from None
    if isinstance(number, torch.Tensor) and number.dim() == 0 and number.dtype != torch.bool:
        number = number.item()
    if isinstance(number, (bool, np.bool_)) or not isinstance(number, numbers.Real):
        raise TypeError(f"{where}: gamma must be a real number, got {shown} (a {type(value).__name__})")
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{where}: gamma must be a finite number >= 0, got {shown}")
    return float(number)
