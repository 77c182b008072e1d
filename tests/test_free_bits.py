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


# group_size: the floor per minibatch of `group_size` examples (the authors' per-tower floor).


@pytest.mark.parametrize("free_bits", [0.0, 0.3, 5.0])
@pytest.mark.parametrize("sum_axes", [(), (1,)])
def test_group_size_of_the_whole_batch_is_the_ungrouped_objective(free_bits, sum_axes):
    kl = tf.random.stateless_normal([6, 4, 3], [0, 1])
    np.testing.assert_allclose(
        vae.free_bits_kl(kl, free_bits, sum_axes, group_size=6),
        vae.free_bits_kl(kl, free_bits, sum_axes),
        rtol=1e-6,
    )


@pytest.mark.parametrize("group_size", [1, 2, 3])
def test_groups_are_floored_separately_and_averaged(group_size):
    rng = np.random.default_rng(2)
    kl = rng.normal(size=(6, 5)).astype(np.float32)
    lam = 0.2
    expected = np.mean(
        [
            np.sum(np.maximum(kl[g : g + group_size].mean(axis=0), lam))
            for g in range(0, 6, group_size)
        ]
    )
    got = vae.free_bits_kl(tf.constant(kl), lam, group_size=group_size)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Not the whole-batch floor: grouping changes which units are floored.
    if group_size < 6:
        assert not np.isclose(float(got), float(vae.free_bits_kl(tf.constant(kl), lam)))


def test_group_size_must_divide_the_batch():
    with pytest.raises(
        ValueError, match=r"`group_size` must divide the batch size 6; got group_size=4"
    ):
        vae.free_bits_kl(tf.zeros([6, 2]), 0.1, group_size=4)
    with pytest.raises(
        ValueError, match=r"`group_size` must be a positive integer or None; got 0"
    ):
        vae.free_bits_kl(tf.zeros([6, 2]), 0.1, group_size=0)

    @tf.function(input_signature=[tf.TensorSpec([None, 2])])
    def unknown_batch(kl):
        return vae.free_bits_kl(kl, 0.1, group_size=4)

    with pytest.raises(tf.errors.InvalidArgumentError, match="`group_size` 4 must divide"):
        unknown_batch(tf.zeros([6, 2]))
