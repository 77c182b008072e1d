"""Free bits: the KL floor of the IAF paper, eq. 15.

The KL term is split into groups `j` (a latent unit, or a channel of a convolutional latent), and
each group's KL, averaged over the minibatch `M`, is floored at `lambda`:

    L_lambda = E_{x ~ M}[E_q[log p(x | z)]] - sum_j max(lambda, E_{x ~ M}[KL_j(x)])

Averaging over the minibatch before the floor, not per example, is what the authors do: a group
whose mean KL is above `lambda` gets the full gradient, one below it none. The floor is a training
objective only; reported ELBOs always use the true KL (`sum_j KL_j`).
Kingma et al. 2016, https://arxiv.org/abs/1606.04934, section 3 / appendix C.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfp_iaf import _checks

__all__ = ["free_bits_kl", "group_kl"]


def group_kl(kl: tf.Tensor, sum_axes: Sequence[int] = ()) -> tf.Tensor:
    """Minibatch-mean KL per group.

    Args:
      kl: `[batch, *unit_shape]` per-example, per-unit KL (analytic, or the single-sample
        `log q(z_i | x) - log p(z_i)` when the posterior has no closed-form KL).
      sum_axes: axes of `kl` (>= 1) summed into one group, e.g. `(1, 2)` for spatial axes of a
        `[batch, H, W, C]` latent so that channels are the groups. Default: every unit is a group.

    Returns:
      `[*group_shape]`, the mean over the batch of every group's KL.

    Raises:
      ValueError: `kl` of rank 0, or `sum_axes` naming the batch axis or an axis out of range.
    """
    kl = tf.convert_to_tensor(kl)
    rank = kl.shape.rank
    if rank is None or rank < 1:
        raise ValueError(f"`kl` must have a batch axis, shape [batch, ...]; got shape {kl.shape}")
    axes = [a % rank if -rank <= a < rank else None for a in sum_axes]
    if any(a is None or a == 0 for a in axes):
        raise ValueError(
            f"`sum_axes` must name non-batch axes of `kl` (1..{rank - 1}); got {tuple(sum_axes)}"
        )
    if axes:
        kl = tf.reduce_sum(kl, axis=axes)
    return tf.reduce_mean(kl, axis=0)


def free_bits_kl(
    kl: tf.Tensor,
    free_bits: float,
    sum_axes: Sequence[int] = (),
    group_size: int | None = None,
) -> tf.Tensor:
    """The KL term of the free-bits objective, `sum_j max(lambda, E_M[KL_j])`.

    With `group_size`, the batch is split into minibatches `M_1, M_2, ...` of that many
    examples and the result is their mean, `mean_g sum_j max(lambda, E_{M_g}[KL_j])`: the
    authors average the KL per 32-image GPU tower before the floor, so a 256-image step of the
    paper's run is 8 such groups.

    Args:
      kl: `[batch, *unit_shape]` per-example, per-unit KL.
      free_bits: `lambda` >= 0, in nats per group. `0` gives the plain minibatch-mean KL,
        `sum_j E_M[KL_j]`, with no floor at all: single-sample KLs can have a negative mean.
      sum_axes: axes summed into one group (see `group_kl`).
      group_size: examples per minibatch the floor applies to; None: the whole batch. It must
        divide the batch size (checked statically when the batch size is known, else at run
        time).

    Returns:
      A scalar: the floored KL per example, to add to the negative reconstruction term.

    Raises:
      TypeError: a `free_bits` that is not a number, or a non-integer `group_size`.
      ValueError: a negative or non-finite `free_bits`, a non-positive `group_size` or one that
        does not divide a static batch size, or any error of `group_kl`.
    """
    free_bits = _checks.non_negative_float("free_bits", free_bits)
    group_size = _checks.positive_int("group_size", group_size, optional=True)
    if group_size is None:
        per_group = group_kl(kl, sum_axes)
        if free_bits == 0:  # the plain KL, as the authors' `kl_min = 0`
            return tf.reduce_sum(per_group)
        return tf.reduce_sum(tf.maximum(per_group, tf.cast(free_bits, per_group.dtype)))
    kl = tf.convert_to_tensor(kl)
    group_kl(kl[:1], sum_axes)  # the shape checks
    batch = kl.shape[0]
    if batch is not None and batch % group_size:
        raise ValueError(
            f"`group_size` must divide the batch size {batch}; got group_size={group_size}"
        )
    shape = tf.shape(kl)
    check = tf.debugging.assert_equal(
        shape[0] % group_size, 0, message=f"`group_size` {group_size} must divide the batch size"
    )
    with tf.control_dependencies([check]):
        grouped = tf.reshape(kl, tf.concat([[-1, group_size], shape[1:]], axis=0))
    rank = kl.shape.rank
    axes = [a % rank + 1 for a in sum_axes]  # +1: the minibatch axis in front
    if axes:
        grouped = tf.reduce_sum(grouped, axis=axes)
    per_group = tf.reduce_mean(grouped, axis=1)  # [minibatches, *group_shape]
    if free_bits:
        per_group = tf.maximum(per_group, tf.cast(free_bits, per_group.dtype))
    return tf.reduce_mean(tf.reduce_sum(tf.reshape(per_group, [tf.shape(per_group)[0], -1]), 1))
