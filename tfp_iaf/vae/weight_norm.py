"""Weight-normalised 2-D (transposed) convolution with data-dependent initialisation.

Salimans & Kingma 2016 (https://arxiv.org/abs/1602.07868), as the IAF paper's ResNet VAE uses it:

- per output channel `o`: `w[..., o] = g[o] * v[..., o] / ||v[..., o]||` (the norm over the
  kernel's spatial and input-channel axes, for transposed convolutions too), `y = conv(x, w) + b`;
- data-dependent initialisation on one batch: with `t = conv(x, v / ||v||)` and `m[o]`, `s[o]` the
  mean and standard deviation of `t[..., o]` over the batch and spatial axes, set
  `g[o] = init_scale / s[o]` and `b[o] = -m[o] * g[o]`, so that on that batch every output channel
  has mean 0 and standard deviation `init_scale` (a channel constant on the batch keeps
  `g[o] = init_scale`).

`data_dependent_init(model, *args)` runs the model once eagerly with every such layer in
initialisation mode: each layer initialises itself from the input it actually receives (the
outputs of the layers before it, already initialised), which is what makes the initialisation
correct through a deep network.
"""

from __future__ import annotations

import tensorflow as tf

from tfp_iaf._keras import tf_keras

__all__ = ["WeightNormConv2D", "data_dependent_init"]


class WeightNormConv2D(tf_keras.layers.Layer):
    """A weight-normalised convolution (`transpose=True`: transposed), SAME padding.

    Shapes: `x: [batch, H, W, C_in] -> [batch, H / s, W / s, filters]` (`H * s` transposed).

    Args:
      filters: output channels.
      kernel_size: kernel size (square).
      strides: stride.
      transpose: a transposed convolution (upsampling by `strides`).
      init_scale: output standard deviation after `data_dependent_init` (0.1, the authors'
        default, keeps the initial log-scales and residual branches small).
      **kwargs: passed to `tf_keras.layers.Layer`.

    Raises:
      ValueError: a non-positive `filters`, `kernel_size` or `strides`, or a non-positive
        `init_scale`; at call time, initialisation mode inside a `tf.function`.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        transpose: bool = False,
        init_scale: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("filters", filters),
            ("kernel_size", kernel_size),
            ("strides", strides),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}")
        if not init_scale > 0:
            raise ValueError(f"`init_scale` must be positive; got {init_scale!r}")
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
        self.transpose = transpose
        self.init_scale = float(init_scale)
        self.initializing = False  # set by `data_dependent_init`

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        k = self.kernel_size
        # conv2d kernels are [k, k, in, out]; conv2d_transpose kernels [k, k, out, in].
        shape = (k, k, self.filters, fan_in) if self.transpose else (k, k, fan_in, self.filters)
        init = tf_keras.initializers.RandomNormal(stddev=0.05)
        self.v = self.add_weight("v", shape=shape, initializer=init)
        self.g = self.add_weight("g", shape=(self.filters,), initializer="ones")
        self.b = self.add_weight("b", shape=(self.filters,), initializer="zeros")
        super().build(input_shape)

    def _direction(self) -> tf.Tensor:
        """`v / ||v||` per output channel."""
        axes = [0, 1, 3] if self.transpose else [0, 1, 2]
        return self.v * tf.math.rsqrt(tf.reduce_sum(tf.square(self.v), axis=axes, keepdims=True))

    def _conv(self, x, kernel):
        kernel = tf.cast(kernel, x.dtype)
        if not self.transpose:
            return tf.nn.conv2d(x, kernel, self.strides, "SAME")
        shape = tf.shape(x)
        out_shape = tf.stack(
            [shape[0], shape[1] * self.strides, shape[2] * self.strides, self.filters]
        )
        return tf.nn.conv2d_transpose(x, kernel, out_shape, self.strides, "SAME")

    def call(self, x):
        if self.initializing:
            return self._initialize(x)
        g = self.g[:, None] if self.transpose else self.g
        y = self._conv(x, self._direction() * g)
        return tf.nn.bias_add(y, tf.cast(self.b, y.dtype))

    def _initialize(self, x):
        if not tf.executing_eagerly():
            raise ValueError(
                f"`{self.name}`: data-dependent initialisation must run eagerly; got a graph call"
            )
        t = tf.cast(self._conv(x, self._direction()), tf.float32)
        mean, var = tf.nn.moments(t, axes=[0, 1, 2])
        # A channel that is constant on the batch (e.g. fed the zero-initialised top-level
        # input of the ResNet VAE) has no scale to match: it keeps `g = init_scale` rather
        # than a huge `init_scale / sqrt(eps)` that would blow up once its input varies.
        scale = tf.where(var > 1e-6, self.init_scale * tf.math.rsqrt(var + 1e-8), self.init_scale)
        self.g.assign(scale)
        self.b.assign(-mean * scale)
        self.initializing = False
        return tf.cast((t - mean) * scale, x.dtype)


def data_dependent_init(model: tf_keras.layers.Layer, *args, **kwargs):
    """Initialises every `WeightNormConv2D` of `model` from one eager `model(*args, **kwargs)`.

    Returns:
      What the call returns.

    Raises:
      ValueError: `model` has no `WeightNormConv2D`, or the call did not reach all of them.
    """
    layers = [m for m in model.submodules if isinstance(m, WeightNormConv2D)]
    if not layers:
        raise ValueError(f"`model` {model.name!r} has no WeightNormConv2D layer to initialise")
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
