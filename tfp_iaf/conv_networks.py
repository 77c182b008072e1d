"""Convolutional autoregressive networks over `[H, W, C]` events, and the conv IAF stack."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks, conv_masks
from tfp_iaf._keras import tf_keras
from tfp_iaf.conv_layers import MaskedConv2D
from tfp_iaf.iaf import IAFStack
from tfp_iaf.networks import OUTPUT_INIT_SCALE, AutoregressiveNetwork, as_tensor, small_init

__all__ = ["ConvMADE", "conv_iaf_stack"]


class ConvMADE(AutoregressiveNetwork):
    """A masked convolutional autoregressive network (the IAF paper's CIFAR-10 posterior, §4.1).

    With `M_l` masked convolutions (`tfp_iaf.conv_masks`: the first exclusive, the rest
    inclusive) and `c` the context feature map:

    - first layer: `h_1 = act(M_1(x) + V c)`, `V` an unmasked 1x1 convolution;
    - hidden: `h_l = act(M_l(h_{l-1}))` (`h_{l-1} + act(M_l(h_{l-1}))` when `residual`);
    - output: `M_out(h_L)`, reshaped to `[..., H, W, C, num_params]`.

    The output at a position of degree `d` (see `degrees`) depends only on inputs of degree `< d`,
    for any weights. Hidden group 0 sees no input at its own position, only the context, so the
    context reaches every output, the first position of the order included. The output layer
    starts near zero, so an IAF step on an untrained network is close to the identity.

    Orders (`tfp_iaf.conv_masks`, docs/conv_orders.md):

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
      **kwargs: passed to `tf_keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
      ValueError: a bad `event_shape` (not rank 3), an even `kernel_size`, `filters` empty or not
        multiples of `C`, a bad `order`, `num_params` or `context_channels`, or `residual` with
        unequal widths. At call time: an input or context of the wrong shape.

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
        **kwargs,
    ):
        event_shape = conv_masks.check_event_shape(event_shape)
        channels = event_shape[2]
        kernel_size = conv_masks.check_kernel_size(kernel_size)
        order = conv_masks.check_order(order)
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
        degrees, masks = conv_masks.conv_made_masks(
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
        self.residual = residual
        self.weight_norm = weight_norm
        self.activation = tf_keras.activations.get(activation)
        last = len(masks) - 1
        self.masked_layers = [
            MaskedConv2D(
                mask,
                kernel_initializer=kernel_initializer if i < last else small_init(),
                weight_norm=weight_norm,
                # Under weight normalisation `g` is the kernel's norm: the output layer starts
                # with about the norm the small initializer gives it without.
                scale_initializer=(
                    "ones"
                    if i < last
                    else tf_keras.initializers.Constant(float(np.sqrt(OUTPUT_INIT_SCALE)))
                ),
                dtype=self.dtype,
                name=f"masked_conv_{i}",
            )
            for i, mask in enumerate(masks)
        ]
        self.context_layer = (
            None
            if context_channels is None
            else MaskedConv2D(  # all-ones 1x1 mask: a plain, unmasked convolution
                np.ones([1, 1, context_channels, filters[0]], np.float32),
                use_bias=False,
                dtype=self.dtype,
                name="context",
            )
        )

    def build(self, input_shape):
        height, width, channels = self.event_shape
        for layer, fan_in in zip(self.masked_layers, [channels, *self.filters], strict=True):
            self.build_sublayer(layer, (None, height, width, fan_in))
        if self.context_layer is not None:
            self.build_sublayer(self.context_layer, (None, height, width, self.context_channels))
        super().build(input_shape)

    def call(self, x, context=None):
        x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
        context = as_tensor(context, self.dtype)
        self.check_inputs(x, context)
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
        h = tf.reshape(x, [-1, *event])
        terms = [None] * len(self.masked_layers)
        if context is not None:
            terms[0] = self.context_layer(context)  # the context joins after the first conv
        h = self.apply_masked_layers(h, terms)
        out = tf.reshape(h, tf.concat([batch_shape, [*event, self.num_params]], axis=0))
        out.set_shape(static_batch.concatenate([*event, self.num_params]))
        return out


def conv_iaf_stack(
    event_shape: Sequence[int],
    num_steps: int,
    filters: Sequence[int],
    *,
    kernel_size: int = 3,
    context_channels: int | None = None,
    order: str = "raster",
    gated: bool = False,
    forget_bias: float = 2.0,
    activation="elu",
    residual: bool = False,
    weight_norm: bool = False,
    dtype="float32",
    validate_args: bool = False,
    name: str = "conv_iaf_stack",
) -> IAFStack:
    """`num_steps` IAF steps on `ConvMADE` networks, the order reversed between consecutive steps.

    - step `t` uses `order` for even `t` and its reverse for odd `t`
      (`"raster"` <-> `"raster_reversed"`, `"channel"` <-> `"channel_reversed"`).

    Shapes: `x: [..., H, W, C] -> y: same`; `fldj: [...]`; `context: [..., H, W,
    context_channels]` through `bijector_kwargs={"context": h}`.

    Args:
      event_shape: `(H, W, C)` of the latent.
      num_steps: number of IAF steps `T`.
      filters: ConvMADE hidden widths (multiples of `C`).
      kernel_size: odd kernel size.
      context_channels: channels of the encoder's context map `h`, or None.
      order: order of the first step, one of `tfp_iaf.conv_masks.CONV_ORDERS`.
      gated: gated or affine updates.
      forget_bias: gate bias for gated updates.
      activation: ConvMADE activation.
      residual: residual hidden layers.
      weight_norm: weight-normalised masked convolutions.
      dtype: float dtype of the networks.
      validate_args: checks on the steps' inputs.
      name: name of the stack.

    Returns:
      An `IAFStack` with `forward_min_event_ndims == 3`.

    Raises:
      ValueError: `num_steps < 1`, or what `ConvMADE` raises.

    Examples:

    >>> import tensorflow as tf
    >>> stack = conv_iaf_stack((4, 4, 2), num_steps=2, filters=[4], order="channel")
    >>> [s.network.order for s in stack.steps]
    ['channel', 'channel_reversed']
    >>> stack.forward(tf.zeros([3, 4, 4, 2])).shape
    TensorShape([3, 4, 4, 2])
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    order = conv_masks.check_order(order)
    networks = []
    for t in range(num_steps):
        network = ConvMADE(
            event_shape,
            filters,
            kernel_size=kernel_size,
            context_channels=context_channels,
            order=order if t % 2 == 0 else conv_masks.reversed_order(order),
            residual=residual,
            activation=activation,
            weight_norm=weight_norm,
            dtype=dtype,
            name=f"conv_made_{t}",
        )
        networks.append(network)
    return IAFStack.from_networks(
        networks, gated=gated, forget_bias=forget_bias, validate_args=validate_args, name=name
    )
