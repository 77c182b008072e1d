"""Free bits (paper eq. 15): sum_j max(lambda, minibatch-mean KL_j)."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_iaf import vae

KL = np.array([[0.1, 2.0, 0.0], [0.3, 4.0, 0.2]])  # [batch=2, units=3]


def test_zero_floor_is_the_minibatch_mean_kl():
    np.testing.assert_allclose(vae.free_bits_kl(KL, 0.0), KL.sum(-1).mean())


def test_floor_per_unit_of_the_minibatch_mean():
    # Unit means: 0.2, 3.0, 0.1 -> floored at 0.5: 0.5 + 3.0 + 0.5.
    np.testing.assert_allclose(vae.group_kl(KL), [0.2, 3.0, 0.1])
    np.testing.assert_allclose(vae.free_bits_kl(KL, 0.5), 4.0)


def test_averaged_over_the_minibatch_before_the_floor():
    # The authors floor the minibatch mean, not each example: mean(0, 1) = 0.5 -> 0.5, where
    # flooring per example would give mean(0.5, 1.0) = 0.75.
    kl = np.array([[0.0], [1.0]])
    np.testing.assert_allclose(vae.free_bits_kl(kl, 0.5), 0.5)


def test_gradient_only_through_units_above_the_floor():
    kl = tf.Variable(KL)
    with tf.GradientTape() as tape:
        out = vae.free_bits_kl(kl, 0.5)
    grad = tape.gradient(out, kl).numpy()
    np.testing.assert_allclose(grad, [[0.0, 0.5, 0.0], [0.0, 0.5, 0.0]])


def test_groups_by_summing_axes():
    # [batch=2, H=2, W=1, C=2]: channels are the groups once the spatial axes are summed.
    kl = np.arange(8, dtype=np.float64).reshape(2, 2, 1, 2) / 10.0
    per_channel = kl.sum(axis=(1, 2)).mean(0)  # [0.6, 0.8]
    np.testing.assert_allclose(vae.group_kl(kl, sum_axes=(1, 2)), per_channel)
    np.testing.assert_allclose(vae.free_bits_kl(kl, 0.7, sum_axes=(1, -2)), 0.7 + 0.8)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_rejects_negative_or_non_finite_floor(bad):
    with pytest.raises(ValueError, match=r"`free_bits` must be a finite number >= 0; got"):
        vae.free_bits_kl(KL, bad)


@pytest.mark.parametrize("bad", ["0.5", True, None])
def test_rejects_a_floor_that_is_not_a_number(bad):
    with pytest.raises(TypeError, match=r"`free_bits` must be a finite number >= 0; got"):
        vae.free_bits_kl(KL, bad)


def test_rejects_kl_without_batch_axis():
    with pytest.raises(ValueError, match=r"`kl` must have a batch axis, shape \[batch, \.\.\.\]"):
        vae.free_bits_kl(tf.constant(1.0), 0.1)


@pytest.mark.parametrize("axes", [(0,), (3,), (-3,)])
def test_rejects_sum_axes_on_batch_or_out_of_range(axes):
    with pytest.raises(
        ValueError, match=r"`sum_axes` must name non-batch axes of `kl` \(1\.\.1\); got"
    ):
        vae.group_kl(KL, sum_axes=axes)


def test_zero_free_bits_is_the_plain_kl_even_with_negative_group_means():
    # Single-sample KL estimates can have a negative minibatch mean; lambda = 0 must not floor it.
    kl = tf.constant([[-1.0, 0.5], [-2.0, 0.25]])
    np.testing.assert_allclose(vae.free_bits_kl(kl, 0.0), -1.5 + 0.375)
    with tf.GradientTape() as tape:
        tape.watch(kl)
        loss = vae.free_bits_kl(kl, 0.0)
    np.testing.assert_allclose(tape.gradient(loss, kl), np.full([2, 2], 0.5))
