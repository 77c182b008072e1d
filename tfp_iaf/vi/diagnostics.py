"""How good a surrogate is: importance-sampled evidence and the Pareto k-hat of its weights."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["importance_weights", "log_evidence", "pareto_khat"]


def importance_weights(target_log_prob_fn, surrogate_posterior, num_samples: int, seed=None):
    """`(samples, log w)` with `log w = log p(z) - log q(z)`, `z ~ q`: `num_samples` each.

    Args:
      target_log_prob_fn: `fn(value) -> log p(value)` (unnormalised), `value` structured like
        the samples.
      surrogate_posterior: `q`.
      num_samples: how many samples.
      seed: seed of the samples.
    """
    z = surrogate_posterior.sample(num_samples, seed=seed)
    return z, target_log_prob_fn(z) - surrogate_posterior.log_prob(z)


def log_evidence(log_weights) -> float:
    """The importance-sampled `log p(data) ~= log mean(w)`, from `log w` (NumPy or tensor)."""
    lw = np.asarray(log_weights, np.float64).ravel()
    return float(np.logaddexp.reduce(lw) - math.log(lw.size))


def pareto_khat(log_weights) -> float:
    """The Pareto k-hat of importance weights: how heavy their right tail is.

    A generalised Pareto distribution is fitted to the largest `M = min(n / 5, 3 sqrt(n))`
    weights (Zhang and Stephens' estimate, with PSIS's weak prior towards 0.5). Vehtari et
    al.'s reading: `k < 0.5` the weights' variance is finite and importance sampling (and the
    surrogate) is reliable; `0.5 <= k < 0.7` usable; `k >= 0.7` the surrogate misses mass
    the target has. Yao et al. use it as a diagnostic of variational posteriors.

    Args:
      log_weights: `log w`, any shape (flattened), at least 25 values.

    Returns:
      `k`; `-inf` when the tail's weights are all equal (`q` proportional to `p` there).

    Raises:
      ValueError: fewer than 25 weights, or a non-finite one.

    References:
      Zhang and Stephens, A new and efficient estimation method for the generalized Pareto
      distribution, Technometrics 2009.
      Vehtari, Simpson, Gelman, Yao, Gabry, Pareto smoothed importance sampling, 2015-2024.
      https://arxiv.org/abs/1507.02646
      Yao, Vehtari, Simpson, Gelman, Yes, but did it work?: Evaluating variational inference,
      ICML 2018. https://arxiv.org/abs/1802.02538
    """
    lw = np.sort(np.asarray(log_weights, np.float64).ravel())
    n = lw.size
    if n < 25:
        raise ValueError(f"`log_weights` must hold at least 25 values; got {n}")
    if not np.all(np.isfinite(lw)):
        raise ValueError(f"`log_weights` must be finite; got {np.sum(~np.isfinite(lw))} not")
    m = int(min(0.2 * n, 3.0 * math.sqrt(n)))
    lw = lw - lw[-1]
    exceedances = np.exp(lw[-m:]) - np.exp(lw[-m - 1])
    if exceedances[-1] <= 0.0:
        return -math.inf
    return _gpd_shape(exceedances)


def _gpd_shape(x: np.ndarray) -> float:
    """The shape `k` of a generalised Pareto distribution fitted to sorted `x > 0`.

    With `theta = -k / sigma` the density is `(1 - theta x)^(-1/k - 1) / sigma`; given theta,
    the likelihood is largest at `k(theta) = mean(log(1 - theta x))`, and Zhang and Stephens
    average theta over a grid under that profile likelihood. PSIS then shrinks `k` towards 0.5
    with the weight of 10 observations.
    """
    n = x.size
    m = 30 + int(math.sqrt(n))
    theta = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    theta = theta / (3.0 * x[int(n / 4 + 0.5) - 1]) + 1.0 / x[-1]
    k = np.mean(np.log1p(-theta[:, None] * x), axis=1)
    log_lik = n * (np.log(-theta / k) - k - 1.0)
    weights = np.exp(log_lik - np.logaddexp.reduce(log_lik))  # the grid's posterior weights
    theta_hat = float(np.sum(theta * weights))
    k_hat = float(np.mean(np.log1p(-theta_hat * x)))
    return (n * k_hat + 10 * 0.5) / (n + 10)
