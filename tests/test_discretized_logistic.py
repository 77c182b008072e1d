"""Discretized logistic likelihood: normalisation, hand-computed values, bits/dim, sampling, and
the reference (openai/iaf) scoring of the edge bins."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfp_iaf import vae
from tfp_iaf.vae.discretized_logistic import (
    discretized_logistic_log_prob,
    discretized_logistic_sample,
    pixels_to_unit,
    unit_to_pixels,
)

ALL_BINS = pixels_to_unit(np.arange(256))


def _sigmoid(t):
    return 0.5 * (1.0 + math.tanh(0.5 * t))  # no overflow in the far tails


@pytest.mark.parametrize("loc", [-0.7, -0.5, 0.0, 0.123, 0.5, 3.0])
@pytest.mark.parametrize("log_scale", [-9.0, -4.0, -1.0, 2.0])
def test_sums_to_one_over_256_bins(loc, log_scale):
    log_p = discretized_logistic_log_prob(
        tf.cast(ALL_BINS, tf.float64), tf.constant(loc, tf.float64), log_scale
    )
    assert np.all(np.isfinite(log_p))
    np.testing.assert_allclose(float(tf.reduce_logsumexp(log_p)), 0.0, atol=1e-9)


def test_values_match_a_hand_computation():
    s = 0.05
    pixels = np.array([0, 1, 128, 254, 255])
    x = pixels_to_unit(pixels)
    log_p = discretized_logistic_log_prob(x, 0.01, math.log(s)).numpy()
    expected = []
    for k in pixels:
        lo, hi = k / 256 - 0.5, (k + 1) / 256 - 0.5
        upper = 1.0 if k == 255 else _sigmoid((hi - 0.01) / s)
        lower = 0.0 if k == 0 else _sigmoid((lo - 0.01) / s)
        expected.append(math.log(upper - lower))
    np.testing.assert_allclose(log_p, expected, rtol=1e-4)


def test_bits_per_dim_of_an_image_by_hand():
    # A 2x2x3 image, every pixel 128, loc at its bin centre, scale 1/256:
    # P = sigmoid(0.5) - sigmoid(-0.5) per pixel, so bits/dim = -log2(that).
    image = np.full([1, 2, 2, 3], 128)
    log_p = discretized_logistic_log_prob(
        pixels_to_unit(image), pixels_to_unit(128), -math.log(256)
    )
    per_pixel = _sigmoid(0.5) - _sigmoid(-0.5)  # 0.24491866...
    total = tf.reduce_sum(tf.cast(log_p, tf.float64), axis=[1, 2, 3])
    np.testing.assert_allclose(total.numpy(), [12 * math.log(per_pixel)], rtol=1e-5)
    bpd = vae.bits_per_dim(total, 12).numpy()
    np.testing.assert_allclose(bpd, [-math.log2(0.24491866)], rtol=1e-5)  # 2.0296...
    assert abs(bpd[0] - 2.0296) < 1e-3


def test_gradients_finite_in_the_far_tails():
    loc = tf.Variable([-50.0, 50.0, 0.0, 0.0])
    log_scale = tf.Variable([-10.0, -10.0, -10.0, 5.0])
    x = pixels_to_unit([100, 100, 0, 255])
    with tf.GradientTape() as tape:
        log_p = discretized_logistic_log_prob(x, loc, log_scale)
        total = tf.reduce_sum(log_p)
    grads = tape.gradient(total, [loc, log_scale])
    assert np.all(np.isfinite(log_p))
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)


def test_pixel_scaling_round_trips():
    pixels = np.arange(256)
    np.testing.assert_array_equal(unit_to_pixels(pixels_to_unit(pixels)), pixels)
    np.testing.assert_array_equal(unit_to_pixels([-3.0, 3.0]), [0, 255])


def test_samples_follow_the_probabilities():
    loc, log_scale = 0.3, math.log(0.01)
    k = discretized_logistic_sample(tf.fill([40_000], loc), log_scale, seed=[1, 2]).numpy()
    freq = np.bincount(k, minlength=256) / k.size
    probs = np.exp(discretized_logistic_log_prob(ALL_BINS, loc, log_scale).numpy())
    np.testing.assert_allclose(freq, probs, atol=0.01)
    assert abs(freq.argmax() - probs.argmax()) <= 1


@pytest.mark.parametrize("loc", [-0.7, -0.4, 0.0, 0.49, 3.0])
@pytest.mark.parametrize("log_scale", [-9.0, -4.0, -1.0, 2.0])
def test_reference_edge_bins_equal_proper_inside_and_lose_the_tails(loc, log_scale):
    x = tf.cast(ALL_BINS, tf.float64)
    loc = tf.constant(loc, tf.float64)
    proper = discretized_logistic_log_prob(x, loc, log_scale).numpy()
    ref = discretized_logistic_log_prob(x, loc, log_scale, edge_bins="reference").numpy()
    assert np.all(np.isfinite(ref))
    np.testing.assert_array_equal(ref[1:-1], proper[1:-1])
    assert ref[0] <= proper[0] and ref[-1] <= proper[-1]
    # What is lost is exactly the tails' mass: P_proper - P_ref = sigma(l_0) and 1 - sigma(u_255).
    s = math.exp(log_scale)
    lost_low = _sigmoid((-0.5 - float(loc)) / s)
    lost_high = 1.0 - _sigmoid((0.5 - float(loc)) / s)
    np.testing.assert_allclose(
        np.exp(proper[[0, -1]]) - np.exp(ref[[0, -1]]), [lost_low, lost_high], atol=1e-12
    )
    assert math.exp(float(tf.reduce_logsumexp(ref))) <= 1.0 - lost_low - lost_high + 1e-9
    for i, lost in ((0, lost_low), (-1, lost_high)):
        if lost > 1e-12 * math.exp(proper[i]):  # a tail that float64 can see: strictly lower
            assert ref[i] < proper[i]


def test_saturated_subpixel_reads_0_64_proper_and_2_93_reference_nats():
    """A saturated pixel: pixel 255, the mean at its bin centre, log-scale -4."""
    x, loc = pixels_to_unit(255), pixels_to_unit(255)
    proper = -float(discretized_logistic_log_prob(x, loc, -4.0))
    ref = -float(discretized_logistic_log_prob(x, loc, -4.0, edge_bins="reference"))
    assert round(proper, 2) == 0.64 and round(ref, 2) == 2.93
    # The authors' formula (openai/iaf tf_utils/distributions.py), 1e-7 included, in float64.
    s, bin_size = math.exp(-4.0), 1.0 / 256
    t = (math.floor(float(x) / bin_size) * bin_size - float(loc)) / s
    authors = -math.log(_sigmoid(t + bin_size / s) - _sigmoid(t) + 1e-7)
    np.testing.assert_allclose(ref, authors, rtol=1e-5)


@pytest.mark.parametrize("edge_bins", ["tails", "", None, 1])
def test_bad_edge_bins_raises(edge_bins):
    with pytest.raises(ValueError, match=r"`edge_bins` must be one of \('proper', 'reference'\)"):
        discretized_logistic_log_prob(0.0, 0.0, 0.0, edge_bins=edge_bins)


@pytest.mark.parametrize(
    "call",
    [
        lambda: pixels_to_unit([0], num_bins=1),
        lambda: unit_to_pixels([0.0], num_bins=True),
        lambda: discretized_logistic_log_prob(0.0, 0.0, 0.0, num_bins=1.5),
        lambda: discretized_logistic_sample(0.0, 0.0, [0, 0], num_bins=0),
    ],
)
def test_bad_num_bins_raises(call):
    with pytest.raises(ValueError, match="`num_bins` must be an integer >= 2"):
        call()
