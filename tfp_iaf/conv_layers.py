"""Masked 2-D convolution: the building block of convolutional autoregressive networks."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfp_iaf._keras import tf_keras

__all__ = ["MaskedConv2D"]


class MaskedConv2D(tf_keras.layers.Layer):
    """A 2-D convolution (SAME padding, stride 1) whose kernel is multiplied by a fixed 0/1 mask.

    - `y = conv2d(x, kernel * mask) + bias`;
    - with `weight_norm=True` (Salimans & Kingma 2016), per output channel `o`:
      `w[..., o] = g[o] * (v * mask)[..., o] / ||(v * mask)[..., o]||`, the norm taken over the
      masked kernel (what the computation uses), so `||w[..., o]|| = g[o]` exactly; a channel
      whose mask is all zero stays zero.

    The mask is applied in the computation, not through a kernel constraint, so the layer stays
    autoregressive for any kernel values (restored checkpoints, weights assigned directly).
    Masks come from `tfp_iaf.conv_masks`.

    Shapes: `x: [..., H, W, fan_in] -> y: [..., H, W, fan_out]` with `mask: [k, k, fan_in,
    fan_out]`; any number of leading batch dimensions (flattened for the convolution).

    Args:
      mask: `[k, k, fan_in, fan_out]` array of 0/1, `k` odd.
      kernel_initializer: initializer of the unmasked kernel (`v` under weight normalisation);
        masked entries are zeroed at initialisation too.
      use_bias: whether to add a bias.
      weight_norm: reparametrise the kernel by direction and per-channel norm `g`.
      scale_initializer: initializer of `g` (weight normalisation only); the default, ones,
        keeps unit-variance inputs at unit variance.
      **kwargs: passed to `tf_keras.layers.Layer`.

    Raises:
      ValueError: `mask` is not `[k, k, fan_in, fan_out]` with odd `k`, or the input's channels
        do not match `fan_in`.

    Examples:

    >>> import numpy as np, tensorflow as tf
    >>> from tfp_iaf.conv_masks import conv_kernel_mask
    >>> mask = conv_kernel_mask(3, np.arange(2), np.arange(2), "raster", exclusive=True)
    >>> MaskedConv2D(mask)(tf.zeros([5, 4, 4, 2])).shape
    TensorShape([5, 4, 4, 2])
    """

    def __init__(
        self,
        mask: np.ndarray,
        kernel_initializer="glorot_uniform",
        use_bias: bool = True,
        weight_norm: bool = False,
        scale_initializer="ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        mask = np.asarray(mask, dtype=np.float32)
        if mask.ndim != 4 or mask.shape[0] != mask.shape[1] or mask.shape[0] % 2 == 0:
            raise ValueError(
                "`mask` must be a [k, k, fan_in, fan_out] array with odd k; got shape "
                f"{mask.shape}"
            )
        self._mask_np = mask
        self._unmasked = bool(mask.all())  # an all-ones mask: a plain convolution, no multiply
        self.kernel_size = mask.shape[0]
        self.filters = mask.shape[3]
        self.kernel_initializer = tf_keras.initializers.get(kernel_initializer)
        self.scale_initializer = tf_keras.initializers.get(scale_initializer)
        self.use_bias = use_bias
        self.weight_norm = weight_norm

    @property
    def mask(self) -> np.ndarray:
        return self._mask_np

    def build(self, input_shape):
        fan_in = tf.TensorShape(input_shape)[-1]
        if fan_in is not None and fan_in != self._mask_np.shape[2]:
            raise ValueError(
                f"MaskedConv2D `{self.name}` expects {self._mask_np.shape[2]} input channels "
                f"(mask shape {self._mask_np.shape}); got input shape {tuple(input_shape)}"
            )
        init = self.kernel_initializer
        mask = self._mask_np

        def masked_init(shape, dtype=None):
            return init(shape, dtype=dtype) * tf.constant(mask, dtype=dtype)

        self.kernel = self.add_weight(
            "kernel", shape=mask.shape, initializer=init if self._unmasked else masked_init
        )
        self.scale = (
            self.add_weight("scale", shape=(self.filters,), initializer=self.scale_initializer)
            if self.weight_norm
            else None
        )
        self.bias = (
            self.add_weight("bias", shape=(self.filters,), initializer="zeros")
            if self.use_bias
            else None
        )
        super().build(input_shape)

    def masked_kernel(self) -> tf.Tensor:
        """The kernel as used in the computation: `kernel * mask`, weight-normalised if asked."""
        kernel = self.kernel
        if not self._unmasked:
            kernel = kernel * tf.constant(self._mask_np, dtype=kernel.dtype)
        if self.scale is None:
            return kernel
        sq_norm = tf.reduce_sum(tf.square(kernel), axis=[0, 1, 2])
        # An all-masked channel has norm 0; its kernel is zero anyway, so divide by 1 instead
        # (keeps values and gradients finite).
        safe = tf.where(sq_norm > 0, sq_norm, tf.ones_like(sq_norm))
        return kernel * (self.scale * tf.math.rsqrt(safe))

    def call(self, x):
        x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
        if x.shape.rank is not None and x.shape.rank < 3:
            raise ValueError(
                f"MaskedConv2D `{self.name}` needs input [..., H, W, C]; got shape {x.shape}"
            )
        shape = tf.shape(x)
        batch_shape, spatial = shape[:-3], shape[-3:-1]
        x4 = tf.reshape(x, tf.concat([[-1], shape[-3:]], axis=0))
        y = tf.nn.conv2d(x4, self.masked_kernel(), strides=1, padding="SAME")
        if self.bias is not None:
            y = tf.nn.bias_add(y, self.bias)
        y = tf.reshape(y, tf.concat([batch_shape, spatial, [self.filters]], axis=0))
        y.set_shape(x.shape[:-1].concatenate([self.filters]))
        return y
