"""The ResNet VAE's weight-normalised convolution, plain or transposed.

Its weight normalisation and data-dependent initialisation are the package's one implementation
(`tfp_iaf.weight_norm`), which the masked convolutions of the IAF networks use too
(`tfp_iaf.MaskedConv2D(weight_norm=True)`).
"""

from __future__ import annotations

import tensorflow as tf

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras
from tfp_iaf.weight_norm import initialize_from_output, weight_normalize

__all__ = ["WeightNormConv2D"]


class WeightNormConv2D(tf_keras.layers.Layer):
    """A weight-normalised convolution (`transpose=True`: transposed), SAME padding.

    - `y = conv(x, g * v / ||v||) + b` (see `tfp_iaf.weight_norm`), the norm over the kernel's
      spatial and input-channel axes, for transposed convolutions too.

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
        self.filters = _checks.positive_int("filters", filters)
        self.kernel_size = _checks.positive_int("kernel_size", kernel_size)
        self.strides = _checks.positive_int("strides", strides)
        self.transpose = transpose
        self.init_scale = _checks.finite_float("init_scale", init_scale, positive=True)
        self.weight_norm = True  # what `tfp_iaf.data_dependent_init` looks for
        self.initializing = False

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

    def _kernel(self, g) -> tf.Tensor:
        """`g * v / ||v||` per output channel."""
        if self.transpose:  # conv2d_transpose kernels are [k, k, out, in]
            return weight_normalize(self.v, g[:, None], axes=[0, 1, 3])
        return weight_normalize(self.v, g, axes=[0, 1, 2])

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
            t = self._conv(x, self._kernel(tf.ones_like(self.g)))
            return initialize_from_output(self, t, self.g, self.b, self.init_scale)
        y = self._conv(x, self._kernel(self.g))
        return tf.nn.bias_add(y, tf.cast(self.b, y.dtype))
