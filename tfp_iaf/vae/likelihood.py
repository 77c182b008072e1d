"""Importance-sampled marginal likelihood and the ELBO, chunked over samples.

For a latent-variable model `p(x, z)` and an approximate posterior `q(z | x)`, the importance
weights `log w_k = log p(x, z_k) - log q(z_k | x)`, `z_k ~ q(z | x)`, give

- `log p(x) ~= logsumexp_k(log w_k) - log K` (a lower bound in expectation, tight as K grows;
  Burda et al. 2015, https://arxiv.org/abs/1509.00519; the IAF paper's reported numbers);
- `ELBO = mean_k(log w_k)`, a K-sample estimate of `E_q[log p(x, z) - log q(z | x)]`.

The K samples are drawn `chunk_size` at a time, so K = 1000+ fits in memory, and combined with a
running log-sum-exp. Every chunk's seed is derived from one stateless seed, so the estimate is
deterministic given the seed and the chunk size (as long as the model samples
statelessly, e.g. `tf.random.stateless_normal` or TFP `sample(seed=...)` with a tensor seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks

__all__ = [
    "ImportanceEstimate",
    "LogWeightsFn",
    "bits_per_dim",
    "evaluate_dataset",
    "importance_sampled_log_likelihood",
    "log_mean_exp",
]

LogWeightsFn = Callable[[tf.Tensor, int, tf.Tensor], tf.Tensor]
"""`(x: [batch, ...], num_samples, seed: int32 [2]) -> log w: [num_samples, batch]`."""


class ImportanceEstimate(NamedTuple):
    """Per-example estimates, in nats.

    Attributes:
      log_px: `[batch]`, `logsumexp_k(log w_k) - log K`.
      elbo: `[batch]`, `mean_k(log w_k)`.
    """

    log_px: tf.Tensor
    elbo: tf.Tensor


def log_mean_exp(log_w: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """`log(mean(exp(log_w)))` along `axis`, computed stably with `reduce_logsumexp`."""
    log_w = tf.convert_to_tensor(log_w)
    n = tf.cast(tf.shape(log_w)[axis], log_w.dtype)
    return tf.reduce_logsumexp(log_w, axis=axis) - tf.math.log(n)


def _as_seed(seed) -> tf.Tensor:
    """An int or a shape-[2] stateless seed, as an int32 `[2]` tensor."""
    if isinstance(seed, int | np.integer):
        return tf.constant([0, int(seed)], dtype=tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.shape != (2,) or not seed.dtype.is_integer:
        raise ValueError(
            f"`seed` must be an int or an integer tensor of shape [2]; got {seed.dtype.name} "
            f"of shape {seed.shape}"
        )
    return tf.cast(seed, tf.int32)


def importance_sampled_log_likelihood(
    log_weights_fn: LogWeightsFn,
    x: tf.Tensor,
    num_samples: int,
    chunk_size: int | None = None,
    seed: int | tf.Tensor = 0,
) -> ImportanceEstimate:
    """Estimates `log p(x)` and the ELBO of every example in a batch.

    Args:
      log_weights_fn: `(x, n, seed) -> [n, batch]` log importance weights
        `log p(x, z) - log q(z | x)` for `n` posterior samples drawn with the stateless `seed`.
      x: a batch of examples, `[batch, ...]`.
      num_samples: K, the number of importance samples per example.
      chunk_size: samples drawn per call of `log_weights_fn` (default: all K at once). Memory
        scales with `chunk_size * batch`.
      seed: an int or an int32 `[2]` stateless seed; chunk `i` uses `fold_in(seed, i)`.

    Returns:
      An `ImportanceEstimate` of `[batch]` tensors in nats.

    Raises:
      ValueError: `num_samples` or `chunk_size` not a positive integer, a malformed `seed`, or
        `log_weights_fn` returning a shape other than `[n, batch]`.
    """
    num_samples = _checks.positive_int("num_samples", num_samples)
    if chunk_size is None:
        chunk_size = num_samples
    chunk_size = min(_checks.positive_int("chunk_size", chunk_size), num_samples)
    seed = _as_seed(seed)
    batch = x.shape[0]
    lse_chunks, sum_log_w = [], 0.0
    for i, start in enumerate(range(0, num_samples, chunk_size)):
        n = min(chunk_size, num_samples - start)
        chunk_seed = tf.random.experimental.stateless_fold_in(seed, i)
        log_w = log_weights_fn(x, n, chunk_seed)
        if (
            log_w.shape.rank != 2
            or log_w.shape[0] != n
            or (batch is not None and log_w.shape[1] not in (None, batch))
        ):
            raise ValueError(
                f"`log_weights_fn` must return log weights of shape [{n}, {batch}] "
                f"(samples, batch); got {tuple(log_w.shape)}"
            )
        lse_chunks.append(tf.reduce_logsumexp(log_w, axis=0))
        sum_log_w += tf.reduce_sum(log_w, axis=0)
    dtype = lse_chunks[0].dtype
    log_k = tf.constant(math.log(num_samples), dtype)  # not tf.cast: a float64 log k stays exact
    log_px = tf.reduce_logsumexp(tf.stack(lse_chunks), axis=0) - log_k
    return ImportanceEstimate(log_px=log_px, elbo=sum_log_w / tf.cast(num_samples, dtype))


def evaluate_dataset(
    log_weights_fn: LogWeightsFn,
    dataset: Iterable[tf.Tensor],
    num_samples: int,
    chunk_size: int | None = None,
    seed: int | tf.Tensor = 0,
) -> dict[str, float]:
    """Averages `importance_sampled_log_likelihood` over a dataset of batches.

    Args:
      log_weights_fn: as for `importance_sampled_log_likelihood`.
      dataset: an iterable of `[batch, ...]` example tensors (e.g. a batched `tf.data.Dataset`).
      num_samples: K, importance samples per example.
      chunk_size: samples per call of `log_weights_fn`.
      seed: an int or `[2]` stateless seed; batch `b` uses `fold_in(seed, b)`.

    Returns:
      `{"log_px": mean log p(x), "elbo": mean ELBO, "num_examples": N}` (nats per example).

    Raises:
      ValueError: an empty `dataset`, or any error of `importance_sampled_log_likelihood`.
    """
    seed = _as_seed(seed)
    total_log_px, total_elbo, count = 0.0, 0.0, 0
    for b, x in enumerate(dataset):
        est = importance_sampled_log_likelihood(
            log_weights_fn,
            x,
            num_samples,
            chunk_size,
            tf.random.experimental.stateless_fold_in(seed, b),
        )
        total_log_px += float(tf.reduce_sum(tf.cast(est.log_px, tf.float64)))
        total_elbo += float(tf.reduce_sum(tf.cast(est.elbo, tf.float64)))
        count += int(est.log_px.shape[0])
    if count == 0:
        raise ValueError("`dataset` must yield at least one example; got an empty dataset")
    return {"log_px": total_log_px / count, "elbo": total_elbo / count, "num_examples": count}


def bits_per_dim(log_px_nats, num_dims: int):
    """Negative log-likelihood in bits per dimension: `-log p(x) / (num_dims * ln 2)`.

    Raises:
      ValueError: `num_dims` not a positive integer.
    """
    num_dims = _checks.positive_int("num_dims", num_dims)
    return -log_px_nats / (num_dims * math.log(2.0))
