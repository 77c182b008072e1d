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
    """The importance-sampled `log p(data) ~= log mean(w)`, from `log w` (NumPy or tensor).

    Args:
      log_weights: `log w`, any shape (flattened), at least one value. A `-inf` is a weight of
        0 (a sample where the target has no mass) and counts in the mean; a `+inf` makes the
        estimate `+inf`.

    Returns:
      `log mean(w)`, computed in log space (no weight is exponentiated); `-inf` when every
      weight is 0.

    Raises:
      ValueError: no weights, or a NaN one.
    """
    lw = np.asarray(log_weights, np.float64).ravel()
    if lw.size == 0:
        raise ValueError(f"`log_weights` must hold at least one value; got {lw.size}")
    if np.any(np.isnan(lw)):
        raise ValueError(f"`log_weights` must not be NaN; got {np.sum(np.isnan(lw))} NaN")
    if np.any(lw == math.inf):
        return math.inf
    top = lw.max()
    if top == -math.inf:
        return -math.inf
    return float(top + math.log(np.mean(np.exp(lw - top))))


def pareto_khat(log_weights) -> float:
    """The Pareto k-hat of importance weights: how heavy their right tail is.

    A generalised Pareto distribution is fitted to the largest `M = min(n / 5, 3 sqrt(n))`
    weights (Zhang and Stephens' estimate, with PSIS's weak prior towards 0.5). Vehtari et
    al.'s reading: `k < 0.5` the weights' variance is finite and importance sampling (and the
    surrogate) is reliable; `0.5 <= k < 0.7` usable; `k >= 0.7` the surrogate misses mass
    the target has. Yao et al. use it as a diagnostic of variational posteriors.

    The fit is computed from `log w` alone, the exceedances relative to their lower quartile
    (the estimate does not depend on their scale), so any spread of finite log-weights gives a
    finite `k`, however many nats the tail spans.

    Args:
      log_weights: `log w`, any shape (flattened), at least 25 values, all finite.

    Returns:
      `k`; `-inf` when the tail's weights are all equal (`q` proportional to `p` there);
      `+inf` when more than a quarter of the tail's weights equal the weight below the tail
      while larger ones exist (the fit's limit as those exceedances go to 0: a tail too heavy to
      estimate).

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
    tail, threshold = lw[-m:], lw[-m - 1]
    if tail[-1] <= threshold:
        return -math.inf
    with np.errstate(divide="ignore"):  # an exceedance of 0 has log -inf
        # log(w_i - w_threshold), from log-weights of any size.
        log_x = tail + np.log1p(-np.exp(threshold - tail))
    log_quartile = log_x[int(m / 4 + 0.5) - 1]
    if log_quartile == -math.inf:
        return math.inf
    return _gpd_shape(log_x - log_quartile)


def _gpd_shape(log_x: np.ndarray) -> float:
    """The shape `k` of a generalised Pareto distribution fitted to sorted exceedances `x > 0`.

    With `theta = -k / sigma` the density is `(1 - theta x)^(-1/k - 1) / sigma`; given theta,
    the likelihood is largest at `k(theta) = mean(log(1 - theta x))`, and Zhang and Stephens
    average theta over a grid under that profile likelihood. PSIS then shrinks `k` towards 0.5
    with the weight of 10 observations.

    `k` does not depend on the exceedances' scale, so they come as `log_x = log(x / s)` for any
    `s` (the caller's lower quartile, so that `x_(n/4) = 1`), and everything is computed from
    `t = theta s` and `log_x`: no exceedance is ever exponentiated, so none under- or overflows.
    """
    n = log_x.size
    m = 30 + int(math.sqrt(n))
    # Zhang and Stephens' grid, theta = 1 / x_max + (1 - sqrt(m / (j - 1/2))) / (3 x_(n/4)).
    t = (1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))) / 3.0 + math.exp(-log_x[-1])
    k = np.mean(_log1m(t[:, None], log_x), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lik = n * (np.log(-t / k) - k - 1.0)  # up to a constant, `-n log s`
    log_lik = np.where(np.isfinite(log_lik), log_lik, -np.inf)
    weights = np.exp(log_lik - np.logaddexp.reduce(log_lik))  # the grid's posterior weights
    t_hat = float(np.sum(t * weights))
    k_hat = float(np.mean(_log1m(t_hat, log_x)))
    return (n * k_hat + 10 * 0.5) / (n + 10)


def _log1m(t, log_x):
    """`log(1 - t x)` from `log x`, for `t x <= 1`, whatever the size of `x`."""
    # `np.where` computes both branches: `t = 0` or `x = 0` give `log |t x| = -inf`, and the
    # branch of `t > 0` may hit `log(0)` at entries the other one answers.
    with np.errstate(divide="ignore"):
        a = np.log(np.abs(t)) + log_x  # log |t x|
        return np.where(t < 0, np.logaddexp(0.0, a), np.log1p(-np.exp(np.minimum(a, 0.0))))
