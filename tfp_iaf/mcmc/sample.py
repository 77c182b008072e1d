"""`sample_neutra`: NeuTra chains, adapted and diagnosed, in one call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import _checks
from tfp_iaf.mcmc.kernel import KERNELS, NeuTra, check_standard_normal_base, default_step_size

# Stan's rule: a trajectory whose energy error passes this many nats diverged (TFP's NUTS
# flags its own with the same threshold).
DIVERGENCE_NATS = 1000.0

# Fewer adaptation steps leave Stan's windows too short to estimate a variance: step size only.
MIN_MASS_MATRIX_STEPS = 100

tfd = tfp.distributions


class NeuTraResult(NamedTuple):
    """What `sample_neutra` returns.

    Attributes:
      states: the draws, structured like the surrogate's samples, each part
        `[num_results, num_chains, *part_shape]`.
      base_states: the same draws in the surrogate's base space, `[num_results, num_chains,
        *base_event_shape]` (`[..., D]` for `tfp_iaf.vi`'s): near `N(0, I)` when the fit was
        good.
      num_gradient_evaluations: `[num_chains]` int64, the target's gradients each chain
        evaluated, burn-in and the first evaluation included (the fit's not counted).
      ess: the effective sample size of each parameter across chains, structured like
        `states`, each part `[*part_shape]`.
      rhat: the split potential scale reduction (R-hat) of each parameter, like `ess`.
      num_divergences: `[num_chains]` int64, divergent transitions among the kept draws.
      acceptance_rate: `[num_chains]`, the mean acceptance probability of the kept draws.
      step_size: the step size the kept draws used (adapted during burn-in).
      trajectory_length: "hmc": the trajectory length the kept draws used (adapted during
        burn-in); "nuts": None.
    """

    states: Any
    base_states: tf.Tensor
    num_gradient_evaluations: tf.Tensor
    ess: Any
    rhat: Any
    num_divergences: tf.Tensor
    acceptance_rate: tf.Tensor
    step_size: tf.Tensor
    trajectory_length: tf.Tensor | None


def sample_neutra(
    target_log_prob_fn: Callable,
    surrogate,
    num_results: int,
    *,
    num_chains: int = 4,
    num_burnin_steps: int | None = None,
    kernel: str = "nuts",
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    step_size: float | None = None,
    adapt_mass_matrix: bool = True,
    init_state=None,
    jit_compile: bool = True,
    seed: int | None = None,
) -> NeuTraResult:
    """Samples a posterior exactly with NUTS (or HMC) in a fitted surrogate's base space.

    The chains start at draws of the surrogate's base `N(0, I)` (draws of the surrogate in
    the model's space) or at `init_state`, run `NeuTra` for `num_burnin_steps` while adapting,
    then keep `num_results` draws. The adaptation, over the first 80% of the burn-in:

    - the step size, by dual averaging towards `target_accept_prob`, the chains' acceptance
      averaged harmonically (a chain that rejects much pulls the common step down);
    - with `adapt_mass_matrix` and 100 adaptation steps or more, a diagonal mass matrix in
      the base space, from the
      draws' variance in Stan's windows (TFP's `windowed_adaptive_nuts` scheme): a reverse-KL
      fit is narrower than the posterior, so the base-space posterior is wider than `N(0, I)`
      in the directions the fit under-covers, and the mass matrix rescales them;
    - for "hmc", the trajectory length (ChEES,
      `tfp.experimental.mcmc.GradientBasedTrajectoryLengthAdaptation`).

    The draws are exact whatever the surrogate's quality; a poor fit (Pareto k-hat well above
    0.7) costs mixing, seen in `ess` and `rhat`.

    Args:
      target_log_prob_fn: `fn(value) -> log_prob`, `value` structured like the surrogate's
        samples, one log-density per chain (as for `tfp_iaf.vi.fit_surrogate_posterior`).
      surrogate: the fitted surrogate: a `tfd.TransformedDistribution` over `N(0, I)` whose
        bijector maps onto the model's support (the surrogates of `tfp_iaf.vi`).
      num_results: draws kept per chain, >= 4 (R-hat splits each chain in two).
      num_chains: independent chains, >= 1 (>= 2 for "hmc": its adaptation compares chains).
      num_burnin_steps: steps discarded before them; default `num_results`.
      kernel: "nuts" (`tfp.mcmc.NoUTurnSampler`) or "hmc".
      target_accept_prob: the step-size adaptation's target, in (0, 1). 0.8, Stan's: on
        eight schools' funnel, fewer divergences than TFP's 0.75 for a few more gradients.
      max_tree_depth: "nuts": the trees' maximum depth, >= 1.
      step_size: the initial step size, > 0; default `D ** -0.25`.
      adapt_mass_matrix: adapt a diagonal mass matrix too (with 100 adaptation steps or
        more); False: the step size only, with an identity mass matrix.
      init_state: where the chains start, a value of the model structured like the
        surrogate's samples, each part `[num_chains, *part_shape]` (mapped into the base
        space by one inverse pass); default: draws of the surrogate.
      jit_compile: run the chains as one XLA computation.
      seed: int seed of the chains' starts and moves, or None.

    Returns:
      A `NeuTraResult`.

    Raises:
      TypeError: `surrogate` is not a `tfd.TransformedDistribution`; a non-int size or seed.
      ValueError: the surrogate's base is not `N(0, I)`; the target fails on, or does not
        return one finite log-density per chain at, the surrogate's samples (a target of
        another structure than the surrogate's); a bad size, `kernel`, `target_accept_prob`
        or `step_size`.

    Examples:
      >>> from tfp_iaf import vi
      >>> target = tfd.Normal(3.0, 2.0).log_prob
      >>> q = vi.build_iaf_surrogate_posterior([], seed=0)
      >>> r = sample_neutra(target, q, num_results=20, num_chains=2, jit_compile=False, seed=1)
      >>> r.states.shape, r.num_gradient_evaluations.shape
      (TensorShape([20, 2]), TensorShape([2]))
    """
    num_results = _checks.positive_int("num_results", num_results)
    if num_results < 4:
        raise ValueError(
            f"`num_results` must be >= 4 (R-hat splits each chain); got {num_results}"
        )
    num_chains = _checks.positive_int("num_chains", num_chains)
    if num_burnin_steps is None:
        num_burnin_steps = num_results
    num_burnin_steps = _checks.non_negative_int("num_burnin_steps", num_burnin_steps)
    if kernel not in KERNELS:
        raise ValueError(f"`kernel` must be one of {KERNELS}; got {kernel!r}")
    if kernel == "hmc" and num_chains < 2:
        raise ValueError(
            f'`kernel="hmc"` adapts its trajectory length across chains: `num_chains` must be '
            f">= 2; got {num_chains}"
        )
    target_accept_prob = _checks.finite_float("target_accept_prob", target_accept_prob)
    if not 0 < target_accept_prob < 1:
        raise ValueError(f"`target_accept_prob` must be in (0, 1); got {target_accept_prob}")
    max_tree_depth = _checks.positive_int("max_tree_depth", max_tree_depth)
    if step_size is not None:
        step_size = _checks.finite_float("step_size", step_size, positive=True)
    if seed is not None and not _checks.is_int(seed):
        raise TypeError(f"`seed` must be an int or None; got {seed!r} ({type(seed).__name__})")
    _, size = check_standard_normal_base(surrogate)
    base_shape = surrogate.distribution.event_shape.as_list()
    _check_target_on_surrogate(target_log_prob_fn, surrogate, num_chains, seed)
    base_state = None
    if init_state is not None:
        base_state = _base_state(surrogate, init_state, [num_chains, *base_shape])

    dtype = surrogate.distribution.dtype
    if step_size is None:
        initial_step = default_step_size(size, dtype)
    else:
        initial_step = tf.constant(step_size, dtype)
    adaptation_steps = int(0.8 * num_burnin_steps)
    if not isinstance(adapt_mass_matrix, bool):
        raise TypeError(f"`adapt_mass_matrix` must be a bool; got {adapt_mass_matrix!r}")
    kernel_fn = _adapted_kernel_fn(
        kernel,
        initial_step,
        adaptation_steps,
        target_accept_prob=target_accept_prob,
        max_tree_depth=max_tree_depth,
        mass_matrix=adapt_mass_matrix and adaptation_steps >= MIN_MASS_MATRIX_STEPS,
        num_chains=num_chains,
        base_shape=base_shape,
    )
    neutra = NeuTra(target_log_prob_fn, surrogate, kernel_fn)
    run = tf.function(
        lambda s, b: _run_chains(neutra, kernel, num_results, num_burnin_steps, num_chains, s, b),
        jit_compile=jit_compile,
        autograph=False,
    )
    chain_seed = tfp.random.sanitize_seed(seed)
    states, trace, burnin_gradients, step, length = run(chain_seed, base_state)
    return _result(states, trace, burnin_gradients, step, length, num_chains)


def _check_target_on_surrogate(target_log_prob_fn, surrogate, num_chains, seed) -> None:
    sample = surrogate.sample(num_chains, seed=seed)
    structure = tf.nest.map_structure(lambda x: list(x.shape[1:]), sample)
    try:
        log_prob = np.asarray(target_log_prob_fn(sample))
    except (TypeError, KeyError, IndexError, ValueError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(
            f"`target_log_prob_fn` failed on {num_chains} samples of the surrogate, structured "
            f"{structure}: {type(e).__name__}: {e}. The target must take one value of the "
            "surrogate's structure (one chain per sample)"
        ) from e
    if log_prob.shape != (num_chains,):
        raise ValueError(
            f"`target_log_prob_fn` returned log-densities of shape {list(log_prob.shape)} at "
            f"{num_chains} samples of the surrogate, structured {structure}; it must return "
            f"[{num_chains}], one per chain: a surrogate of another event than the model's?"
        )
    if not np.all(np.isfinite(log_prob)):
        raise ValueError(
            f"`target_log_prob_fn` returned {log_prob.tolist()} at {num_chains} samples of the "
            "surrogate: the chains' starts must have a finite log-density. Check the "
            "surrogate's bijector maps onto the model's support"
        )


def _base_state(surrogate, init_state, shape) -> tf.Tensor:
    try:
        base = surrogate.bijector.inverse(init_state)
    except (TypeError, KeyError, IndexError, ValueError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(
            f"`init_state` is not a value of the surrogate's structure {surrogate.dtype}: "
            f"{type(e).__name__}: {e}"
        ) from e
    if base.shape != shape:
        shapes = tf.nest.map_structure(lambda x: list(x.shape), init_state)
        raise ValueError(
            f"`init_state` must hold one value per chain ({shape[0]}); got shapes {shapes}"
        )
    if not np.all(np.isfinite(base)):
        raise ValueError("`init_state` is outside the surrogate's support (NaN or inf inverse)")
    return tf.identity(base)  # not the bijector's cached output (its gradient would be None)


def _adapted_kernel_fn(
    kind, step_size, adaptation_steps, *, target_accept_prob, max_tree_depth, mass_matrix,
    num_chains, base_shape,
):  # fmt: skip
    """The sampler over the base space, with the adaptation `sample_neutra` documents."""
    dtype = step_size.dtype

    def kernel_fn(base_log_prob):
        kwargs = {}
        if mass_matrix:
            ones = tf.ones([num_chains, *base_shape], dtype)
            preconditioning = tfp.experimental.mcmc.preconditioning_utils
            kwargs["momentum_distribution"] = preconditioning.make_momentum_distribution(
                [ones], [num_chains], running_variance_parts=[ones]
            )
        if kind == "nuts":
            kernel_class = (
                tfp.experimental.mcmc.PreconditionedNoUTurnSampler
                if mass_matrix
                else tfp.mcmc.NoUTurnSampler
            )
            inner = kernel_class(base_log_prob, step_size, max_tree_depth=max_tree_depth, **kwargs)
        else:
            kernel_class = (
                tfp.experimental.mcmc.PreconditionedHamiltonianMonteCarlo
                if mass_matrix
                else tfp.mcmc.HamiltonianMonteCarlo
            )
            inner = kernel_class(
                base_log_prob, step_size, 1, store_parameters_in_results=True, **kwargs
            )
            inner = tfp.experimental.mcmc.GradientBasedTrajectoryLengthAdaptation(
                inner, max(adaptation_steps, 1)
            )
        # With no burn-in there is nothing to adapt: the initial step size throughout. A chain
        # that rejects much pulls the common step down (TFP's windowed sampler's choice).
        inner = tfp.mcmc.DualAveragingStepSizeAdaptation(
            inner,
            adaptation_steps,
            target_accept_prob=tf.constant(target_accept_prob, dtype),
            reduce_fn=_reduce_log_harmonic_mean_exp,
        )
        if not mass_matrix:
            return inner
        # One variance for all chains, pooled over them: windows of tens of draws are too few
        # for a chain to estimate its own.
        variance = tfp.experimental.stats.RunningVariance.from_stats(
            num_samples=tf.zeros([], dtype),
            mean=tf.zeros(base_shape, dtype),
            variance=tf.ones(base_shape, dtype),
        )
        inner = tfp.experimental.mcmc.DiagonalMassMatrixAdaptation(
            inner, [variance], num_estimation_steps=adaptation_steps
        )
        return tfp.experimental.mcmc.windowed_sampling.WindowedAdaptation(inner, adaptation_steps)

    return kernel_fn


def _reduce_log_harmonic_mean_exp(x, axis=None, keepdims=False, **kwargs):
    return tfp.math.reduce_log_harmonic_mean_exp(x, axis=axis, keepdims=keepdims)


def _innermost(results, field: str):
    """`results.field`, or the first such field down the chain of inner (or accepted) results."""
    while not hasattr(results, field):
        inner = getattr(results, "inner_results", None)
        results = results.accepted_results if inner is None else inner
    return getattr(results, field)


def _gradients(results, num_chains):
    if _has(results, "leapfrogs_taken"):  # NUTS: per chain
        return tf.cast(_innermost(results, "leapfrogs_taken"), tf.int64)
    return tf.fill([num_chains], tf.cast(_innermost(results, "num_leapfrog_steps"), tf.int64))


def _has(results, field: str) -> bool:
    try:
        _innermost(results, field)
    except AttributeError:
        return False
    return True


def _trace(state, results, num_chains):
    del state
    log_accept_ratio = _innermost(results, "log_accept_ratio")
    if _has(results, "has_divergence"):  # NUTS
        divergent = _innermost(results, "has_divergence")
    else:
        divergent = ~(log_accept_ratio > -DIVERGENCE_NATS)  # NaN counts
    return {
        "base_state": results.base_state,
        "gradients": _gradients(results, num_chains),
        "divergent": divergent,
        "accept": tf.exp(tf.minimum(log_accept_ratio, 0.0)),
    }


def _run_chains(neutra, kind, num_results, num_burnin_steps, num_chains, seed, base=None):
    """Burn-in and kept draws in one loop (one loop to compile, not two); the kept part."""
    init_seed, chain_seed = tfp.random.split_seed(seed)
    if base is None:
        base = neutra.surrogate.distribution.sample(num_chains, seed=init_seed)
    chain = tfp.mcmc.sample_chain(
        num_burnin_steps + num_results,
        neutra.bijector.forward(base),
        previous_kernel_results=neutra.bootstrap_results(base_state=base),
        kernel=neutra,
        trace_fn=lambda s, r: _trace(s, r, num_chains),
        return_final_kernel_results=True,
        seed=chain_seed,
    )
    # The starts' gradients (one per chain) and the burn-in's.
    burnin_gradients = 1 + tf.reduce_sum(chain.trace["gradients"][:num_burnin_steps], axis=0)
    kept = tf.nest.map_structure(lambda x: x[num_burnin_steps:], (chain.all_states, chain.trace))
    final = chain.final_kernel_results
    step = _innermost(final, "new_step_size")
    length = _innermost(final, "max_trajectory_length") if kind == "hmc" else None
    return (*kept, burnin_gradients, step, length)


def ess_and_rhat(states, num_chains: int):
    """Per parameter: ESS across chains and split R-hat, each a verdict, never NaN.

    Chains that never moved have no within-chain variance: R-hat is `+inf` (TFP gives `inf`
    when the chains sit at different values, NaN when at the same one), and ESS at most one
    draw a chain (0 when all sit at the same value, where TFP gives NaN).
    """
    cross_chain = 1 if num_chains > 1 else None

    def ess(x):
        value = tfp.mcmc.effective_sample_size(x, cross_chain_dims=cross_chain)
        return tf.where(tf.math.is_nan(value), tf.zeros_like(value), value)

    def rhat(x):
        value = tfp.mcmc.potential_scale_reduction(x, split_chains=True)
        return tf.where(tf.math.is_nan(value), tf.fill(tf.shape(value), np.inf), value)

    return tf.nest.map_structure(ess, states), tf.nest.map_structure(rhat, states)


def _result(states, trace, burnin_gradients, step, length, num_chains) -> NeuTraResult:
    ess, rhat = ess_and_rhat(states, num_chains)
    return NeuTraResult(
        states=states,
        base_states=trace["base_state"],
        num_gradient_evaluations=burnin_gradients + tf.reduce_sum(trace["gradients"], axis=0),
        ess=ess,
        rhat=rhat,
        num_divergences=tf.reduce_sum(tf.cast(trace["divergent"], tf.int64), axis=0),
        acceptance_rate=tf.reduce_mean(trace["accept"], axis=0),
        step_size=step,
        trajectory_length=length,
    )
