"""What a surrogate needs from a model (event shape, dtype, support), read off it and checked.

A surrogate is one unbatched event of continuous parameters. A discrete part (a Poisson count,
a Bernoulli switch) has no unconstrained space to flow in, and a batch of independent models
would get one shared surrogate: both are refused here, naming the part, before TFP fails on
them deep inside (`'NoneType' object has no attribute 'inverse_event_ndims'`) or builds the
wrong surrogate without a word.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

__all__ = ["read_model"]


def read_model(model):
    """`(event_shape, bijector, dtype)` of a model, for `build_iaf_surrogate_posterior`.

    Args:
      model: a (pinned) `tfd.JointDistribution*`, any distribution, or an inference_gym model.

    Returns:
      The model's event shape, its default event-space bijector (onto its support) and dtype.

    Raises:
      TypeError: `model` has no event-space bijector, or it or one of its (unpinned) parts is
        discrete (a non-float dtype, or no event-space bijector: `tfd.Poisson`,
        `tfd.Bernoulli`, `tfd.Categorical`, ...).
      ValueError: a part with a non-scalar batch shape.
    """
    if hasattr(model, "default_event_space_bijector"):  # inference_gym
        return model.event_shape, model.default_event_space_bijector, model.dtype
    if not hasattr(model, "experimental_default_event_space_bijector"):
        raise TypeError(
            "`model` must be a TFP distribution (e.g. a pinned JointDistribution) or an "
            f"inference_gym model; got {type(model).__name__}, which has no event-space bijector"
        )
    for path, part in _parts(model, ()):
        _check_continuous(path, part)
    _check_unbatched(model)
    return model.event_shape, model.experimental_default_event_space_bijector(), model.dtype


def _is_joint(model) -> bool:
    # A JointDistribution, pinned or not (TFP's own default bijector reads its parts so).
    return hasattr(model, "_get_single_sample_distributions") and hasattr(
        model, "_flat_resolve_names"
    )


def _parts(model, path: tuple) -> list:
    """`[(path, distribution)]`: the model's (unpinned) parts, nested joint ones flattened,
    each with its names from the outermost model in."""
    if not _is_joint(model):
        return [(path, model)]
    names = model._flat_resolve_names()
    parts = model._get_single_sample_distributions()
    return [
        item
        for name, part in zip(names, parts, strict=True)
        for item in _parts(part, (*path, name))
    ]


def _check_continuous(path: tuple, distribution) -> None:
    what = f"{type(distribution).__name__} {distribution.name!r}"
    dtypes = tf.nest.flatten(distribution.dtype)
    if not all(tf.as_dtype(d).is_floating for d in dtypes):
        problem = f"of dtype {distribution.dtype!r}: a discrete distribution"
    else:
        try:
            bijector = distribution.experimental_default_event_space_bijector()
        except NotImplementedError:
            bijector = None
        if bijector is not None:
            return
        problem = "with no event-space bijector (a discrete distribution has none)"
    where = "`model`" if not path else "`model`'s part " + " -> ".join(map(repr, path))
    hint = "" if not path else "; pin the part to a value or sum it out of the model"
    raise TypeError(
        f"{where} is {what} {problem}. An IAF surrogate covers continuous parameters only{hint}"
    )


def _check_unbatched(model) -> None:
    batch_shape = getattr(model, "batch_shape", tf.TensorShape([]))
    if isinstance(batch_shape, tf.TensorShape):
        named = [(None, batch_shape)]
    elif isinstance(batch_shape, Mapping):
        named = list(batch_shape.items())
    elif hasattr(batch_shape, "_fields"):
        named = list(zip(batch_shape._fields, batch_shape, strict=True))
    else:  # a list: in the (unpinned) parts' order
        names = model._flat_resolve_names() if _is_joint(model) else range(len(batch_shape))
        named = list(zip(names, batch_shape, strict=True))
    for name, shape in named:
        shape = tf.TensorShape(shape)
        if shape.rank is not None and shape.rank > 0:
            part = "`model`" if name is None else f"`model`'s part {name!r}"
            raise ValueError(
                f"{part} has batch shape {shape}: a surrogate is of one unbatched event. Make "
                "the batch part of the event: `tfd.Sample(d, n)` for independent draws, "
                "`tfd.Independent(d, reinterpreted_batch_ndims=...)` for a batched "
                "distribution, or a `tfd.JointDistribution*AutoBatched` model"
            )
