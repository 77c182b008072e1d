"""The stacks users build: IAF steps on MADE or ConvMADE networks, orders alternating.

The only module that knows both the bijector and the concrete networks.
"""

from __future__ import annotations

from collections.abc import Sequence

from tfp_iaf import _checks
from tfp_iaf import masks as masks_lib
from tfp_iaf.conv_made import ConvMADE
from tfp_iaf.iaf import IAFStack
from tfp_iaf.made import MADE

__all__ = ["conv_iaf_stack", "dense_iaf_stack"]


def dense_iaf_stack(
    event_size: int,
    num_steps: int,
    hidden_units: Sequence[int],
    *,
    context_size: int | None = None,
    gated: bool = False,
    forget_bias: float = 2.0,
    activation="elu",
    residual: bool = False,
    dtype="float32",
    seed: int | None = None,
    validate_args: bool = False,
    name: str = "iaf_stack",
) -> IAFStack:
    """`num_steps` IAF steps on MADE networks, the order reversed between consecutive steps.

    Args:
      event_size: latent dimension.
      num_steps: number of IAF steps `T`.
      hidden_units: MADE hidden widths (each at least `event_size - 1`).
      context_size: size of the encoder's context `h`, or None.
      gated: gated or affine updates.
      forget_bias: gate bias for gated updates.
      activation: MADE activation.
      residual: residual hidden layers in the MADEs.
      dtype: float dtype of the networks.
      seed: int seed of the networks' initial weights (step `t` gets `seed + t`), or None.
      validate_args: checks on the steps' inputs.
      name: name of the stack.

    Returns:
      An `IAFStack`; pass `context=` through `bijector_kwargs`.

    Raises:
      TypeError: a `num_steps` that is not an int (bools included), a `dtype` that is not
        floating-point, or what `MADE` raises.
      ValueError: `num_steps < 1`, or what `MADE` raises.
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    networks = [
        MADE(
            event_size,
            hidden_units,
            context_size=context_size,
            order="left-to-right" if t % 2 == 0 else "right-to-left",
            activation=activation,
            residual=residual,
            dtype=dtype,
            seed=None if seed is None else seed + t,
            name=f"made_{t}",
        )
        for t in range(num_steps)
    ]
    return IAFStack.from_networks(
        networks, gated=gated, forget_bias=forget_bias, validate_args=validate_args, name=name
    )


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
    log_scale_bound: float | None = 5.0,
    network_kwargs: dict | None = None,
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
      order: order of the first step, one of `tfp_iaf.masks.CONV_ORDERS`.
      gated: gated or affine updates.
      forget_bias: gate bias for gated updates.
      activation: ConvMADE activation.
      residual: residual hidden layers.
      weight_norm: weight-normalised masked convolutions.
      log_scale_bound: the affine steps' soft bound on `|log_sigma|`, or None for none (see
        `InverseAutoregressiveFlow`).
      network_kwargs: more `ConvMADE` arguments (e.g. `output_scale`, `project_context`).
      dtype: float dtype of the networks.
      validate_args: checks on the steps' inputs.
      name: name of the stack.

    Returns:
      An `IAFStack` with `forward_min_event_ndims == 3`.

    Raises:
      ValueError: `num_steps < 1`, or what `ConvMADE` raises.
      TypeError: a `dtype` that is not floating-point, or what `ConvMADE` raises.

    Examples:
      >>> import tensorflow as tf
      >>> stack = conv_iaf_stack((4, 4, 2), num_steps=2, filters=[4], order="channel")
      >>> [s.network.order for s in stack.steps]
      ['channel', 'channel_reversed']
      >>> stack.forward(tf.zeros([3, 4, 4, 2])).shape
      TensorShape([3, 4, 4, 2])
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    order = masks_lib.check_order(order)
    networks = []
    for t in range(num_steps):
        network = ConvMADE(
            event_shape,
            filters,
            kernel_size=kernel_size,
            context_channels=context_channels,
            order=order if t % 2 == 0 else masks_lib.reversed_order(order),
            residual=residual,
            activation=activation,
            weight_norm=weight_norm,
            dtype=dtype,
            name=f"conv_made_{t}",
            **(network_kwargs or {}),
        )
        networks.append(network)
    return IAFStack.from_networks(
        networks,
        gated=gated,
        forget_bias=forget_bias,
        log_scale_bound=log_scale_bound,
        validate_args=validate_args,
        name=name,
    )
