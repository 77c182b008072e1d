"""Weight normalisation (Salimans & Kingma 2016), written once for every layer that uses it.

https://arxiv.org/abs/1602.07868, as the IAF paper's ResNet VAE uses it:

- per output channel `o`: `w[..., o] = g[o] * v[..., o] / ||v[..., o]||` (`weight_normalize`);
- data-dependent initialisation on one batch: with `t` the layer's output for `g = 1, b = 0`
  and `m[o]`, `s[o]` the mean and standard deviation of `t[..., o]` over every other axis, set
  `g[o] = init_scale / s[o]` and `b[o] = -m[o] * g[o]`, so that on that batch every output
  channel has mean 0 and standard deviation `init_scale` (`initialize_from_output`). A channel
  constant on the batch keeps `g[o] = init_scale`.

`data_dependent_init(model, *args)` runs the model once eagerly with every weight-normalised
layer (`layer.weight_norm` true: `tfp_iaf.MaskedConv2D(weight_norm=True)`,
`tfp_iaf.vae.WeightNormConv2D`) in initialisation mode: each initialises itself from the input it
actually receives (the outputs of the layers before it, already initialised), which is what makes
the initialisation correct through a deep network.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

__all__ = ["data_dependent_init", "initialize_from_output", "weight_normalize"]


def weight_normalize(kernel: tf.Tensor, scale: tf.Tensor, axes: Sequence[int]) -> tf.Tensor:
    """`scale * kernel / ||kernel||`, the norm over `axes`, broadcast along the rest.

    A slice of norm 0 (an all-masked channel) stays zero, with finite values and gradients.
    """
    sq_norm = tf.reduce_sum(tf.square(kernel), axis=axes, keepdims=True)
    safe = tf.where(sq_norm > 0, sq_norm, tf.ones_like(sq_norm))
    return kernel * (scale * tf.math.rsqrt(safe))


def initialize_from_output(
    layer, t: tf.Tensor, scale: tf.Variable, bias: tf.Variable | None, init_scale: float
) -> tf.Tensor:
    """Sets `scale` (`g`) and `bias` (`b`) of `layer` from `t`, its output for `g = 1, b = 0`.

    Returns:
      The layer's output with the new `g` and `b`; `layer.initializing` is reset.

    Raises:
      ValueError: called inside a graph (initialisation assigns from a concrete batch).
    """
    if not tf.executing_eagerly():
        raise ValueError(
            f"`{layer.name}`: data-dependent initialisation must run eagerly; got a graph call"
        )
    t32 = tf.cast(t, tf.float32)
    mean, var = tf.nn.moments(t32, axes=list(range(t32.shape.rank - 1)))
    # A channel that is constant on the batch (e.g. fed the zero-initialised top-level input of
    # the ResNet VAE) has no scale to match: it keeps `g = init_scale` rather than a huge
    # `init_scale / sqrt(eps)` that would blow up once its input varies.
    g = tf.where(var > 1e-6, init_scale * tf.math.rsqrt(var + 1e-8), init_scale)
    scale.assign(tf.cast(g, scale.dtype))
    layer.initializing = False
    if bias is None:  # a layer without a bias keeps its mean
        return tf.cast(t32 * g, t.dtype)
    bias.assign(tf.cast(-mean * g, bias.dtype))
    return tf.cast((t32 - mean) * g, t.dtype)


def data_dependent_init(model, *args, **kwargs):
    """Initialises every weight-normalised layer of `model` from one eager `model(*args)`.

    Returns:
      What the call returns.

    Raises:
      ValueError: `model` has no weight-normalised layer, or the call did not reach all of them.
    """
    # A network that merely holds weight-normalised layers (a `ConvMADE(weight_norm=True)`)
    # has the flag too, but no `initializing` state: only the layers themselves take part.
    layers = [
        m
        for m in model.submodules
        if getattr(m, "weight_norm", False) is True and hasattr(m, "initializing")
    ]
    if not layers:
        raise ValueError(
            f"`model` {model.name!r} has no weight-normalised layer to initialise "
            "(WeightNormConv2D, or MaskedConv2D with weight_norm=True)"
        )
    for layer in layers:
        layer.initializing = True
    try:
        out = model(*args, **kwargs)
    finally:
        missed = [layer.name for layer in layers if layer.initializing]
        for layer in layers:
            layer.initializing = False
    if missed:
        raise ValueError(f"the call of `model` did not reach the layers {missed}")
    return out
