"""Tests for the conv masks of tfp_iaf.masks: exact masks for tiny cases, degrees, composition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tfp_iaf import masks as cm

# Hand-written 3x3 tap patterns, indexed [row, col] of the kernel (row 0 = the row above).
BEFORE = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
AFTER = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
CENTRE = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
ALL = np.ones((3, 3), dtype=np.float32)
NONE = np.zeros((3, 3), dtype=np.float32)


def mask_reach(masks, event_shape, residual=False):
    """Boolean connectivity of a stack of masked convolutions (SAME padding), in NumPy.

    Returns `reach[i, j, o, i2, j2, c2]`: whether output channel `o` at `(i, j)` is connected to
    input channel `c2` at `(i2, j2)` through some path of open taps. An independent oracle for
    the networks' autodiff Jacobians.
    """
    height, width, channels = event_shape
    size = height * width * channels
    reach = np.eye(size, dtype=np.int64).reshape(height, width, channels, size)
    for layer, mask in enumerate(masks):
        k = mask.shape[0]
        r = k // 2
        padded = np.pad(reach, ((r, r), (r, r), (0, 0), (0, 0)))
        new = np.zeros((height, width, mask.shape[3], size), dtype=np.int64)
        for a, b in itertools.product(range(k), range(k)):
            shifted = padded[a : a + height, b : b + width]
            new += np.einsum("hwin,io->hwon", shifted, mask[a, b].astype(np.int64))
        new = (new > 0).astype(np.int64)
        if residual and 0 < layer < len(masks) - 1:
            new = np.maximum(new, reach)
        reach = new
    return reach.reshape(height, width, -1, height, width, channels).astype(bool)


def test_input_degrees_2x2x2_by_hand():
    raster = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
    channel = np.array([[[1, 2], [1, 2]], [[1, 2], [1, 2]]])
    np.testing.assert_array_equal(cm.conv_input_degrees((2, 2, 2), "raster"), raster)
    np.testing.assert_array_equal(cm.conv_input_degrees((2, 2, 2), "raster_reversed"), 9 - raster)
    np.testing.assert_array_equal(cm.conv_input_degrees((2, 2, 2), "channel"), channel)
    np.testing.assert_array_equal(
        cm.conv_input_degrees((2, 2, 2), "channel_reversed"), 3 - channel
    )
    assert cm.conv_input_degrees((2, 2, 2)).dtype == np.int64


@pytest.mark.parametrize(
    "event_shape,order,passes",
    [
        ((4, 4, 3), "raster", 48),
        ((3, 5, 2), "raster_reversed", 30),
        ((4, 4, 3), "channel", 3),
        ((3, 5, 2), "channel_reversed", 2),
    ],
)
def test_number_of_distinct_degrees(event_shape, order, passes):
    degrees = cm.conv_input_degrees(event_shape, order)
    assert degrees.shape == event_shape
    assert np.unique(degrees).size == passes
    assert degrees.min() == 1 and degrees.max() == passes


def test_hidden_channel_ranks_grouped():
    # Hidden channels: C groups of channel degree 0..C-1; event channels 1..C in the order.
    np.testing.assert_array_equal(cm.hidden_degrees(6, 2, min_degree=0), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(cm.hidden_degrees(2, 1, min_degree=0), [0, 1])
    np.testing.assert_array_equal(cm.channel_degrees(3, "raster_reversed"), [3, 2, 1])


def test_raster_exclusive_3x3_two_channels_by_hand():
    mask = cm.conv_kernel_mask(3, [1, 2], [0, 1], "raster")
    assert mask.shape == (3, 3, 2, 2) and mask.dtype == np.float32
    np.testing.assert_array_equal(mask[..., 0, 0], BEFORE)
    np.testing.assert_array_equal(mask[..., 0, 1], BEFORE + CENTRE)
    np.testing.assert_array_equal(mask[..., 1, 0], BEFORE)
    np.testing.assert_array_equal(mask[..., 1, 1], BEFORE)


def test_raster_inclusive_3x3_three_channels_by_hand():
    mask = cm.conv_kernel_mask(3, [0, 1, 2], [0, 1, 2], "raster")
    for a, b in itertools.product(range(3), range(3)):
        expected = BEFORE + CENTRE if a <= b else BEFORE
        np.testing.assert_array_equal(mask[..., a, b], expected, err_msg=f"in {a} out {b}")
    # Spelled out for one pair: channel 2 never reaches channel 1 at the same position.
    np.testing.assert_array_equal(mask[..., 2, 1], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])


def test_raster_reversed_exclusive_3x3_two_channels_by_hand():
    degrees = cm.channel_degrees(2, "raster_reversed")  # channel 1 comes first
    mask = cm.conv_kernel_mask(3, degrees, [0, 1], "raster_reversed")
    np.testing.assert_array_equal(mask[..., 0, 0], AFTER)
    np.testing.assert_array_equal(mask[..., 0, 1], AFTER)
    np.testing.assert_array_equal(mask[..., 1, 0], AFTER)
    np.testing.assert_array_equal(mask[..., 1, 1], AFTER + CENTRE)


def test_channel_exclusive_3x3_three_channels_by_hand():
    mask = cm.conv_kernel_mask(3, [1, 2, 3], [0, 1, 2], "channel")
    expected = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]])  # [in, out]: in < out
    for a, b in itertools.product(range(3), range(3)):
        np.testing.assert_array_equal(mask[..., a, b], ALL if expected[a, b] else NONE)


def test_channel_reversed_inclusive_3x3_two_channels_by_hand():
    degrees = cm.channel_degrees(2, "channel_reversed")
    mask = cm.conv_kernel_mask(3, [0, 0, 1, 1], degrees, "channel_reversed", strict=True)
    # Hidden groups [0, 0, 1, 1] -> event channels (ranks [1, 0]): rank 1 sees both groups.
    for a in range(4):
        np.testing.assert_array_equal(mask[..., a, 0], ALL)
        np.testing.assert_array_equal(mask[..., a, 1], ALL if a < 2 else NONE)


def test_made_masks_layout_by_hand():
    degrees, masks = cm.conv_made_masks((4, 4, 2), [4, 2], kernel_size=3, num_params=2)
    assert [m.shape for m in masks] == [(3, 3, 2, 4), (3, 3, 4, 2), (3, 3, 2, 4)]
    # First layer exclusive: input channel 0 -> hidden groups [0, 0, 1, 1].
    for b, expected in enumerate([BEFORE, BEFORE, BEFORE + CENTRE, BEFORE + CENTRE]):
        np.testing.assert_array_equal(masks[0][..., 0, b], expected)
    # Output layer inclusive, columns [c0 p0, c0 p1, c1 p0, c1 p1]: group 1 -> channel 1 only.
    for b, expected in enumerate([BEFORE, BEFORE, BEFORE + CENTRE, BEFORE + CENTRE]):
        np.testing.assert_array_equal(masks[2][..., 1, b], expected)
    np.testing.assert_array_equal(degrees, cm.conv_input_degrees((4, 4, 2)))


def test_kernel_5_raster_and_kernel_1():
    mask = cm.conv_kernel_mask(5, [1], [0], "raster")[..., 0, 0]
    expected = np.zeros((5, 5))
    expected[:2] = 1
    expected[2, :2] = 1
    np.testing.assert_array_equal(mask, expected)
    # A 1x1 kernel is a channel-triangular matrix.
    mask = cm.conv_kernel_mask(1, [1, 2, 3], [0, 1, 2], "raster")
    np.testing.assert_array_equal(mask[0, 0], np.triu(np.ones((3, 3)), k=1))


@pytest.mark.parametrize("order", cm.CONV_ORDERS)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("event_shape", [(4, 4, 3), (3, 5, 2)])
def test_composed_masks_are_autoregressive(order, kernel_size, event_shape):
    degrees, masks = cm.conv_made_masks(event_shape, [6, 6], kernel_size, 1, order)
    reach = mask_reach(masks, event_shape)
    allowed = degrees[:, :, :, None, None, None] > degrees[None, None, None]
    assert not np.any(reach & ~allowed)
    # Same-position dependencies the order allows are all realised (any kernel size).
    same = np.einsum("hwohwc->hwoc", reach.astype(int)) > 0
    assert np.array_equal(same, np.einsum("hwohwc->hwoc", allowed.astype(int)) > 0)


def test_channel_order_receptive_field_is_the_full_square():
    degrees, masks = cm.conv_made_masks((5, 5, 3), [3, 3], 3, 1, "channel")
    reach = mask_reach(masks, (5, 5, 3))  # three 3x3 layers: Chebyshev radius 3
    i, j, i2, j2 = np.meshgrid(*[np.arange(5)] * 4, indexing="ij")
    near = np.maximum(abs(i - i2), abs(j - j2)) <= 3
    allowed = degrees[:, :, :, None, None, None] > degrees[None, None, None]
    expected = near[:, :, None, :, :, None] & allowed
    np.testing.assert_array_equal(reach, expected)


def test_raster_receptive_field_and_blind_spot():
    _, masks = cm.conv_made_masks((7, 7, 2), [2, 2], 3, 1, "raster")
    reach = mask_reach(masks, (7, 7, 2))
    i, j = 3, 3
    for di, dj in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (-2, 2), (-3, 3), (-1, -2), (-3, -3)]:
        assert reach[i, j, 0, i + di, j + dj].all(), (di, dj)
    assert reach[i, j, 1, i, j, 0] and not reach[i, j, 0, i, j, 1]
    # PixelCNN's blind spot: the row above, two to the right, is never seen.
    assert not reach[i, j, :, i - 1, j + 2].any()
