"""Command-line flag types shared by the CLI and the providers' own flags (argparse `type=`)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def number(
    kind: type[int] | type[float], low: float, high: float, example: str
) -> Callable[[str], Any]:
    """An argparse type: a finite int or float within [low, high]."""
    noun = "whole number" if kind is int else "number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {noun}. Fix: give a {noun}, e.g. {example}"
            ) from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{text} is outside {kind(low)}..{kind(high)}. Fix: give a {noun} in that range, "
                f"e.g. {example}"
            )
        return value

    parse.__name__ = noun
    return parse
