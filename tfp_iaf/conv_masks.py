"""Degrees and kernel masks for masked autoregressive convolutions (PixelCNN style), in NumPy.

Everything here runs once, when a network is built.

Conventions, for an event `[H, W, C]` and a kernel `[k, k, fan_in, fan_out]` (k odd, SAME padding,
stride 1; tap `(a, b)` of the kernel reads the input at offset `(a - k // 2, b - k // 2)`):

- Every feature map channel has a *rank* in `0..C-1`. An input channel's rank is its place in the
  order (`c` forwards, `C - 1 - c` reversed). Hidden channels are split into `C` contiguous groups
  of equal size, group `g` having rank `g`; output channels follow the event channel they
  parametrise.
- `"raster"`: positions in raster order (row by row, left to right), channels the inner index:
  degree `(i * W + j) * C + c + 1`, so the inverse needs `H * W * C` passes. A tap strictly before
  the centre in raster order is fully open; the centre tap connects ranks `r_in < r_out`
  (*exclusive*) or `r_in <= r_out` (*inclusive*); taps after the centre are closed.
- `"channel"`: autoregressive across channels only: degree `c + 1` at every position, so the
  inverse needs `C` passes. Every tap connects ranks `r_in < r_out` (exclusive) or
  `r_in <= r_out` (inclusive).
- `"raster_reversed"` / `"channel_reversed"`: the same with the order run backwards (last position
  and last channel first).
- A network uses the exclusive mask on its first layer and inclusive masks after it (PixelCNN's
  masks A and B). Along any path the rank then rises strictly somewhere and never falls, and the
  position never moves later, so an output depends only on inputs of lower degree. Hidden group 0
  sees no input at its own position (in `"channel"` order none at all), only the context added to
  the first layer: that is how the context reaches the first position of the order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CONV_ORDERS",
    "check_event_shape",
    "check_kernel_size",
    "check_order",
    "conv_input_degrees",
    "conv_kernel_mask",
    "conv_made_masks",
    "hidden_channel_ranks",
    "input_channel_ranks",
    "reversed_order",
]

CONV_ORDERS = ("raster", "raster_reversed", "channel", "channel_reversed")


def check_order(order: str) -> str:
    """Returns `order` if it is one of `CONV_ORDERS`, else raises ValueError."""
    if not isinstance(order, str) or order not in CONV_ORDERS:
        raise ValueError(f"`order` must be one of {CONV_ORDERS}; got {order!r}")
    return order


def reversed_order(order: str) -> str:
    """The same order run backwards: `"raster"` <-> `"raster_reversed"`, likewise `"channel"`."""
    order = check_order(order)
    return order[: -len("_reversed")] if order.endswith("_reversed") else order + "_reversed"


def check_event_shape(event_shape: Sequence[int]) -> tuple[int, int, int]:
    """Returns `event_shape` as `(H, W, C)` of positive ints, else raises ValueError."""
    try:
        shape = tuple(event_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) != 3
        or any(isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1 for n in shape)
    ):
        raise ValueError(
            f"`event_shape` must be (H, W, C), three positive integers; got {event_shape!r}"
        )
    return tuple(int(n) for n in shape)


def check_kernel_size(kernel_size: int) -> int:
    """Returns `kernel_size` if it is a positive odd int, else raises ValueError."""
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, int | np.integer)
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise ValueError(
            "`kernel_size` must be a positive odd integer (the centre tap is the current "
            f"position); got {kernel_size!r}"
        )
    return int(kernel_size)


def conv_input_degrees(event_shape: Sequence[int], order: str = "raster") -> np.ndarray:
    """Degrees of the input positions of an `[H, W, C]` event, as an int64 array `[H, W, C]`.

    - `"raster"`: `(i * W + j) * C + c + 1`, degrees `1..H*W*C`;
    - `"channel"`: `c + 1` at every position, degrees `1..C`;
    - reversed variants: `max_degree + 1 - degree`.

    Args:
      event_shape: `(H, W, C)`.
      order: one of `CONV_ORDERS`.

    Returns:
      int64 array `[H, W, C]`; the output at a position of degree `d` may depend only on inputs of
      degree `< d`.

    Raises:
      ValueError: a bad `event_shape` or `order`.

    Examples:

    >>> conv_input_degrees((2, 2, 2), "raster")[..., 0]
    array([[1, 3],
           [5, 7]])
    >>> conv_input_degrees((2, 2, 2), "channel_reversed")[0, 0]
    array([2, 1])
    """
    height, width, channels = check_event_shape(event_shape)
    order = check_order(order)
    if order.startswith("raster"):
        degrees = np.arange(1, height * width * channels + 1).reshape(height, width, channels)
    else:
        degrees = np.broadcast_to(np.arange(1, channels + 1), (height, width, channels))
    if order.endswith("_reversed"):
        degrees = degrees.max() + 1 - degrees
    return np.array(degrees, dtype=np.int64)


def input_channel_ranks(num_channels: int, order: str) -> np.ndarray:
    """Ranks of the event channels: `c` forwards, `C - 1 - c` for a reversed order."""
    ranks = np.arange(num_channels, dtype=np.int64)
    return ranks[::-1].copy() if check_order(order).endswith("_reversed") else ranks


def hidden_channel_ranks(filters: int, num_channels: int) -> np.ndarray:
    """Ranks of a hidden layer's channels: `C` contiguous groups of `filters // C`, ranks `0..C-1`.

    Raises:
      ValueError: `filters` is not a positive multiple of `num_channels`.
    """
    if (
        isinstance(filters, bool)
        or not isinstance(filters, int | np.integer)
        or filters < 1
        or filters % num_channels
    ):
        raise ValueError(
            f"`filters` must be positive multiples of the event's {num_channels} channels "
            f"(hidden channels are grouped by degree, {num_channels} groups of equal size); "
            f"got {filters!r}"
        )
    return np.arange(filters, dtype=np.int64) // (filters // num_channels)


def conv_kernel_mask(
    kernel_size: int,
    in_ranks: np.ndarray,
    out_ranks: np.ndarray,
    order: str = "raster",
    exclusive: bool = False,
) -> np.ndarray:
    """The 0/1 mask of a masked convolution kernel.

    - channel rule: `r_in < r_out` if `exclusive`, else `r_in <= r_out`;
    - `"raster"`: taps before the centre (rows above; the centre row left of it) fully open, the
      centre tap by the channel rule, the rest closed (mirrored for `"raster_reversed"`);
    - `"channel"` / `"channel_reversed"`: every tap by the channel rule.

    Shapes: `in_ranks: [fan_in]`, `out_ranks: [fan_out]` -> `[k, k, fan_in, fan_out]`.

    Args:
      kernel_size: `k`, odd.
      in_ranks: rank of every input channel.
      out_ranks: rank of every output channel.
      order: one of `CONV_ORDERS`; the ranks must already follow its direction.
      exclusive: strict channel rule (first layer) or not (later layers).

    Returns:
      float32 array `[k, k, fan_in, fan_out]`.

    Raises:
      ValueError: an even `kernel_size` or a bad `order`.

    Examples:

    >>> conv_kernel_mask(3, np.arange(2), np.arange(2), "raster", exclusive=True)[..., 1, 0]
    array([[1., 1., 1.],
           [1., 0., 0.],
           [0., 0., 0.]], dtype=float32)
    """
    k = check_kernel_size(kernel_size)
    order = check_order(order)
    in_ranks = np.asarray(in_ranks)
    out_ranks = np.asarray(out_ranks)
    if exclusive:
        channel_rule = in_ranks[:, None] < out_ranks[None, :]
    else:
        channel_rule = in_ranks[:, None] <= out_ranks[None, :]
    mask = np.empty((k, k, in_ranks.size, out_ranks.size), dtype=np.float32)
    if order.startswith("channel"):
        mask[...] = channel_rule
        return mask
    # Raster: index of each tap in raster order, relative to the centre.
    rel = (np.arange(k * k) - (k * k) // 2).reshape(k, k)
    if order.endswith("_reversed"):
        rel = -rel
    mask[rel < 0] = 1.0
    mask[rel > 0] = 0.0
    mask[k // 2, k // 2] = channel_rule
    return mask


def conv_made_masks(
    event_shape: Sequence[int],
    filters: Sequence[int],
    kernel_size: int = 3,
    num_params: int = 1,
    order: str = "raster",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Input degrees and kernel masks of a masked conv network (ConvMADE).

    - layer 1 (event -> `filters[0]`): exclusive;
    - hidden layers and the output layer (`filters[-1]` -> `C * num_params`): inclusive;
    - output channel `c * num_params + p` is parameter `p` of event channel `c`.

    Args:
      event_shape: `(H, W, C)`.
      filters: hidden widths, each a multiple of `C`.
      kernel_size: odd kernel size of every layer.
      num_params: parameters per event position.
      order: one of `CONV_ORDERS`.

    Returns:
      `(degrees, masks)`: the input degrees `[H, W, C]` and `len(filters) + 1` masks.

    Raises:
      ValueError: bad `event_shape`, `filters`, `kernel_size` or `order`.
    """
    _, _, channels = check_event_shape(event_shape)
    check_kernel_size(kernel_size)
    widths = list(filters) if isinstance(filters, Sequence | np.ndarray) else None
    if not widths:
        raise ValueError(f"`filters` must be a non-empty list of hidden widths; got {filters!r}")
    filters = widths
    degrees = conv_input_degrees(event_shape, order)
    ranks = [input_channel_ranks(channels, order)]
    ranks += [hidden_channel_ranks(f, channels) for f in filters]
    ranks.append(np.repeat(input_channel_ranks(channels, order), num_params))
    masks = [
        conv_kernel_mask(kernel_size, r_in, r_out, order, exclusive=(i == 0))
        for i, (r_in, r_out) in enumerate(zip(ranks[:-1], ranks[1:], strict=True))
    ]
    return degrees, masks
