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

    MADE masks with sorted degrees are block triangular: about half their entries are zero. The
    kernel is stored as `num_blocks` column blocks, each only as tall as the rows its mask uses,
    so the zero part is neither stored nor multiplied (about `(K + 1) / 2K` of the dense work for
    `K` blocks). A mask without such structure is kept as one block.

    Shapes: `x: [..., fan_in] -> y: [..., fan_out]` with `mask: [fan_in, fan_out]`.

    Args:
      mask: `[fan_in, fan_out]` array of 0/1.
      kernel_initializer: initializer of the dense kernel, before masking and blocking (so the
        weight scale does not depend on the blocking); masked entries start at zero.
      use_bias: whether to add a bias.
      num_blocks: number of column blocks to try.
      **kwargs: passed to `tf_keras.layers.Layer`.
    """

    def __init__(
        self,
        mask: np.ndarray,
        kernel_initializer="glorot_uniform",
        use_bias: bool = True,
        num_blocks: int = 4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        mask = np.asarray(mask, dtype=np.float32)
        if mask.ndim != 2:
            raise ValueError(f"`mask` must be a [fan_in, fan_out] matrix; got shape {mask.shape}")
        self._mask_np = mask
        self.units = mask.shape[1]
        self.kernel_initializer = tf_keras.initializers.get(kernel_initializer)
        self.use_bias = use_bias
        self.blocks = tuple(_column_blocks(mask, num_blocks))

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
        # Masks live as eager tensors that tf.function captures by reference: as graph constants
        # they would be copied into every traced graph (hundreds of MiB for wide MADEs).
        with tf.init_scope():
            self._block_masks = [
                None if block.all() else tf.constant(block, dtype=self.dtype)
                for block in (self._mask_np[r0:r1, c0:c1] for r0, r1, c0, c1 in self.blocks)
            ]
            full = self.kernel_initializer(self._mask_np.shape, dtype=self.dtype) * self._mask_np
        self.kernels = []
        for i, (r0, r1, c0, c1) in enumerate(self.blocks):
            name = "kernel" if len(self.blocks) == 1 else f"kernel_{i}"
            value = full[r0:r1, c0:c1]
            self.kernels.append(
                None
                if r1 == r0
                else self.add_weight(
                    name, shape=value.shape, initializer=lambda *_, v=value, **__: v
                )
            )
        self.bias = (
            self.add_weight("bias", shape=(self.units,), initializer="zeros")
            if self.use_bias
            else None
        )
        super().build(input_shape)

    def _block_kernel(self, i):
        mask = self._block_masks[i]
        return self.kernels[i] if mask is None else self.kernels[i] * mask

    def masked_kernel(self) -> tf.Tensor:
        """The full `[fan_in, fan_out]` kernel as used in the computation, `kernel * mask`."""
        fan_in = self._mask_np.shape[0]
        columns = []
        for i, (r0, r1, c0, c1) in enumerate(self.blocks):
            if r1 == r0:
                columns.append(tf.zeros([fan_in, c1 - c0], self.dtype))
            else:
                columns.append(tf.pad(self._block_kernel(i), [[r0, fan_in - r1], [0, 0]]))
        return columns[0] if len(columns) == 1 else tf.concat(columns, axis=1)

    def call(self, x):
        batch_shape = tf.shape(x)[:-1]
        x2 = tf.reshape(x, [-1, self._mask_np.shape[0]])
        parts = []
        for i, (r0, r1, c0, c1) in enumerate(self.blocks):
            if r1 == r0:
                parts.append(tf.zeros([tf.shape(x2)[0], c1 - c0], x2.dtype))
            else:
                rows = x2 if r1 - r0 == x2.shape[1] else x2[:, r0:r1]
                parts.append(tf.matmul(rows, self._block_kernel(i)))
        y = parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)
        if self.bias is not None:
            y = tf.nn.bias_add(y, self.bias)
        y = tf.reshape(y, tf.concat([batch_shape, [self.units]], axis=0))
        y.set_shape(x.shape[:-1].concatenate([self.units]))
        return y


def _column_blocks(mask: np.ndarray, num_blocks: int) -> list[tuple[int, int, int, int]]:
    """`(row_start, row_end, col_start, col_end)` per column block: the rows its mask uses.

    Falls back to one dense block when blocking would save less than 15% of the work.
    """
    fan_in, fan_out = mask.shape
    edges = np.linspace(0, fan_out, min(num_blocks, fan_out) + 1).astype(int)
    blocks = []
    for c0, c1 in zip(edges[:-1], edges[1:], strict=True):
        rows = np.flatnonzero(mask[:, c0:c1].any(axis=1))
        blocks.append(
            (int(rows.min()), int(rows.max()) + 1, c0, c1) if rows.size else (0, 0, c0, c1)
        )
    work = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in blocks)
    if work > 0.85 * fan_in * fan_out:
        return [(0, fan_in, 0, fan_out)]
    return blocks
