"""Degrees and masks for masked autoregressive networks, in pure NumPy.

Everything here runs once, when a network is built; nothing is rebuilt per call.

Conventions (MADE, Germain et al. 2015, arXiv:1502.03509):

- Every input position gets a *degree* in `1..K`; the output at a position of degree `d` may depend
  only on inputs of degree `< d`. An `order` lists positions in generation order, so
  `degrees[order[i]] == i + 1`.
- A hidden unit of degree `m` may see inputs of degree `<= m`; a unit of degree `m'` in the next
  hidden layer may see units of degree `<= m'`; an output of degree `d` may see hidden units of
  degree `< d`. Composing the masks then makes output `d` depend on inputs `< d` only.
- Masks are `[fan_in, fan_out]` arrays of 0/1, the layout of a dense kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "dense_input_mask",
    "dense_hidden_mask",
    "dense_output_mask",
    "hidden_degrees",
    "input_degrees",
    "made_masks",
    "resolve_order",
]

OrderSpec = str | Sequence[int] | np.ndarray


def resolve_order(event_size: int, order: OrderSpec, seed: int | None = None) -> np.ndarray:
    """Returns the generation order as a permutation of `range(event_size)`.

    Args:
      event_size: number of positions.
      order: "left-to-right", "right-to-left", "random" (a permutation drawn with `seed`), or an
        explicit permutation of `range(event_size)`; `order[0]` is generated first.
      seed: seed for "random".

    Returns:
      int64 array, a permutation of `range(event_size)`.

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
      max_degree: the largest useful degree, `event_size - 1` (0 when `event_size == 1`: such units
        see no input, only the context).
      method: "equal" spreads the units evenly over `min_degree..max_degree`; "random" draws them
        uniformly from that range.
      min_degree: the smallest degree (the previous layer's smallest, for "random").
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


def dense_input_mask(in_degrees: np.ndarray, out_degrees: np.ndarray) -> np.ndarray:
    """Mask from inputs (or hidden units) to hidden units: unit `m` sees degrees `<= m`."""
    return (in_degrees[:, None] <= out_degrees[None, :]).astype(np.float32)


dense_hidden_mask = dense_input_mask


def dense_output_mask(
    hidden: np.ndarray, out_degrees: np.ndarray, num_params: int = 1
) -> np.ndarray:
    """Mask from the last hidden layer to the outputs: output `d` sees degrees `< d` (exclusive).

    The output columns are laid out position-major, `[event_size, num_params]` flattened, so that
    reshaping the output to `[..., event_size, num_params]` groups a position's parameters.
    """
    mask = (hidden[:, None] < out_degrees[None, :]).astype(np.float32)
    return np.repeat(mask, num_params, axis=1)


def made_masks(
    event_size: int,
    hidden_units: Sequence[int],
    num_params: int = 1,
    order: OrderSpec = "left-to-right",
    method: str = "equal",
    seed: int | None = None,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Degrees and masks of a MADE network.

    Args:
      event_size: number of input positions.
      hidden_units: widths of the hidden layers.
      num_params: parameters per position in the output.
      order: generation order, see `resolve_order`.
      method: hidden degree assignment, "equal" or "random".
      seed: seed for "random" order and degrees.

    Returns:
      `(in_degrees, layer_degrees, masks)`: the input degrees `[event_size]`, the degrees of each
      hidden layer, and one mask per dense layer (`len(hidden_units) + 1` of them).
    """
    rng = np.random.default_rng(seed)
    degrees_in = input_degrees(event_size, order, seed=rng.integers(2**31))
    layer_degrees = []
    low = 1
    for units in hidden_units:
        deg = hidden_degrees(units, event_size - 1, method, low, seed=rng.integers(2**31))
        layer_degrees.append(deg)
        low = int(deg.min())
    masks = []
    prev = degrees_in
    for deg in layer_degrees:
        masks.append(dense_input_mask(prev, deg))
        prev = deg
    masks.append(dense_output_mask(prev, degrees_in, num_params))
    return degrees_in, layer_degrees, masks
