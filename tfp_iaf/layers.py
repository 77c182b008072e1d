"""Masked layers: the building blocks of autoregressive networks."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfp_iaf._keras import tf_keras

__all__ = ["MaskedDense"]


class MaskedDense(tf_keras.layers.Layer):
    """A dense layer whose kernel is multiplied by a fixed 0/1 mask on every call.

    - `y = x @ (kernel * mask) + bias`

    The mask is applied in the computation, not through a kernel constraint, so the layer stays
    autoregressive for any kernel values: restored checkpoints, hand-written updates or weights
    assigned directly. (TFP's `AutoregressiveNetwork` masks through a constraint, and its flow
    stops being invertible once the kernel changes outside an optimizer step.)

    Shapes: `x: [..., fan_in] -> y: [..., fan_out]` with `mask: [fan_in, fan_out]`.

    Args:
      mask: `[fan_in, fan_out]` array of 0/1.
      kernel_initializer: initializer of the unmasked kernel; masked entries are zeroed at
        initialisation too, so that the kernel's norm reflects what is used.
      use_bias: whether to add a bias.
      **kwargs: passed to `tf_keras.layers.Layer`.
    """

    def __init__(
        self,
        mask: np.ndarray,
        kernel_initializer="glorot_uniform",
        use_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        mask = np.asarray(mask, dtype=np.float32)
        if mask.ndim != 2:
            raise ValueError(f"`mask` must be a [fan_in, fan_out] matrix; got shape {mask.shape}")
        self._mask_np = mask
        self._unmasked = bool(mask.all())  # an all-ones mask: a plain dense layer, no multiply
        self.units = mask.shape[1]
        self.kernel_initializer = tf_keras.initializers.get(kernel_initializer)
        self.use_bias = use_bias

    @property
    def mask(self) -> np.ndarray:
        return self._mask_np

    def build(self, input_shape):
        fan_in = tf.TensorShape(input_shape)[-1]
        if fan_in is not None and fan_in != self._mask_np.shape[0]:
            raise ValueError(
                f"MaskedDense `{self.name}` expects {self._mask_np.shape[0]} input features "
                f"(mask shape {self._mask_np.shape}); got input shape {tuple(input_shape)}"
            )
        init = self.kernel_initializer
        mask = self._mask_np

        def masked_init(shape, dtype=None):
            return init(shape, dtype=dtype) * tf.constant(mask, dtype=dtype)

        if self._unmasked:
            masked_init = init

        self.kernel = self.add_weight("kernel", shape=mask.shape, initializer=masked_init)
        self.bias = (
            self.add_weight("bias", shape=(self.units,), initializer="zeros")
            if self.use_bias
            else None
        )
        super().build(input_shape)

    def masked_kernel(self) -> tf.Tensor:
        """The kernel as used in the computation, `kernel * mask`."""
        if self._unmasked:
            return self.kernel
        return self.kernel * tf.constant(self._mask_np, dtype=self.kernel.dtype)

    def call(self, x):
        batch_shape = tf.shape(x)[:-1]
        y = tf.matmul(tf.reshape(x, [-1, self._mask_np.shape[0]]), self.masked_kernel())
        if self.bias is not None:
            y = tf.nn.bias_add(y, self.bias)
        y = tf.reshape(y, tf.concat([batch_shape, [self.units]], axis=0))
        y.set_shape(x.shape[:-1].concatenate([self.units]))
        return y
