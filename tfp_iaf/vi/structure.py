"""Event structures: nested shapes and dtypes of a model's parameters, read and checked once.

A model's event is one shape or a nested structure (dict, list, tuple, namedtuple) of shapes. A
shape is a `tf.TensorShape` or a list or tuple of ints, so `[8]` is one shape, and `[[2], [3]]`
a list of two.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf._checks import is_int

tfb = tfp.bijectors

__all__ = ["as_shapes", "as_dtypes", "check_ranks", "constraining_bijector", "is_single"]


def _is_shape(value) -> bool:
    if isinstance(value, tf.TensorShape):
        return True
    if isinstance(value, tf.Tensor | np.ndarray):  # e.g. a model's `event_shape_tensor()`
        return value.ndim == 1 and np.issubdtype(np.asarray(value).dtype, np.integer)
    return (
        isinstance(value, list | tuple)
        and not hasattr(value, "_fields")
        and all(is_int(v) for v in value)
    )


def as_shapes(event_shape):
    """`event_shape` with every shape as a fully defined `tf.TensorShape`; the structure kept."""
    if _is_shape(event_shape):
        shape = tf.TensorShape(
            event_shape.numpy() if isinstance(event_shape, tf.Tensor) else event_shape
        )
        if not shape.is_fully_defined():
            raise ValueError(f"`event_shape` must be fully defined; got {shape}")
        if any(d < 0 for d in shape):
            raise ValueError(f"`event_shape` has a negative size: {shape}")
        return shape
    if isinstance(event_shape, dict):
        return type(event_shape)((k, as_shapes(v)) for k, v in event_shape.items())
    if hasattr(event_shape, "_fields"):  # a namedtuple (inference_gym's StructTuple included)
        return type(event_shape)(*[as_shapes(v) for v in event_shape])
    if isinstance(event_shape, list | tuple) and event_shape:
        return type(event_shape)(as_shapes(v) for v in event_shape)
    raise TypeError(
        "`event_shape` must be a shape (a TensorShape or a list of ints) or a nested structure "
        f"(dict, list, tuple, namedtuple) of shapes; got {event_shape!r}"
    )


def is_single(shapes) -> bool:
    return isinstance(shapes, tf.TensorShape)


def as_dtypes(dtype, shapes):
    """One float `tf.DType` per part of `shapes`: `dtype` is one dtype or the same structure."""
    if _is_dtype(dtype):
        dtype = tf.nest.map_structure(lambda _: dtype, shapes)
    try:
        tf.nest.assert_same_structure(shapes, dtype, check_types=False)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`dtype` must be one float dtype or the structure of `event_shape`; got {dtype!r} "
            f"for event_shape {shapes!r}"
        ) from error

    def check(d):
        if not _is_dtype(d) or not tf.as_dtype(d).is_floating:
            raise TypeError(f"`dtype` must be a floating-point dtype; got {d!r}")
        return tf.as_dtype(d)

    dtypes = tf.nest.map_structure(check, dtype)
    if len({d for d in tf.nest.flatten(dtypes)}) > 1:
        raise ValueError(f"`dtype` must be one float dtype for every part; got {dtype!r}")
    return dtypes


def _is_dtype(value) -> bool:
    try:
        tf.as_dtype(value)
    except TypeError:
        return False
    return not isinstance(value, list | tuple | dict)


def constraining_bijector(bijector, shapes):
    """`bijector` as one bijector mapping the unconstrained structure onto the model's support.

    Args:
      bijector: None (identity), a bijector (structured when `shapes` is), or a structure of
        bijectors like `shapes` (wrapped in `tfb.JointMap`).
      shapes: the model's event shapes, from `as_shapes`.

    Raises:
      TypeError: `bijector` is neither a bijector nor a structure of them.
      ValueError: its structure does not match `shapes`.
    """
    if bijector is None:
        if is_single(shapes):
            return tfb.Identity()
        return tfb.JointMap(tf.nest.map_structure(lambda _: tfb.Identity(), shapes))
    if isinstance(bijector, tfb.Bijector):
        ndims = bijector.forward_min_event_ndims
        if is_single(shapes) != (not tf.nest.is_nested(ndims)):
            raise ValueError(
                "`bijector` must have the structure of `event_shape`: got a "
                f"{'structured' if tf.nest.is_nested(ndims) else 'single-part'} bijector "
                f"{bijector.name!r} for event_shape {shapes!r}"
            )
        if not is_single(shapes):
            _same_structure(shapes, ndims, bijector.name)
        return bijector
    if tf.nest.is_nested(bijector) and not is_single(shapes):
        _same_structure(shapes, bijector, bijector)
        for b in tf.nest.flatten(bijector):
            if not isinstance(b, tfb.Bijector):
                raise TypeError(f"`bijector` must hold tfp bijectors; got {b!r} in {bijector!r}")
        return tfb.JointMap(bijector)
    raise TypeError(
        "`bijector` must be None, a tfp bijector, or a structure of bijectors like "
        f"`event_shape`; got {bijector!r} for event_shape {shapes!r}"
    )


def check_ranks(bijector, shapes) -> None:
    """Raises unless every part of `shapes` has at least the rank `bijector` maps onto.

    A bijector onto matrices (`tfb.FillScaleTriL`, `tfb.CholeskyOuterProduct`) needs a part of
    rank 2 at least; given a vector it would silently build a surrogate of another shape, or
    fail inside TFP. A part of higher rank is a batch of the bijector's events.

    Args:
      bijector: from `constraining_bijector(..., shapes)`.
      shapes: the model's event shapes, from `as_shapes`.

    Raises:
      ValueError: a part's rank is below the bijector's `inverse_min_event_ndims` there.
    """
    ndims = bijector.inverse_min_event_ndims
    if is_single(shapes):
        parts = [(None, shapes, ndims)]
    else:
        parts = zip(_paths(shapes), tf.nest.flatten(shapes), tf.nest.flatten(ndims), strict=True)
    for path, shape, rank in parts:
        if shape.rank < int(rank):
            part = "" if path is None else f" at part {path}"
            raise ValueError(
                f"`bijector` {bijector.name!r} maps onto events of rank >= {int(rank)}{part}, "
                f"but `event_shape` there is {shape} (rank {shape.rank}); event_shape "
                f"{shapes!r}"
            )


def _paths(structure, prefix: str = "") -> list[str]:
    """`["['a']", "['b'][0]", ...]`: where each leaf is, in `tf.nest.flatten`'s order."""
    if isinstance(structure, tf.TensorShape) or not tf.nest.is_nested(structure):
        return [prefix]
    if isinstance(structure, Mapping):
        items = [(f"[{k!r}]", structure[k]) for k in sorted(structure)]
    elif hasattr(structure, "_fields"):
        items = [(f".{k}", v) for k, v in zip(structure._fields, structure, strict=True)]
    else:
        items = [(f"[{i}]", v) for i, v in enumerate(structure)]
    return [p for key, value in items for p in _paths(value, prefix + key)]


def _same_structure(shapes, other, what) -> None:
    # Types may differ (a namedtuple and a tuple, a dict and an OrderedDict), kinds may not.
    try:
        tf.nest.assert_same_structure(shapes, other, check_types=False)
        for a, b in zip(_containers(shapes), _containers(other), strict=True):
            if isinstance(a, Mapping) != isinstance(b, Mapping):
                raise ValueError(f"{type(a).__name__} and {type(b).__name__}")
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`bijector` must have the structure of `event_shape`; got {what!r} for "
            f"event_shape {shapes!r}"
        ) from error


def _containers(structure) -> list:
    """The nested containers of `structure`, depth first."""
    if isinstance(structure, tf.TensorShape) or not tf.nest.is_nested(structure):
        return []
    values = structure.values() if isinstance(structure, Mapping) else structure
    return [structure, *(c for v in values for c in _containers(v))]
