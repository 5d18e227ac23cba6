"""argparse types shared by the command line tools: a flag means what the API argument
of the same name means, and a bad value is an argparse error naming the flag."""
from __future__ import annotations

import argparse
from typing import Union

from ..options import parse_keep


def keep_value(text: str) -> Union[int, float]:
    """``--keep`` as ``idselect.patch(keep=...)`` reads it (idselect.options.parse_keep): an
    integer is a token count (>= 1), a number with a decimal point or exponent is a fraction
    in (0, 1]."""
    try:
        return parse_keep(text, "--keep", text=True)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"int >= {low}"  # argparse names the type in some messages
    return parse


#: An integer >= 1 / >= 0.
positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)
