"""argparse types shared by the command line tools: a flag means what the API argument
of the same name means, and a bad value is an argparse error naming the flag."""
from __future__ import annotations

import argparse
from typing import Union


def keep_value(text: str) -> Union[int, float]:
    """``--keep`` as ``idselect.patch(keep=...)`` reads it: an integer is a token count
    (>= 1), a number with a decimal point or exponent is a fraction in (0, 1]."""
    try:
        value: Union[int, float] = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a token count or a fraction, got {text!r}") from None
        if not 0.0 < value <= 1.0:
            raise argparse.ArgumentTypeError(f"a fractional keep must be in (0, 1], got {text!r}")
        return value
    if value < 1:
        raise argparse.ArgumentTypeError(f"a token count must be >= 1, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value
