"""Degrees and masks of masked autoregressive networks, dense and convolutional, in NumPy.

Everything here runs once, when a network is built; nothing is rebuilt per call.

One vocabulary for every network (MADE, Germain et al. 2015, arXiv:1502.03509):

- Every input position gets a *degree* `1..K`: its place in the generation order, so the
  inverse needs one pass per distinct degree. The output at a position of degree `d` may depend
  only on inputs of degree `< d`.
- Every hidden unit gets a degree too, and `connect(in_degrees, out_degrees)` is the one rule:
  a hidden unit of degree `m` sees units of degree `<= m`; an output (`strict=True`) of degree
  `d` sees units of degree `< d`. Composing layers, an output depends on inputs `< d` only.
- Dense (`made_masks`): inputs `1..D`, hidden units `1..D-1`. The context reaches every layer,
  so the output of degree 1 needs no hidden unit. A layer narrower than `D - 1` (MADE's
  `allow_narrow`) leaves degrees without a unit, and an output loses the inputs of degree
  above the largest hidden degree below its own.
- Convolutional (`conv_made_masks`, PixelCNN style): the degree of an event position
  `(i, j, c)` combines its place in the spatial order with its *channel degree*
  (`channel_degrees`: `1..C`). Hidden channels are split into `C` equal groups of channel degree
  `0..C-1` (`hidden_degrees(filters, C - 1, min_degree=0)`): the context enters only the first
  layer, so group 0, which sees no input at its own position, carries it to the first channel.
  A kernel tap before the centre in raster order is open, the centre tap follows `connect` on
  channel degrees, later taps are closed; in channel order every tap follows `connect`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfp_iaf import _checks

__all__ = [
    "CONV_ORDERS",
    "channel_degrees",
    "check_order",
    "connect",
    "conv_input_degrees",
    "conv_kernel_mask",
    "conv_made_masks",
    "hidden_degrees",
    "input_degrees",
    "made_masks",
    "resolve_order",
    "reversed_order",
]

OrderSpec = str | Sequence[int] | np.ndarray
CONV_ORDERS = ("raster", "raster_reversed", "channel", "channel_reversed")


def resolve_order(event_size: int, order: OrderSpec, seed: int | None = None) -> np.ndarray:
    """Returns the generation order as a permutation of `range(event_size)`.

    Args:
      event_size: number of positions.
      order: "left-to-right", "right-to-left", "random" (a permutation drawn with `seed`), or an
        explicit permutation of `range(event_size)`; `order[0]` is generated first.
      seed: seed for "random".

    Raises:
      ValueError: `order` is an unknown string or not a permutation of `range(event_size)`.
    """
    if isinstance(order, str):
        if order == "left-to-right":
            return np.arange(event_size)
        if order == "right-to-left":
            return np.arange(event_size)[::-1].copy()
        if order == "random":
            return np.random.default_rng(seed).permutation(event_size)
        raise ValueError(
            "`order` must be 'left-to-right', 'right-to-left', 'random' or a permutation of "
            f"range({event_size}); got {order!r}"
        )
    perm = np.asarray(order)
    if (
        perm.ndim != 1
        or perm.shape[0] != event_size
        or not np.issubdtype(perm.dtype, np.integer)
        or not np.array_equal(np.sort(perm), np.arange(event_size))
    ):
        raise ValueError(
            f"`order` must be a permutation of range({event_size}); got {np.ravel(order).tolist()}"
        )
    return perm.astype(np.int64)


def input_degrees(event_size: int, order: OrderSpec = "left-to-right", seed=None) -> np.ndarray:
    """Degrees `1..event_size` of the input positions for a generation `order`."""
    perm = resolve_order(event_size, order, seed)
    degrees = np.empty(event_size, dtype=np.int64)
    degrees[perm] = np.arange(1, event_size + 1)
    return degrees


def hidden_degrees(
    num_units: int,
    max_degree: int,
    method: str = "equal",
    min_degree: int = 1,
    seed: int | None = None,
) -> np.ndarray:
    """Degrees of one hidden layer's units, sorted ascending.

    Sorting is free (hidden units are interchangeable) and makes the units of each degree a
    contiguous slice, which the incremental inverse relies on.

    Args:
      num_units: width of the layer.
      max_degree: the largest useful degree (`event_size - 1` dense, `C - 1` conv).
      method: "equal" spreads the units evenly over `min_degree..max_degree` (contiguous groups
        of equal size when `num_units` is a multiple of the span; with fewer units than
        degrees, one unit every `span / num_units` degrees from `min_degree` on); "random"
        draws them uniformly from that range.
      min_degree: the smallest degree.
      seed: seed for "random".

    Raises:
      ValueError: unknown `method`.
    """
    low = min(min_degree, max_degree)
    span = max_degree - low + 1
    if method == "equal":
        degrees = low + (np.arange(num_units) * span) // num_units
    elif method == "random":
        degrees = np.random.default_rng(seed).integers(low, max_degree + 1, size=num_units)
    else:
        raise ValueError(f"`hidden_degrees` must be 'equal' or 'random'; got {method!r}")
    return np.sort(degrees).astype(np.int64)


def connect(in_degrees, out_degrees, strict: bool = False) -> np.ndarray:
    """The 0/1 connectivity `[fan_in, fan_out]`: `in <= out`, or `in < out` when `strict`.

    `strict` is for connections into outputs, which must not see their own degree.
    """
    in_degrees, out_degrees = np.asarray(in_degrees), np.asarray(out_degrees)
    if strict:
        return (in_degrees[:, None] < out_degrees[None, :]).astype(np.float32)
    return (in_degrees[:, None] <= out_degrees[None, :]).astype(np.float32)


def made_masks(
    event_size: int,
    hidden_units: Sequence[int],
    num_params: int = 1,
    order: OrderSpec = "left-to-right",
    method: str = "equal",
    seed: int | None = None,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Degrees and masks of a MADE network.

    The output columns are laid out position-major, `[event_size, num_params]` flattened, so
    that reshaping the output to `[..., event_size, num_params]` groups a position's parameters.

    Args:
      event_size: number of input positions.
      hidden_units: widths of the hidden layers.
      num_params: parameters per position in the output.
      order: generation order, see `resolve_order`.
      method: hidden degree assignment, "equal" or "random".
      seed: seed for "random" order and degrees.

    Returns:
      `(in_degrees, layer_degrees, masks)`: the input degrees `[event_size]`, the degrees of each
      hidden layer, and one `[fan_in, fan_out]` mask per dense layer (`len(hidden_units) + 1`).
    """
    rng = np.random.default_rng(seed)
    degrees_in = input_degrees(event_size, order, seed=rng.integers(2**31))
    layer_degrees = []
    low = 1
    for units in hidden_units:
        deg = hidden_degrees(units, event_size - 1, method, low, seed=rng.integers(2**31))
        layer_degrees.append(deg)
        low = int(deg.min())
    degrees = [degrees_in, *layer_degrees, np.repeat(degrees_in, num_params)]
    masks = [
        connect(d_in, d_out, strict=(i == len(layer_degrees)))
        for i, (d_in, d_out) in enumerate(zip(degrees[:-1], degrees[1:], strict=True))
    ]
    return degrees_in, layer_degrees, masks


def check_order(order: str) -> str:
    """Returns `order` if it is one of `CONV_ORDERS`, else raises ValueError."""
    if not isinstance(order, str) or order not in CONV_ORDERS:
        raise ValueError(f"`order` must be one of {CONV_ORDERS}; got {order!r}")
    return order


def reversed_order(order: str) -> str:
    """The same order run backwards: `"raster"` <-> `"raster_reversed"`, likewise `"channel"`."""
    order = check_order(order)
    return order[: -len("_reversed")] if order.endswith("_reversed") else order + "_reversed"


def conv_input_degrees(event_shape: Sequence[int], order: str = "raster") -> np.ndarray:
    """Degrees of the input positions of an `[H, W, C]` event, an int64 array `[H, W, C]`.

    - `"raster"`: `(i * W + j) * C + c + 1`, degrees `1..H*W*C` (channels the inner index);
    - `"channel"`: `c + 1` at every position, degrees `1..C`;
    - reversed variants: `max_degree + 1 - degree`.

    Raises:
      ValueError: a bad `event_shape` or `order`.

    Examples:
      >>> conv_input_degrees((2, 2, 2), "raster")[..., 0]
      array([[1, 3],
             [5, 7]])
      >>> conv_input_degrees((2, 2, 2), "channel_reversed")[0, 0]
      array([2, 1])
    """
    height, width, channels = _checks.event_shape_hwc("event_shape", event_shape)
    order = check_order(order)
    if order.startswith("raster"):
        degrees = np.arange(1, height * width * channels + 1).reshape(height, width, channels)
    else:
        degrees = np.broadcast_to(np.arange(1, channels + 1), (height, width, channels))
    if order.endswith("_reversed"):
        degrees = degrees.max() + 1 - degrees
    return np.array(degrees, dtype=np.int64)


def channel_degrees(num_channels: int, order: str) -> np.ndarray:
    """Channel degrees `1..C` of the event's channels: `c + 1`, or `C - c` for a reversed order."""
    degrees = np.arange(1, num_channels + 1, dtype=np.int64)
    return degrees[::-1].copy() if check_order(order).endswith("_reversed") else degrees


def conv_kernel_mask(
    kernel_size: int,
    in_degrees,
    out_degrees,
    order: str = "raster",
    strict: bool = False,
) -> np.ndarray:
    """The 0/1 mask `[k, k, fan_in, fan_out]` of a masked convolution kernel.

    - `"raster"`: taps before the centre (rows above; the centre row left of it) fully open, the
      centre tap `connect(in_degrees, out_degrees, strict)`, the rest closed (mirrored for
      `"raster_reversed"`);
    - `"channel"` / `"channel_reversed"`: every tap `connect(in_degrees, out_degrees, strict)`.

    Args:
      kernel_size: `k`, odd.
      in_degrees: channel degree of every input channel, `[fan_in]`.
      out_degrees: channel degree of every output channel, `[fan_out]`.
      order: one of `CONV_ORDERS`; the degrees must already follow its direction.
      strict: the layer feeds outputs (see `connect`).

    Raises:
      ValueError: an even `kernel_size` or a bad `order`.

    Examples:
      >>> conv_kernel_mask(3, [1, 2], [0, 1], "raster")[..., 0, 1]
      array([[1., 1., 1.],
             [1., 1., 0.],
             [0., 0., 0.]], dtype=float32)
    """
    k = _checks.odd_kernel_size("kernel_size", kernel_size)
    order = check_order(order)
    centre = connect(in_degrees, out_degrees, strict)
    mask = np.empty((k, k, *centre.shape), dtype=np.float32)
    if order.startswith("channel"):
        mask[...] = centre
        return mask
    # Raster: index of each tap in raster order, relative to the centre.
    rel = (np.arange(k * k) - (k * k) // 2).reshape(k, k)
    if order.endswith("_reversed"):
        rel = -rel
    mask[rel < 0] = 1.0
    mask[rel > 0] = 0.0
    mask[k // 2, k // 2] = centre
    return mask


def conv_made_masks(
    event_shape: Sequence[int],
    filters: Sequence[int],
    kernel_size: int = 3,
    num_params: int = 1,
    order: str = "raster",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Input degrees and kernel masks of a masked conv network (ConvMADE).

    - channel degrees: event `1..C`, hidden groups `0..C-1`, output channel `c * num_params + p`
      (parameter `p` of event channel `c`) that of event channel `c`;
    - every layer by `connect` on channel degrees, the output layer strict.

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
    _, _, channels = _checks.event_shape_hwc("event_shape", event_shape)
    _checks.odd_kernel_size("kernel_size", kernel_size)
    widths = list(filters) if isinstance(filters, Sequence | np.ndarray) else None
    if not widths:
        raise ValueError(f"`filters` must be a non-empty list of hidden widths; got {filters!r}")
    if any(not _checks.is_int(f) or f < 1 or f % channels for f in widths):
        raise ValueError(
            f"`filters` must be positive multiples of the event's {channels} channels "
            f"(hidden channels are grouped by degree, {channels} groups of equal size); "
            f"got {filters!r}"
        )
    events = channel_degrees(channels, order)
    degrees = [events, *(hidden_degrees(f, channels - 1, min_degree=0) for f in widths)]
    degrees.append(np.repeat(events, num_params))
    last = len(degrees) - 2
    masks = [
        conv_kernel_mask(kernel_size, d_in, d_out, order, strict=(i == last))
        for i, (d_in, d_out) in enumerate(zip(degrees[:-1], degrees[1:], strict=True))
    ]
    return conv_input_degrees(event_shape, order), masks
