"""Degrees and dense MADE masks (pure NumPy)."""

import numpy as np
import pytest

from tfp_iaf import masks


def test_orders():
    np.testing.assert_array_equal(masks.resolve_order(4, "left-to-right"), [0, 1, 2, 3])
    np.testing.assert_array_equal(masks.resolve_order(4, "right-to-left"), [3, 2, 1, 0])
    np.testing.assert_array_equal(masks.resolve_order(3, [2, 0, 1]), [2, 0, 1])
    a, b = masks.resolve_order(9, "random", seed=3), masks.resolve_order(9, "random", seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.sort(a), np.arange(9))


def test_input_degrees_follow_order():
    # order [2, 0, 1]: position 2 first (degree 1), then 0 (degree 2), then 1 (degree 3).
    np.testing.assert_array_equal(masks.input_degrees(3, [2, 0, 1]), [2, 3, 1])
    np.testing.assert_array_equal(masks.input_degrees(3, "right-to-left"), [3, 2, 1])


@pytest.mark.parametrize("units,max_degree", [(7, 3), (3, 3), (10, 1), (5, 0)])
def test_equal_hidden_degrees_are_sorted_and_balanced(units, max_degree):
    deg = masks.hidden_degrees(units, max_degree)
    assert np.all(np.diff(deg) >= 0)
    values, counts = np.unique(deg, return_counts=True)
    np.testing.assert_array_equal(values, np.arange(min(1, max_degree), max_degree + 1))
    assert counts.max() - counts.min() <= 1


def test_exact_masks_tiny_made():
    # event_size 3, left-to-right, one hidden layer of 4 units: degrees [1, 1, 2, 2].
    degrees, layer_degrees, (m_in, m_out) = masks.made_masks(3, [4], num_params=2)
    np.testing.assert_array_equal(degrees, [1, 2, 3])
    np.testing.assert_array_equal(layer_degrees[0], [1, 1, 2, 2])
    np.testing.assert_array_equal(
        m_in,
        [[1, 1, 1, 1],  # input 1 feeds every unit (degrees >= 1)
         [0, 0, 1, 1],  # input 2 feeds degree-2 units
         [0, 0, 0, 0]],  # the last input feeds nothing
    )  # fmt: skip
    # Output columns are [position, param]: position 1 sees nothing, position 2 sees degree-1
    # units, position 3 sees all.
    np.testing.assert_array_equal(
        m_out,
        [[0, 0, 1, 1, 1, 1],
         [0, 0, 1, 1, 1, 1],
         [0, 0, 0, 0, 1, 1],
         [0, 0, 0, 0, 1, 1]],
    )  # fmt: skip


@pytest.mark.parametrize("order", ["left-to-right", "right-to-left", "random", [1, 3, 0, 2]])
@pytest.mark.parametrize("method", ["equal", "random"])
def test_composed_masks_are_autoregressive(order, method):
    degrees, _, layer_masks = masks.made_masks(
        4, [6, 5], num_params=1, order=order, method=method, seed=1
    )
    reach = layer_masks[0]
    for m in layer_masks[1:]:
        reach = (reach @ m) > 0
    allowed = degrees[:, None] < degrees[None, :]  # [input, output]
    assert not np.any(reach & ~allowed)
    if method == "equal":
        np.testing.assert_array_equal(reach, allowed)  # and every allowed path exists
