"""Fitting a surrogate to a target whose log-density takes one structured value."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import _checks
from tfp_iaf.vi._minimize import FitTraceableQuantities, GuardedResult, minimize_guarded

__all__ = ["FitDiverged", "as_tfp_target", "check_target", "fit_surrogate_posterior"]


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
    """Raises if the target's log-density is not one finite value per sample of the surrogate.

    Args:
      target_log_prob_fn: `fn(value) -> log_prob`, `value` structured like the samples.
      surrogate_posterior: the surrogate, as initialised.
      sample_size: how many samples to try.
      seed: seed of the samples.

    Raises:
      ValueError: the log-density's shape is not `[sample_size]` (a surrogate of another event
        shape than the model's, or a model with a batch shape), naming both shapes; or it is
        NaN or infinite, naming the first sample at which it is.
    """
    sample = surrogate_posterior.sample(sample_size, seed=seed)
    log_prob = np.asarray(target_log_prob_fn(sample))
    if log_prob.shape != (sample_size,):
        shapes = tf.nest.map_structure(lambda x: list(x.shape), sample)
        raise ValueError(
            f"`target_log_prob_fn` returned log-densities of shape {list(log_prob.shape)} at "
            f"{sample_size} samples of the surrogate (shape {shapes}); it must return shape "
            f"[{sample_size}], one per sample. Check that the surrogate's event shape is the "
            "model's and that the model has no batch shape"
        )
    bad = np.flatnonzero(~np.isfinite(log_prob))
    if bad.size:
        i = int(bad[0])
        value = tf.nest.map_structure(lambda x: np.asarray(x)[i], sample)
        raise ValueError(
            f"`target_log_prob_fn` returned {log_prob.ravel()[i]} at the surrogate's initial "
            f"sample {i} of {sample_size}: {value!r}. Check the model at that value, or the "
            "`bijector` mapping onto its support"
        )


class FitDiverged(FloatingPointError):
    """`fit_surrogate_posterior` stopped: `max_consecutive_skips` steps in a row were skipped.

    A step is skipped when its loss or a gradient is NaN or infinite, or when its update would
    leave a variable or the optimizer's state non-finite. The message says at which step, the
    last finite loss, and what to try.

    Attributes:
      step: the first of the skipped steps that stopped the fit (steps count from 0). The
        variables and the optimizer's state are as step `step - 1` left them, or, where the
        fit backtracked since, at the anchor it went back to: finite values.
      last_finite_loss: the loss of the last step applied (a float), or None when no step was.
      trace: what the fit returns, for the `step + max_consecutive_skips` steps it ran (NumPy
        arrays, with `trace_fn`'s structure).
    """

    def __init__(self, message: str, *, step: int, last_finite_loss, trace) -> None:
        super().__init__(message)
        self.step = step
        self.last_finite_loss = last_finite_loss
        self.trace = trace


class _StoppedLogProb:
    """The surrogate's `log_prob` with a gradient through its argument only (sticking the landing).

    `log_prob(x)` is `sg(l) + sum(sg(dl/dx) * (x - sg(x)))` with `l = log q(x)` and `sg` the
    stop-gradient: the value of `log q(x)`, and the gradient a copy of the surrogate with stopped
    parameters would give, `dl/dx dx/dtheta`, for any distribution and without copying it. `x`
    goes through `tf.identity` first: a bijector's cache would otherwise return the noise `x` was
    drawn from, through which `l` has no gradient with respect to `x`.
    """

    def __init__(self, distribution):
        self._distribution = distribution

    def log_prob(self, x):
        x = tf.nest.map_structure(tf.identity, x)
        parts = tf.nest.flatten(x)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(parts)
            log_prob = self._distribution.log_prob(tf.nest.pack_sequence_as(x, parts))
        grads = tape.gradient(log_prob, parts)
        result = tf.stop_gradient(log_prob)
        shape = tf.concat([tf.shape(result), [-1]], axis=0)
        for part, grad in zip(parts, grads, strict=True):
            if grad is not None:
                product = tf.stop_gradient(grad) * (part - tf.stop_gradient(part))
                result += tf.reduce_sum(tf.reshape(product, shape), axis=-1)
        return result


def _gradient_estimator(gradient_estimator, stick_the_landing: bool):
    """The estimator `tfp.vi.monte_carlo_variational_loss` is given."""
    doubly = tfp.vi.GradientEstimators.DOUBLY_REPARAMETERIZED
    if not stick_the_landing:
        if gradient_estimator is None:
            return tfp.vi.GradientEstimators.REPARAMETERIZATION
        return gradient_estimator
    if gradient_estimator not in (None, doubly):
        raise ValueError(
            f"`stick_the_landing=True` uses `gradient_estimator={doubly}`; got "
            f"`gradient_estimator={gradient_estimator}`"
        )
    return doubly


def _trace_loss(quantities: FitTraceableQuantities) -> tf.Tensor:
    """The default trace: the loss, NaN at a skipped step."""
    nan = tf.constant(float("nan"), quantities.loss.dtype)
    return tf.where(quantities.skipped, nan, quantities.loss)


def _diverged(result: GuardedResult, num_steps: int, max_consecutive_skips: int) -> FitDiverged:
    """The error of a fit that stopped after `max_consecutive_skips` skipped steps."""
    step = result.steps_run - result.consecutive_skips
    if result.last_applied_step < 0:
        last = None
        where = "no step was applied, so the surrogate's variables are their initial values"
    else:
        last = result.last_applied_loss
        last = float(last) if np.size(last) == 1 else last
        shown = f"{last:.6g}" if isinstance(last, float) else str(last)
        where = (
            f"the last finite loss was {shown}, at step {result.last_applied_step}, and the "
            "surrogate's variables are left at finite values (that step's, or the anchor of "
            f"the last of {result.backtracks} backtrack(s))"
        )
    message = (
        f"the fit diverged at step {step} of {num_steps}: {max_consecutive_skips} step(s) in a "
        "row from there had a NaN or infinite loss or gradient (or an update that made a "
        "variable non-finite) and were skipped "
        f"(`max_consecutive_skips={max_consecutive_skips}`); {where}. Try a lower learning "
        "rate, a smaller `initial_scale` of the surrogate, checking that the model's support "
        "is where the surrogate's `bijector` maps (the target must be finite wherever the "
        "surrogate puts mass), or float64"
    )
    trace = tf.nest.map_structure(np.asarray, result.trace)
    return FitDiverged(message, step=step, last_finite_loss=last, trace=trace)


def fit_surrogate_posterior(
    target_log_prob_fn,
    surrogate_posterior,
    optimizer,
    num_steps: int,
    *,
    sample_size: int = 1,
    trace_fn: Callable[[FitTraceableQuantities], Any] | None = None,
    discrepancy_fn=tfp.vi.kl_reverse,
    importance_sample_size: int = 1,
    gradient_estimator=None,
    stick_the_landing: bool = False,
    trainable_variables: Sequence[tf.Variable] | None = None,
    max_consecutive_skips: int = 25,
    backtrack_after: int | None = 5,
    average_last: float = 0.1,
    jit_compile: bool = False,
    seed=None,
    check: bool = True,
    name: str = "fit_surrogate_posterior",
):
    """Fits a surrogate to a target that takes one structured value; skips non-finite steps.

    Minimises `tfp.vi.monte_carlo_variational_loss` (by default the negative ELBO) as
    `tfp.vi.fit_surrogate_posterior` does, with three differences:

    - the target is called as `target_log_prob_fn(value)`, `value` structured like the
      surrogate's samples (a dict, a namedtuple, a tensor), so an inference_gym model's or a
      pinned JointDistribution's `unnormalized_log_prob` goes in as given;
    - before fitting (`check=True`), the target is evaluated at `sample_size` samples of the
      surrogate: a log-density not of shape `[sample_size]`, or NaN or infinite, is reported;
    - a step whose loss or any gradient is NaN or infinite is skipped: not applied, so the
      variables and the optimizer's state (its moments, its step count, hence a learning-rate
      schedule's position) keep their values. So is a step whose update would leave a variable
      or the optimizer's state non-finite (they are restored). After `backtrack_after` (5)
      skipped steps in a row the fit backtracks: the variables and the optimizer's state go
      back to an anchor (their values at the start of the fit, refreshed every 50 applied
      steps) and each later update's displacement is halved again, a scale that grows back to
      1 in 100 applied steps (a step that walked into a region where the target overflows is
      retaken with smaller steps). After `max_consecutive_skips` skipped steps in a row the
      fit stops and raises `FitDiverged`, the variables left at finite values.

    Until a backtrack, no update is touched: where no step is skipped, the steps and losses
    are those of `tfp.vi.fit_surrogate_posterior` with the same seed. At the end the
    variables are left at the mean of their values over the last `average_last` of the steps
    (Polyak-Ruppert tail averaging), not at the last step's: at a constant learning rate the
    last values jitter around the optimum by an amount that grows with the number of
    parameters, and an IAF has many (docs/benchmarks_vi.md: 5 nats of ELBO on a
    501-dimensional model). `average_last=0` leaves them at the last step's values, as
    `tfp.vi.fit_surrogate_posterior` does; the optimizer's state is the last step's either
    way. The loop over steps runs as one `tf.function` (compiled whole by XLA under
    `jit_compile=True`); call this function eagerly.

    Args:
      target_log_prob_fn: `fn(value) -> log_prob`, one log-density per sample.
      surrogate_posterior: e.g. from `build_iaf_surrogate_posterior`.
      optimizer: a Keras 3 (`tf.optimizers`) or `tf_keras` optimizer; its slots are created
        here, before the loop.
      num_steps: optimisation steps, >= 1.
      sample_size: Monte Carlo samples per step, >= 1.
      trace_fn: `trace_fn(quantities) -> traced`, called at each step (inside the loop) with a
        namedtuple of `loss`, `gradients` (a list, one per variable), `parameters` (the
        variables' values after the step), `step` (from 0) and `skipped` (a bool: the step
        was not applied; its `loss` or `gradients` show why). Default: the loss, NaN at a
        skipped step.
      discrepancy_fn: the Csiszar function, as in `tfp.vi.monte_carlo_variational_loss`.
      importance_sample_size: importance samples per term of the loss (>= 1), as there.
      gradient_estimator: a `tfp.vi.GradientEstimators`; default `REPARAMETERIZATION`
        (`DOUBLY_REPARAMETERIZED` with `stick_the_landing`).
      stick_the_landing: use the sticking-the-landing estimator (Roeder et al. 2017,
        https://arxiv.org/abs/1703.09194; the doubly-reparameterized one when
        `importance_sample_size > 1`): the surrogate's density in the loss gets no gradient to
        its parameters, only through the sample. Zero variance at the exact posterior; costs one
        more evaluation of the surrogate's density (for an IAF, its sequential inverse).
      trainable_variables: the variables to fit; default: the surrogate's.
      max_consecutive_skips: how many skipped steps in a row stop the fit, >= 1.
      backtrack_after: after how many skipped steps in a row (and after each further as many)
        the fit backtracks, >= 1; None: never (a skipped step is then only not applied).
      average_last: the fraction of the steps, at the end, over whose values the variables
        are averaged, in [0, 1]: the last `round(average_last * num_steps)` steps (a backtrack
        among them starts the mean afresh, from the anchor it went back to). 0: no averaging.
      jit_compile: compile the loop with XLA.
      seed: an int or a stateless seed (a pair of ints): each step draws with its own stateless
        seed split from it, so a stateless seed gives the same fit each time (XLA draws other
        numbers than TensorFlow's kernels from one seed: the fits with and without
        `jit_compile` differ).
      check: evaluate the target at initial samples first (see above).
      name: the name scope of the fit's ops.

    Returns:
      The trace: `trace_fn`'s values stacked over the `num_steps` steps; by default the losses,
      shape `[num_steps]`, NaN exactly at the skipped steps (`np.isnan(losses)` marks them).

    Raises:
      TypeError: `num_steps`, `sample_size`, `importance_sample_size`,
        `max_consecutive_skips` or `backtrack_after` not an int;
        `average_last` not a number.
      ValueError: one of them below 1; `average_last` outside [0, 1]; no trainable
        variables; `stick_the_landing` with another `gradient_estimator`; with `check`, a
        target whose log-density at the initial samples is not of shape `[sample_size]` or
        not finite.
      FitDiverged: `max_consecutive_skips` steps in a row were skipped.
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    sample_size = _checks.positive_int("sample_size", sample_size)
    importance_sample_size = _checks.positive_int("importance_sample_size", importance_sample_size)
    max_consecutive_skips = _checks.positive_int("max_consecutive_skips", max_consecutive_skips)
    if backtrack_after is not None:
        backtrack_after = _checks.positive_int("backtrack_after", backtrack_after)
    average_last = _checks.finite_float("average_last", average_last)
    if not 0 <= average_last <= 1:
        raise ValueError(f"`average_last` must be in [0, 1]; got {average_last}")
    averaged_steps = round(average_last * num_steps)
    gradient_estimator = _gradient_estimator(gradient_estimator, stick_the_landing)
    if trainable_variables is None:
        trainable_variables = surrogate_posterior.trainable_variables
    variables = list(trainable_variables)
    if not variables:
        raise ValueError(
            f"`trainable_variables` must not be empty; got {trainable_variables!r} (a surrogate "
            "without variables has nothing to fit)"
        )
    if check:
        check_target(target_log_prob_fn, surrogate_posterior, sample_size, seed)
    doubly = gradient_estimator == tfp.vi.GradientEstimators.DOUBLY_REPARAMETERIZED
    loss_fn = functools.partial(
        tfp.vi.monte_carlo_variational_loss,
        as_tfp_target(target_log_prob_fn, surrogate_posterior.dtype),
        surrogate_posterior,
        sample_size=sample_size,
        importance_sample_size=importance_sample_size,
        discrepancy_fn=discrepancy_fn,
        gradient_estimator=gradient_estimator,
        stopped_surrogate_posterior=_StoppedLogProb(surrogate_posterior) if doubly else None,
    )
    with tf.name_scope(name):
        result = minimize_guarded(
            lambda seed: loss_fn(seed=seed),
            variables,
            optimizer,
            num_steps,
            trace_fn=_trace_loss if trace_fn is None else trace_fn,
            max_consecutive_skips=max_consecutive_skips,
            backtrack_after=backtrack_after,
            jit_compile=bool(jit_compile),
            seed=seed,
            average_from=num_steps - averaged_steps if averaged_steps else None,
        )
    if result.consecutive_skips >= max_consecutive_skips:
        raise _diverged(result, num_steps, max_consecutive_skips)
    return result.trace
