"""Argument validation shared by every public constructor and call: one message format.

A wrong type raises `TypeError`, a value of the right type out of range `ValueError`; both name
the argument and show the value, and both are raised before any TensorFlow op runs (bools are
not ints here). Inputs of calls (`as_input`, `check_inputs`) are checked once, at the outermost
public call. This module imports nothing of tfp_iaf, Keras included.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "as_input",
    "check_inputs",
    "event_shape_hwc",
    "is_int",
    "non_negative_float",
    "non_negative_int",
    "odd_kernel_size",
    "finite_float",
    "float_dtype",
    "positive_int",
    "positive_int_list",
]


def is_int(value) -> bool:
    # bool is an int subclass, but `MADE(event_size=True)` is a mistake, not a size of 1.
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def positive_int(name: str, value, *, optional: bool = False) -> int | None:
    """Returns `value` as an int >= 1 (or None when `optional` and `value is None`)."""
    if value is None and optional:
        return None
    expected = "a positive integer" + (" or None" if optional else "")
    if not is_int(value):
        raise TypeError(f"`{name}` must be {expected}; got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"`{name}` must be {expected}; got {value!r}")
    return int(value)


def non_negative_int(name: str, value) -> int:
    """Returns `value` as an int >= 0."""
    if not is_int(value):
        raise TypeError(
            f"`{name}` must be a non-negative integer; got {value!r} ({type(value).__name__})"
        )
    if value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer; got {value!r}")
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
    if not all(is_int(v) for v in value):
        raise TypeError(f"`{name}` must be a non-empty list of positive integers; got {value!r}")
    if any(v < 1 for v in value):
        raise ValueError(f"`{name}` must be a non-empty list of positive integers; got {value!r}")
    return [int(v) for v in value]


def non_negative_float(name: str, value) -> float:
    """Returns `value` as a finite Python float >= 0 (NaN and inf rejected)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a finite number >= 0; got {value!r} ({type(value).__name__})"
        )
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0; got {value!r}")
    return value


def event_shape_hwc(name: str, value) -> tuple[int, int, int]:
    """Returns `value` as `(H, W, C)`, three ints >= 1 (a shape: any bad value is a ValueError)."""
    try:
        shape = tuple(value)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or any(not is_int(n) or n < 1 for n in shape):
        raise ValueError(f"`{name}` must be (H, W, C), three positive integers; got {value!r}")
    return tuple(int(n) for n in shape)


def odd_kernel_size(name: str, value) -> int:
    """Returns `value` as an odd int >= 1 (the centre tap is the current position)."""
    if not is_int(value) or value < 1 or value % 2 == 0:
        raise ValueError(
            f"`{name}` must be a positive odd integer (the centre tap is the current position); "
            f"got {value!r}"
        )
    return int(value)


def finite_float(name: str, value, *, positive: bool = False) -> float:
    """Returns `value` as a finite Python float (and > 0 when `positive`)."""
    expected = "a finite positive number" if positive else "a finite number"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be {expected}; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"`{name}` must be {expected}; got {value!r}")
    return value


def float_dtype(name: str, value, *, policy=None) -> tf.DType:
    """Returns `value` as a floating-point `tf.DType`.

    With `policy`, a Keras mixed-precision policy class (e.g.
    `tf_keras.mixed_precision.Policy`), a policy or its name (e.g. "mixed_float16") is accepted
    too, if its compute and variable dtypes are floating; its variable dtype is returned. A
    network of integer or bool dtype would fail only when first called, inside a Keras layer or
    an initializer, with a message that names neither the argument nor the value.

    Raises:
      TypeError: `value` is not a floating-point dtype (or policy, where accepted).
    """
    try:
        dtypes = [tf.as_dtype(value)]
    except TypeError:
        dtypes = []
        if policy is not None:
            try:
                p = value if isinstance(value, policy) else policy(value)
                dtypes = [tf.as_dtype(p.variable_dtype), tf.as_dtype(p.compute_dtype)]
            except (TypeError, ValueError):
                dtypes = []
    if not dtypes or not all(d.is_floating for d in dtypes):
        raise TypeError(
            f"`{name}` must be a floating-point dtype (e.g. tf.float32 or 'float64'); "
            f"got {value!r}"
        )
    return dtypes[0]


def as_input(value, dtype):
    """An input of a call: Python and NumPy values as tensors of `dtype`; None, tensors,
    variables and Keras inputs unchanged.

    TFP's convention (`Bijector.forward` converts its input the same way): a tensor must already
    have the flow's dtype, and a mismatch is reported by `check_inputs`, not cast silently.
    """
    if isinstance(value, np.ndarray | np.generic | numbers.Number | list | tuple):
        return tf.convert_to_tensor(value, dtype=dtype)
    return value


def _check_trailing_shape(t, expected, arg: str, kind: str, got: str, owner: str) -> None:
    trailing = tuple(t.shape[-len(expected) :]) if t.shape.rank is not None else None
    if trailing is not None and not _fits(trailing, expected):
        raise ValueError(
            f"`{arg}` must have {kind} {expected} ({owner}); got {got} {tuple(t.shape)}"
        )


def check_inputs(
    x: tf.Tensor,
    context: tf.Tensor | None,
    *,
    event_shape: tuple[int, ...],
    context_shape: tuple[int, ...] | None,
    dtype: tf.DType,
    owner: str,
    arg: str = "x",
) -> None:
    """Raises on an input or context that does not fit a network or flow (static checks).

    What the static shapes and dtypes already show: `x`'s event shape and dtype, a context
    missing, unexpected or of the wrong trailing shape or dtype, and batch shapes of `x` and
    the context that do not broadcast. Unknown dimensions pass (see the flows' `validate_args`).

    Args:
      x: the input, `[..., *event_shape]`.
      context: the context, `[..., *context_shape]`, or None.
      event_shape: the event shape expected.
      context_shape: the context's trailing shape, or None for no context.
      dtype: the dtype of both.
      owner: who checks, for the message, e.g. "network `made_0`".
      arg: the input's name in the message.

    Raises:
      ValueError: a shape that does not fit, or a context missing or unexpected.
      TypeError: a dtype that is not `dtype`.
    """
    _check_trailing_shape(x, event_shape, arg, "event shape", "input shape", owner)
    if x.dtype != dtype:
        raise TypeError(
            f"`{arg}` has dtype {x.dtype.name} but {owner} is {dtype.name}; build it with "
            f"dtype={x.dtype.name!r} or cast the input"
        )
    if context_shape is None:
        if context is not None:
            raise ValueError(
                f"`context` was given (shape {tuple(context.shape)}) but {owner} was built "
                "without one; pass context_size to use it"
            )
        return
    if context is None:
        raise ValueError(
            f"`context` is required: {owner} was built with context shape {context_shape}"
        )
    _check_trailing_shape(context, context_shape, "context", "trailing shape", "shape", owner)
    if context.dtype != dtype:
        raise TypeError(f"`context` has dtype {context.dtype.name} but {owner} is {dtype.name}")
    if x.shape.rank is not None and context.shape.rank is not None:
        x_batch = x.shape[: x.shape.rank - len(event_shape)]
        c_batch = context.shape[: context.shape.rank - len(context_shape)]
        try:
            tf.broadcast_static_shape(x_batch, c_batch)
        except ValueError:
            raise ValueError(
                f"`context` batch shape {tuple(c_batch)} does not broadcast against the batch "
                f"shape {tuple(x_batch)} of `{arg}` ({owner}; context shape "
                f"{tuple(context.shape)}, {arg} shape {tuple(x.shape)}). For `sample(n)` of a "
                "distribution whose batch shape is not the context's, give the base "
                "distribution the context's batch shape"
            ) from None


def _fits(shape: tuple, expected: tuple[int, ...]) -> bool:
    """Whether a static `shape` (None: unknown) can be `expected`."""
    return len(shape) == len(expected) and all(
        s is None or s == e for s, e in zip(shape, expected, strict=True)
    )
