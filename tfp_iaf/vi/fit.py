"""Fitting a surrogate to a target whose log-density takes one structured value."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["as_tfp_target", "check_target", "fit_surrogate_posterior"]


def as_tfp_target(target_log_prob_fn, structure):
    """`target_log_prob_fn(value)` as the function `tfp.vi.fit_surrogate_posterior` calls.

    TFP calls its target with a sample's parts as arguments: `fn(**sample)` for a dict,
    `fn(*sample)` for a list or tuple (namedtuples included). A model's log-density usually
    takes the sample as one value (inference_gym's `unnormalized_log_prob(value)`,
    `JointDistribution.log_prob(value)`); this adapter rebuilds that value.

    Args:
      target_log_prob_fn: `fn(value) -> log_prob`, `value` with the structure of `structure`.
      structure: a structure like the samples, e.g. `surrogate.dtype`.

    Returns:
      `fn(*args, **kwargs)` calling `target_log_prob_fn` with one value of that structure.
    """
    if not tf.nest.is_nested(structure):
        return target_log_prob_fn

    def target(*args, **kwargs):
        parts = tf.nest.flatten(kwargs if kwargs else list(args))
        return target_log_prob_fn(tf.nest.pack_sequence_as(structure, parts))

    return target


def check_target(target_log_prob_fn, surrogate_posterior, sample_size: int = 1, seed=None):
    """Raises if the target's log-density is not finite at samples of the surrogate.

    Args:
      target_log_prob_fn: `fn(value) -> log_prob`, `value` structured like the samples.
      surrogate_posterior: the surrogate, as initialised.
      sample_size: how many samples to try.
      seed: seed of the samples.

    Raises:
      ValueError: naming the first sample at which the log-density is NaN or infinite.
    """
    sample = surrogate_posterior.sample(sample_size, seed=seed)
    log_prob = np.asarray(target_log_prob_fn(sample))
    bad = np.flatnonzero(~np.isfinite(log_prob))
    if bad.size:
        i = int(bad[0])
        value = tf.nest.map_structure(lambda x: np.asarray(x)[i], sample)
        raise ValueError(
            f"`target_log_prob_fn` returned {log_prob.ravel()[i]} at the surrogate's initial "
            f"sample {i} of {sample_size}: {value!r}. Check the model at that value, or the "
            "`bijector` mapping onto its support"
        )


def fit_surrogate_posterior(
    target_log_prob_fn,
    surrogate_posterior,
    optimizer,
    num_steps: int,
    *,
    sample_size: int = 1,
    seed=None,
    check: bool = True,
    **kwargs,
):
    """`tfp.vi.fit_surrogate_posterior` for a target that takes one structured value.

    The target is called as `target_log_prob_fn(value)` with `value` structured like the
    surrogate's samples (a dict, a namedtuple, a tensor), so an inference_gym model's
    `unnormalized_log_prob` or a pinned JointDistribution's `unnormalized_log_prob` goes in
    as given. Before fitting, the target is evaluated at `sample_size` samples of the
    surrogate, and a NaN or infinite value is reported with the sample that gave it.

    Args:
      target_log_prob_fn: `fn(value) -> log_prob`.
      surrogate_posterior: e.g. from `build_iaf_surrogate_posterior`.
      optimizer: a `tf_keras` (or Keras) optimizer.
      num_steps: optimisation steps.
      sample_size: Monte Carlo samples per step.
      seed: seed of the samples (an int or a stateless seed; required for `jit_compile=True`
        to be reproducible).
      check: evaluate the target at initial samples first (see above).
      **kwargs: passed to `tfp.vi.fit_surrogate_posterior` (`jit_compile`, `trace_fn`, ...).

    Returns:
      What `tfp.vi.fit_surrogate_posterior` returns: the trace, by default the losses.

    Raises:
      ValueError: the target is not finite at the surrogate's initial samples.
    """
    if check:
        check_target(target_log_prob_fn, surrogate_posterior, sample_size, seed)
    return tfp.vi.fit_surrogate_posterior(
        as_tfp_target(target_log_prob_fn, surrogate_posterior.dtype),
        surrogate_posterior,
        optimizer,
        num_steps,
        sample_size=sample_size,
        seed=seed,
        **kwargs,
    )
