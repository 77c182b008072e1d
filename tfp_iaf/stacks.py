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
from tfp_iaf.transforms import Transform, from_update

__all__ = ["conv_iaf_stack", "dense_iaf_stack"]

# A dense stack's first order, and the reverse its next step takes.
_DENSE_ORDERS = {"left-to-right": "right-to-left", "right-to-left": "left-to-right"}


def dense_iaf_stack(
    event_size: int,
    num_steps: int,
    hidden_units: Sequence[int],
    *,
    context_size: int | None = None,
    order: str = "left-to-right",
    transform: Transform | str | dict | None = None,
    gated: bool = False,
    forget_bias: float = 2.0,
    log_scale_bound: float | None = 5.0,
    scaled_shift: bool = False,
    activation="elu",
    residual: bool = False,
    network_kwargs: dict | None = None,
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
      order: order of the first step, "left-to-right" or "right-to-left"; the steps alternate.
      transform: the steps' per-unit transform (`tfp_iaf.transforms`: an object, a kind such
        as "gated", or a config); None: the update `gated` ... `scaled_shift` describe.
      gated: gated or affine updates.
      forget_bias: gate bias for gated updates.
      log_scale_bound: the affine steps' soft bound on `|log_sigma|`, or None for none (see
        `InverseAutoregressiveFlow`).
      scaled_shift: the affine steps' shift applied before the scale.
      activation: MADE activation.
      residual: residual hidden layers in the MADEs.
      network_kwargs: more `MADE` arguments (e.g. `hidden_degrees`, `allow_narrow`).
      dtype: float dtype of the networks.
      seed: int seed of the networks' initial weights (step `t` gets `seed + t`), or None.
      validate_args: checks on the steps' inputs.
      name: name of the stack.

    Returns:
      An `IAFStack`; pass `context=` through `bijector_kwargs`.

    Raises:
      TypeError: a `num_steps` that is not an int (bools included), a `dtype` that is not
        floating-point, or what `MADE` or `InverseAutoregressiveFlow` raises.
      ValueError: `num_steps < 1`, or what `MADE` or `InverseAutoregressiveFlow` raises.
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    if order not in _DENSE_ORDERS:
        raise ValueError(f"`order` must be one of {list(_DENSE_ORDERS)}; got {order!r}")
    update = from_update(transform, gated, forget_bias, log_scale_bound, scaled_shift)
    networks = [
        MADE(
            event_size,
            hidden_units,
            num_params=update.num_params,
            context_size=context_size,
            order=order if t % 2 == 0 else _DENSE_ORDERS[order],
            activation=activation,
            residual=residual,
            dtype=dtype,
            seed=None if seed is None else seed + t,
            name=f"made_{t}",
            **(network_kwargs or {}),
        )
        for t in range(num_steps)
    ]
    return IAFStack.from_networks(
        networks, transform=transform, gated=gated, forget_bias=forget_bias,
        log_scale_bound=log_scale_bound, scaled_shift=scaled_shift, validate_args=validate_args,
        name=name,
    )  # fmt: skip


def conv_iaf_stack(
    event_shape: Sequence[int],
    num_steps: int,
    filters: Sequence[int],
    *,
    kernel_size: int = 3,
    context_channels: int | None = None,
    order: str = "raster",
    transform: Transform | str | dict | None = None,
    gated: bool = False,
    forget_bias: float = 2.0,
    log_scale_bound: float | None = 5.0,
    scaled_shift: bool = False,
    activation="elu",
    residual: bool = False,
    weight_norm: bool = False,
    network_kwargs: dict | None = None,
    dtype="float32",
    seed: int | None = None,
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
      transform: the steps' per-unit transform (`tfp_iaf.transforms`: an object, a kind such
        as "gated", or a config); None: the update `gated` ... `scaled_shift` describe.
      gated: gated or affine updates.
      forget_bias: gate bias for gated updates.
      log_scale_bound: the affine steps' soft bound on `|log_sigma|`, or None for none (see
        `InverseAutoregressiveFlow`).
      scaled_shift: the affine steps' shift applied before the scale.
      activation: ConvMADE activation.
      residual: residual hidden layers.
      weight_norm: weight-normalised masked convolutions.
      network_kwargs: more `ConvMADE` arguments (e.g. `output_scale`, `project_context`).
      dtype: float dtype of the networks.
      seed: int seed of the networks' initial weights (step `t` gets `seed + t`), or None.
      validate_args: checks on the steps' inputs.
      name: name of the stack.

    Returns:
      An `IAFStack` with `forward_min_event_ndims == 3`.

    Raises:
      ValueError: `num_steps < 1`, or what `ConvMADE` or `InverseAutoregressiveFlow` raises.
      TypeError: a `dtype` that is not floating-point, or what `ConvMADE` or
        `InverseAutoregressiveFlow` raises.

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
    update = from_update(transform, gated, forget_bias, log_scale_bound, scaled_shift)
    networks = []
    for t in range(num_steps):
        network = ConvMADE(
            event_shape,
            filters,
            kernel_size=kernel_size,
            num_params=update.num_params,
            context_channels=context_channels,
            order=order if t % 2 == 0 else masks_lib.reversed_order(order),
            residual=residual,
            activation=activation,
            weight_norm=weight_norm,
            dtype=dtype,
            seed=None if seed is None else seed + t,
            name=f"conv_made_{t}",
            **(network_kwargs or {}),
        )
        networks.append(network)
    return IAFStack.from_networks(
        networks, transform=transform, gated=gated, forget_bias=forget_bias,
        log_scale_bound=log_scale_bound, scaled_shift=scaled_shift, validate_args=validate_args,
        name=name,
    )  # fmt: skip
