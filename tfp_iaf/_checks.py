"""Argument validation shared by every public constructor: one message format, bools rejected.

A wrong type raises `TypeError`, a value of the right type out of range `ValueError`; both name
the argument and show the value, and both are raised before any TensorFlow op runs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

__all__ = ["finite_float", "positive_int", "positive_int_list"]


def _is_int(value) -> bool:
    # bool is an int subclass, but `MADE(event_size=True)` is a mistake, not a size of 1.
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def positive_int(name: str, value, *, optional: bool = False) -> int | None:
    """Returns `value` as an int >= 1 (or None when `optional` and `value is None`)."""
    if value is None and optional:
        return None
    expected = "a positive integer" + (" or None" if optional else "")
    if not _is_int(value):
        raise TypeError(f"`{name}` must be {expected}; got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"`{name}` must be {expected}; got {value!r}")
    return int(value)


def positive_int_list(name: str, value) -> list[int]:
    """Returns `value`, a non-empty sequence of ints >= 1, as a list."""
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
        raise TypeError(
            f"`{name}` must be a non-empty list of positive integers (one per layer); "
            f"got {value!r} ({type(value).__name__})"
        )
    value = list(value)
    if not value:
        raise ValueError(f"`{name}` must be a non-empty list of positive integers; got []")
    if not all(_is_int(v) for v in value):
        raise TypeError(f"`{name}` must be a non-empty list of positive integers; got {value!r}")
    if any(v < 1 for v in value):
        raise ValueError(f"`{name}` must be a non-empty list of positive integers; got {value!r}")
    return [int(v) for v in value]


def finite_float(name: str, value, *, positive: bool = False) -> float:
    """Returns `value` as a finite Python float (and > 0 when `positive`)."""
    expected = "a finite positive number" if positive else "a finite number"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be {expected}; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"`{name}` must be {expected}; got {value!r}")
    return value
