"""ConvMADE: the masked convolutional autoregressive network over `[H, W, C]` events."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks, _fingerprint, conv_inverse
from tfp_iaf import masks as masks_lib
from tfp_iaf._keras import tf_keras
from tfp_iaf.autoregressive import (
    OUTPUT_INIT_SCALE,
    AutoregressiveNetwork,
    apply_masked_layers,
    layer_seed,
    output_initializer,
    seeded_initializer,
)
from tfp_iaf.layers import MaskedConv2D

__all__ = ["ConvMADE"]

# The output layer's kernel norm under weight normalisation: about what the output
# initializer gives it without.
_OUTPUT_NORM = float(np.sqrt(OUTPUT_INIT_SCALE))


class ConvMADE(AutoregressiveNetwork):
    """A masked convolutional autoregressive network (the IAF paper's CIFAR-10 posterior, §4.1).

    With `M_l` masked convolutions (`tfp_iaf.masks.conv_made_masks`) and `c` the context map:

    - first layer: `h_1 = act(M_1(x) + V c)`, `V c` the network's context projection (a 1x1
      convolution: the paper's form, the context joins the first layer only);
    - hidden: `h_l = act(M_l(h_{l-1}))` (`h_{l-1} + act(M_l(h_{l-1}))` when `residual`);
    - output: `M_out(h_L)`, reshaped to `[..., H, W, C, num_params]`.

    The output at a position of degree `d` (see `degrees`) depends only on inputs of degree `< d`,
    for any weights. Hidden group 0 sees no input at its own position, only the context, so the
    context reaches every output, the first position of the order included. The output layer
    starts near zero, so an IAF step on an untrained network is close to the identity.

    Orders (`tfp_iaf.masks`, docs/conv_orders.md):

    - `"raster"`: raster order over positions, channels inner; `H * W * C` inverse passes;
    - `"channel"`: autoregressive over channels only, all positions at once; `C` inverse passes;
    - `"raster_reversed"`, `"channel_reversed"`: the same, run backwards.

    In raster order the receptive field of stacked masked 3x3 convolutions has PixelCNN's blind
    spot (e.g. position `(i - 1, j + 2)` is never seen from `(i, j)`); a stack that reverses the
    order between steps covers it partly.

    Shapes: `x: [..., H, W, C]`, `context: [..., H, W, context_channels]` (batch shapes
    broadcast) `-> [..., H, W, C, num_params]`.

    Args:
      event_shape: `(H, W, C)`.
      filters: hidden widths (at least one layer), each a multiple of `C` (hidden channels are
        split into `C` groups by degree).
      kernel_size: odd kernel size of every masked convolution.
      num_params: parameters per event position.
      context_channels: channels of the context feature map, or None for no context.
      order: one of `"raster"`, `"raster_reversed"`, `"channel"`, `"channel_reversed"`.
      residual: add each hidden layer's input to its output (from the second hidden layer on;
        needs equal widths).
      activation: hidden activation, any `tf_keras.activations.get` name or callable.
      weight_norm: weight-normalised masked convolutions (see `MaskedConv2D`).
      kernel_initializer: initializer of the hidden kernels.
      fast_inverse: solve the inverse with `tfp_iaf.conv_inverse` (each unit computed once:
        about one forward pass of work); False runs the whole network once per pass
        (`AutoregressiveNetwork.sequential_solve`, the reference). Same results to rounding.
      output_scale: a constant multiplier of the outputs (the IAF authors' code uses 0.1).
      output_init_scale: None (default): the output layer starts near zero (and, under weight
        normalisation, is data-initialised to a standard deviation of about 0.01); a positive
        number (needs `weight_norm`): the output layer is drawn like the hidden ones, from
        `kernel_initializer`, and data-initialised to this standard deviation, as the authors'
        code does (with 1, before `output_scale`).
      project_context: True (default): the context enters through the 1x1 projection `V c`;
        False: it is added to the first layer's pre-activation as it is (`V` the identity, no
        weights; the authors' form), so `context_channels` must equal `filters[0]`.
      seed: int seed of the initial weights (each layer's initializer gets its own seed
        derived from it, as in `MADE`), or None: unseeded.
      **kwargs: passed to `tf_keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
      ValueError: a bad `event_shape` (not rank 3), an even `kernel_size`, `filters` empty or not
        multiples of `C`, a bad `order`, `num_params` or `context_channels`, `residual` with
        unequal widths, a non-positive `output_scale` or `output_init_scale`,
        `output_init_scale` without `weight_norm`, or `project_context=False` with
        `context_channels != filters[0]`. At call time: an input or context of the wrong shape.
      TypeError: `fast_inverse` is not a bool, `output_scale` / `output_init_scale` is not
        a number, or a `dtype` that is not floating-point.

    Examples:
      >>> import tensorflow as tf
      >>> net = ConvMADE((4, 4, 2), filters=[8, 8], context_channels=3)
      >>> net(tf.zeros([5, 4, 4, 2]), context=tf.zeros([5, 4, 4, 3])).shape
      TensorShape([5, 4, 4, 2, 2])
      >>> net.num_inverse_passes, ConvMADE((4, 4, 2), [8], order="channel").num_inverse_passes
      (32, 2)

    References:
      Kingma et al., Improved Variational Inference with Inverse Autoregressive Flow, 2016.
      https://arxiv.org/abs/1606.04934
      van den Oord et al., Pixel Recurrent Neural Networks, 2016 (masks A and B).
      https://arxiv.org/abs/1601.06759
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        filters: Sequence[int],
        kernel_size: int = 3,
        num_params: int = 2,
        context_channels: int | None = None,
        order: str = "raster",
        residual: bool = False,
        activation="elu",
        weight_norm: bool = False,
        kernel_initializer="glorot_uniform",
        fast_inverse: bool = True,
        output_scale: float = 1.0,
        output_init_scale: float | None = None,
        project_context: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        if not isinstance(fast_inverse, bool):
            raise TypeError(
                f"`fast_inverse` must be a bool; got {fast_inverse!r} "
                f"({type(fast_inverse).__name__})"
            )
        event_shape = _checks.event_shape_hwc("event_shape", event_shape)
        channels = event_shape[2]
        kernel_size = _checks.odd_kernel_size("kernel_size", kernel_size)
        order = masks_lib.check_order(order)
        filters = _checks.positive_int_list("filters", filters)
        if any(f % channels for f in filters):
            raise ValueError(
                f"`filters` must all be multiples of the event's C={channels} channels (hidden "
                f"channels are split into {channels} groups by degree); got {filters}"
            )
        if residual and len(set(filters)) != 1:
            raise ValueError(f"`residual=True` needs equal hidden widths; got filters={filters}")
        num_params = _checks.positive_int("num_params", num_params)
        context_channels = _checks.positive_int(
            "context_channels", context_channels, optional=True
        )
        output_scale = _checks.finite_float("output_scale", output_scale, positive=True)
        if output_init_scale is not None:
            output_init_scale = _checks.finite_float(
                "output_init_scale", output_init_scale, positive=True
            )
            if not weight_norm:
                raise ValueError(
                    f"`output_init_scale` needs `weight_norm=True`; got output_init_scale="
                    f"{output_init_scale!r} with weight_norm={weight_norm!r}"
                )
        if not project_context and context_channels not in (None, filters[0]):
            raise ValueError(
                "`project_context=False` adds the context to the first layer as it is, so "
                f"`context_channels` must equal filters[0]={filters[0]}; got {context_channels}"
            )
        degrees, masks = masks_lib.conv_made_masks(
            event_shape, filters, kernel_size, num_params, order
        )
        height, width, _ = event_shape
        super().__init__(
            event_shape,
            num_params,
            None if context_channels is None else (height, width, context_channels),
            degrees,
            **kwargs,
        )
        self.filters = filters
        self.kernel_size = kernel_size
        self.context_channels = context_channels
        self.order = order
        # The event channel the fast inverse solves at (sub-)pass `r`: the one of degree `r + 1`.
        self.channel_solve_order = np.argsort(masks_lib.channel_degrees(channels, order)).astype(
            np.int32
        )
        self.residual = residual
        self.weight_norm = weight_norm
        self.fast_inverse = fast_inverse
        self.output_scale, self.output_init_scale = output_scale, output_init_scale
        self.project_context = project_context
        self.activation = tf_keras.activations.get(activation)
        last = len(masks) - 1
        # Under weight normalisation `g` is the kernel's norm: by default the output layer starts
        # (and is data-initialised) near zero, as the small initializer makes it without.
        out_norm = _OUTPUT_NORM if output_init_scale is None else output_init_scale
        out_init = output_initializer() if output_init_scale is None else kernel_initializer
        if seed is not None:  # a seed per layer; None leaves the initializers as they are
            kernel_initializer = [
                seeded_initializer(kernel_initializer, layer_seed(seed, i)) for i in range(last)
            ]
            out_init = seeded_initializer(
                output_initializer() if output_init_scale is None else out_init,
                layer_seed(seed, last),
            )
        else:
            kernel_initializer = [kernel_initializer] * last
        self.masked_layers = [
            MaskedConv2D(
                mask,
                kernel_initializer=kernel_initializer[i] if i < last else out_init,
                weight_norm=weight_norm,
                scale_initializer=(
                    "ones" if i < last else tf_keras.initializers.Constant(out_norm)
                ),
                init_scale=1.0 if i < last else out_norm,
                dtype=self.dtype,
                name=f"masked_conv_{i}",
            )
            for i, mask in enumerate(masks)
        ]
        context_init = (
            "glorot_uniform"
            if seed is None
            else seeded_initializer("glorot_uniform", layer_seed(seed, -1))
        )
        self.context_layer = (
            self.context_projection(filters[0], name="context", kernel_initializer=context_init)
            if project_context
            else None
        )

    def _fingerprint(self) -> dict:
        # The masks follow from these; `fast_inverse` and the initialisation change no function.
        return {
            **super()._fingerprint(),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "order": self.order,
            "residual": self.residual,
            "activation": _fingerprint.activation_name(self.activation),
            "weight_norm": self.weight_norm,
            "output_scale": self.output_scale,
            "project_context": self.project_context,
        }

    def build(self, input_shape):
        height, width, channels = self.event_shape
        for layer, fan_in in zip(self.masked_layers, [channels, *self.filters], strict=True):
            self.build_sublayer(layer, (None, height, width, fan_in))
        if self.context_layer is not None:
            self.build_sublayer(self.context_layer, (None, height, width, self.context_channels))
        super().build(input_shape)

    def _flat_batch(self, x, context):
        """`(x, context, batch_shape, static_batch)`: both broadcast to one batch, flattened."""
        event = list(self.event_shape)
        batch_shape = tf.shape(x)[:-3]
        static_batch = x.shape[:-3]
        if context is not None:
            # Broadcast the batch shapes so both can be flattened to the same 4-D batch.
            batch_shape = tf.broadcast_dynamic_shape(batch_shape, tf.shape(context)[:-3])
            static_batch = tf.broadcast_static_shape(static_batch, context.shape[:-3])
            x = tf.broadcast_to(x, tf.concat([batch_shape, event], axis=0))
            context = tf.broadcast_to(
                context, tf.concat([batch_shape, self.context_shape], axis=0)
            )
            context = tf.reshape(context, [-1, *self.context_shape])
        return tf.reshape(x, [-1, *event]), context, batch_shape, static_batch

    def sequential_solve(self, y, context, solve_fn):
        """The sequential inverse at the cost of about one network pass (`fast_inverse`).

        Channel orders: `C` passes, pass `r` computing only hidden channel group `r` of every
        layer and the output channels it solves; raster orders: a loop over positions that
        computes each position's units once, from cached activations
        (`tfp_iaf.conv_inverse`). With `fast_inverse=False`, the generic loop of full
        network passes.
        """
        if not self.fast_inverse:
            return super().sequential_solve(y, context, solve_fn)
        if self.output_scale != 1.0:
            inner, scale = solve_fn, self.output_scale

            def solve_fn(y, params):  # the solvers compute the output layer's own values
                return inner(y, params * tf.cast(scale, params.dtype))

        if not self.built:
            self.build(y.shape)
        y4, context, batch_shape, static_batch = self._flat_batch(y, context)
        # An empty batch is solved as one padding member, then dropped: scatters into empty
        # tensors are errors.
        count = tf.shape(y4)[0]
        y4 = tf.pad(y4, [[0, tf.maximum(1 - count, 0)], [0, 0], [0, 0], [0, 0]])
        term = None
        if context is not None:
            context = tf.pad(context, [[0, tf.maximum(1 - count, 0)], [0, 0], [0, 0], [0, 0]])
            term = self._context_term(context)
        solver = (
            conv_inverse.raster_solve
            if self.order.startswith("raster")
            else conv_inverse.channel_solve
        )
        x, log_scale = solver(self, y4, term, solve_fn)
        shape = tf.concat([batch_shape, self.event_shape], axis=0)

        def unflatten(t):
            t = tf.reshape(t[:count], shape)
            t.set_shape(static_batch.concatenate(self.event_shape))
            return t

        return unflatten(x), unflatten(log_scale)

    def _context_term(self, context):
        return context if self.context_layer is None else self.context_layer(context)

    def call(self, x, context=None):
        event = list(self.event_shape)
        h, context, batch_shape, static_batch = self._flat_batch(x, context)
        terms = [None] * len(self.masked_layers)
        if context is not None:
            terms[0] = self._context_term(context)  # the context joins the first layer
        h = apply_masked_layers(h, self.masked_layers, terms, self.activation, self.residual)
        if self.output_scale != 1.0:
            h = h * tf.cast(self.output_scale, h.dtype)
        out = tf.reshape(h, tf.concat([batch_shape, [*event, self.num_params]], axis=0))
        out.set_shape(static_batch.concatenate([*event, self.num_params]))
        return out
