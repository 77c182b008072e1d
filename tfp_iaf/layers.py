"""The layers the autoregressive networks are built of: masked dense and conv layers.

Masks are applied in the computation, not through a kernel constraint, so a masked layer stays
autoregressive for any kernel values: restored checkpoints, hand-written updates or weights
assigned directly. (TFP's `AutoregressiveNetwork` masks through a constraint, and its flow stops
being invertible once the kernel changes outside an optimizer step.)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras
from tfp_iaf.weight_norm import initialize_from_output, weight_normalize

__all__ = ["MaskedConv2D", "MaskedDense"]


class MaskedDense(tf_keras.layers.Layer):
    """A dense layer whose kernel is multiplied by a fixed 0/1 mask on every call.

    - `y = x @ (kernel * mask * multiplier) + bias`

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
      packed: store the kernel and the bias as one `[fan_in + 1, fan_out]` variable,
        `kernel_and_bias` (the bias its last row, never masked), computed as
        `[x, 1] @ (kernel_and_bias * [mask; 1])`: one variable to read, differentiate and
        update, and no separate bias add, where each op costs more than its arithmetic (a VI
        step's few samples: docs/benchmarks_vi.md). One block, so `num_blocks` must be 1;
        needs `use_bias`.
      multiplier: a fixed positive factor on the kernel, folded into the mask: the kernel
        starts at its initial value divided by it, so the layer computes the same function at
        initialisation, while an optimizer's step on the stored kernel moves the output by
        `multiplier` times as much. With `1 / sqrt(fan_in)` an Adam step (about the learning
        rate on every weight) moves a pre-activation by `O(sqrt(fan_in))` times the rate, not
        `O(fan_in)` (the NTK parametrisation).
      **kwargs: passed to `tf_keras.layers.Layer`.

    Raises:
      ValueError: a `mask` that is not a matrix; `packed` with `num_blocks != 1` or without a
        bias; a `multiplier` that is not a positive finite number.
    """

    def __init__(
        self,
        mask: np.ndarray,
        kernel_initializer="glorot_uniform",
        use_bias: bool = True,
        num_blocks: int = 4,
        packed: bool = False,
        multiplier: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.multiplier = _checks.finite_float("multiplier", multiplier, positive=True)
        mask = np.asarray(mask, dtype=np.float32)
        if mask.ndim != 2:
            raise ValueError(f"`mask` must be a [fan_in, fan_out] matrix; got shape {mask.shape}")
        if packed and (num_blocks != 1 or not use_bias):
            raise ValueError(
                "`packed=True` needs `num_blocks=1` and `use_bias=True`; got "
                f"num_blocks={num_blocks!r}, use_bias={use_bias!r}"
            )
        self.packed = bool(packed)
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
        if self.packed:
            self._build_packed()
            super().build(input_shape)
            return
        c = self.multiplier
        with tf.init_scope():
            self._block_masks = [
                None if block.all() and c == 1.0 else tf.constant(block * c, dtype=self.dtype)
                for block in (self._mask_np[r0:r1, c0:c1] for r0, r1, c0, c1 in self.blocks)
            ]
            full = self.kernel_initializer(self._mask_np.shape, dtype=self.dtype) * self._mask_np
            full = full / c
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

    def _build_packed(self):
        fan_in, units = self._mask_np.shape
        # The bias row is never masked nor multiplied; a mask of ones is not applied at all.
        c = self.multiplier
        mask = np.concatenate([self._mask_np * c, np.ones([1, units], np.float32)])
        with tf.init_scope():
            self._packed_mask = (
                None if mask.all() and c == 1.0 else tf.constant(mask, dtype=self.dtype)
            )
            kernel = self.kernel_initializer((fan_in, units), dtype=self.dtype) * self._mask_np
            kernel = kernel / c
            value = tf.concat([kernel, tf.zeros([1, units], self.dtype)], axis=0)
        self.kernel_and_bias = self.add_weight(
            "kernel_and_bias", shape=value.shape, initializer=lambda *_, v=value, **__: v
        )

    def _packed_kernel(self):  # [fan_in + 1, units]: the masked kernel over the bias row
        mask = self._packed_mask
        return self.kernel_and_bias if mask is None else self.kernel_and_bias * mask

    def _block_kernel(self, i):
        mask = self._block_masks[i]
        return self.kernels[i] if mask is None else self.kernels[i] * mask

    def bias_term(self) -> tf.Tensor | None:
        """The bias as used in the computation (a packed layer's last row), or None."""
        return self.kernel_and_bias[-1] if self.packed else self.bias

    def masked_kernel(self) -> tf.Tensor:
        """The `[fan_in, fan_out]` kernel as used: `kernel * mask * multiplier`."""
        fan_in = self._mask_np.shape[0]
        if self.packed:
            return self._packed_kernel()[:fan_in]
        columns = []
        for i, (r0, r1, c0, c1) in enumerate(self.blocks):
            if r1 == r0:
                columns.append(tf.zeros([fan_in, c1 - c0], self.dtype))
            else:
                columns.append(tf.pad(self._block_kernel(i), [[r0, fan_in - r1], [0, 0]]))
        return columns[0] if len(columns) == 1 else tf.concat(columns, axis=1)

    def call(self, x):
        x2 = tf.reshape(x, [-1, self._mask_np.shape[0]])
        if self.packed:
            x2 = tf.concat([x2, tf.ones_like(x2[:, :1])], axis=1)  # [x, 1]: the bias row
            y = tf.matmul(x2, self._packed_kernel())
        else:
            y = self._blocks_matmul(x2)
        y = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.units]], axis=0))
        y.set_shape(x.shape[:-1].concatenate([self.units]))
        return y

    def _blocks_matmul(self, x2):
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
        return y


# Kernels below this many entries stay one block (see `_column_blocks`).
MIN_BLOCKED_SIZE = 2**13


def _column_blocks(mask: np.ndarray, num_blocks: int) -> list[tuple[int, int, int, int]]:
    """`(row_start, row_end, col_start, col_end)` per column block: the rows its mask uses.

    Falls back to one dense block when blocking would save less than 15% of the work, or when
    the kernel is small (under `MIN_BLOCKED_SIZE` entries): there each extra matmul and concat
    costs more than the multiply-adds it saves.
    """
    fan_in, fan_out = mask.shape
    if fan_in * fan_out < MIN_BLOCKED_SIZE:
        return [(0, fan_in, 0, fan_out)]
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


class MaskedConv2D(tf_keras.layers.Layer):
    """A 2-D convolution (SAME padding, stride 1) whose kernel is multiplied by a fixed 0/1 mask.

    - `y = conv2d(x, kernel * mask) + bias`;
    - with `weight_norm=True` (Salimans & Kingma 2016), per output channel `o`:
      `w[..., o] = g[o] * (v * mask)[..., o] / ||(v * mask)[..., o]||`, the norm taken over the
      masked kernel (what the computation uses), so `||w[..., o]|| = g[o]` exactly; a channel
      whose mask is all zero stays zero.

    Masks come from `tfp_iaf.masks.conv_kernel_mask`; `tfp_iaf.data_dependent_init` initialises
    `g` and the bias from a batch (output standard deviation `init_scale`).

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
      init_scale: output standard deviation after `tfp_iaf.data_dependent_init`.
      **kwargs: passed to `tf_keras.layers.Layer`.

    Raises:
      ValueError: `mask` is not `[k, k, fan_in, fan_out]` with odd `k`, or the input's channels
        do not match `fan_in`.

    Examples:
      >>> import numpy as np, tensorflow as tf
      >>> from tfp_iaf.masks import conv_kernel_mask
      >>> mask = conv_kernel_mask(3, [1, 2], [0, 1], "raster")
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
        init_scale: float = 1.0,
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
        self.init_scale = _checks.finite_float("init_scale", init_scale, positive=True)
        self.initializing = False  # set by `tfp_iaf.data_dependent_init`

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
        scale = tf.ones_like(self.scale) if self.initializing else self.scale
        return weight_normalize(kernel, scale, axes=[0, 1, 2])

    def call(self, x):
        x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
        if x.shape.rank is not None and x.shape.rank < 3:
            raise ValueError(
                f"MaskedConv2D `{self.name}` needs input [..., H, W, C]; got shape {x.shape}"
            )
        shape = tf.shape(x)
        batch_shape, spatial = shape[:-3], shape[-3:-1]
        x4 = tf.reshape(x, tf.concat([[-1], shape[-3:]], axis=0))
        y = _conv2d(x4, self.masked_kernel())
        if self.initializing and self.scale is not None:
            y = initialize_from_output(self, y, self.scale, self.bias, self.init_scale)
        elif self.bias is not None:
            y = tf.nn.bias_add(y, self.bias)
        y = tf.reshape(y, tf.concat([batch_shape, spatial, [self.filters]], axis=0))
        y.set_shape(x.shape[:-1].concatenate([self.filters]))
        return y


def _conv2d(x4: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`conv2d` (stride 1, SAME) of `[n, H, W, C]`, an empty batch included: oneDNN's kernel
    (TensorFlow's default on x86) returns the input's shape for `n = 0`, so the batch is padded
    to one image and the output cut back to `n`."""
    if x4.shape[0] is not None and x4.shape[0] > 0:  # known non-empty: no padding
        return tf.nn.conv2d(x4, kernel, strides=1, padding="SAME")
    n = tf.shape(x4)[0]
    padded = tf.pad(x4, [[0, tf.maximum(1 - n, 0)], [0, 0], [0, 0], [0, 0]])
    return tf.nn.conv2d(padded, kernel, strides=1, padding="SAME")[:n]
