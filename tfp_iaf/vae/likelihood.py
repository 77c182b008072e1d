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
`evaluate_dataset` runs each batch's chunks in one `tf.function` (optionally XLA-compiled) and
shows a progress bar with the running means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras

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


def _batch_totals_fn(
    log_weights_fn: LogWeightsFn,
    num_samples: int,
    chunk_size: int | None,
    jit_compile: bool,
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """One batch's float64 sums of log p(x) and ELBO and its size, as one `tf.function`.

    All chunks of a batch run in one graph call (no Python dispatch per chunk, sums kept on the
    device), optionally XLA-compiled; the seeds and the arithmetic are those of
    `importance_sampled_log_likelihood`, so the estimates are the same.
    """

    def totals(x, seed):
        est = importance_sampled_log_likelihood(log_weights_fn, x, num_samples, chunk_size, seed)
        return (
            tf.reduce_sum(tf.cast(est.log_px, tf.float64)),
            tf.reduce_sum(tf.cast(est.elbo, tf.float64)),
            tf.shape(est.log_px)[0],
        )

    return tf.function(totals, reduce_retracing=True, jit_compile=jit_compile)


def _num_batches(dataset) -> int | None:
    if isinstance(dataset, tf.data.Dataset):
        n = int(dataset.cardinality())
        return n if n >= 0 else None
    try:
        return len(dataset)
    except TypeError:
        return None


def evaluate_dataset(
    log_weights_fn: LogWeightsFn,
    dataset: Iterable[tf.Tensor],
    num_samples: int,
    chunk_size: int | None = None,
    seed: int | tf.Tensor = 0,
    *,
    verbose: int = 1,
    jit_compile: bool = False,
) -> dict[str, float]:
    """Averages `importance_sampled_log_likelihood` over a dataset of batches.

    Every batch runs as one `tf.function` call (all its chunks of samples in one graph), so
    `log_weights_fn` must be traceable (a model's `log_weights` is). With `verbose=1`, a Keras
    progress bar counts batches, with an ETA when the number of batches is known (a
    `tf.data.Dataset` of known cardinality, or a sized iterable), and shows the running means
    of log p(x) and the ELBO (nats per example) over the batches done.

    Args:
      log_weights_fn: as for `importance_sampled_log_likelihood`.
      dataset: an iterable of `[batch, ...]` example tensors (e.g. a batched `tf.data.Dataset`).
      num_samples: K, importance samples per example.
      chunk_size: samples per call of `log_weights_fn`.
      seed: an int or `[2]` stateless seed; batch `b` uses `fold_in(seed, b)`.
      verbose: 0 silent, 1 a progress bar, 2 one line at the end (as Keras `fit`).
      jit_compile: XLA-compile each batch's computation (the first batch, and a last smaller
        one, pay a compilation). TF's stateless random ops may choose another algorithm under
        XLA, so the samples, and the estimate within its Monte Carlo error, differ from those
        without; each setting is deterministic given `seed`.

    Returns:
      `{"log_px": mean log p(x), "elbo": mean ELBO, "num_examples": N}` (nats per example).

    Raises:
      ValueError: an empty `dataset`, or any error of `importance_sampled_log_likelihood`.
    """
    seed = _as_seed(seed)
    num_samples = _checks.positive_int("num_samples", num_samples)
    batch_totals = _batch_totals_fn(log_weights_fn, num_samples, chunk_size, jit_compile)
    shown = ("log p(x)", "elbo")
    progress = tf_keras.utils.Progbar(
        _num_batches(dataset), verbose=verbose, stateful_metrics=shown, unit_name="batch"
    )
    total_log_px, total_elbo, count, values = 0.0, 0.0, 0, []
    for b, x in enumerate(dataset):
        sum_log_px, sum_elbo, n = batch_totals(
            x, tf.random.experimental.stateless_fold_in(seed, b)
        )
        total_log_px += float(sum_log_px)
        total_elbo += float(sum_elbo)
        count += int(n)
        values = list(zip(shown, (total_log_px / count, total_elbo / count), strict=True))
        progress.update(b + 1, values)
    if count == 0:
        raise ValueError("`dataset` must yield at least one example; got an empty dataset")
    if progress.target is None:
        progress.update(b + 1, values, finalize=True)
    return {"log_px": total_log_px / count, "elbo": total_elbo / count, "num_examples": count}


def bits_per_dim(log_px_nats, num_dims: int):
    """Negative log-likelihood in bits per dimension: `-log p(x) / (num_dims * ln 2)`.

    Raises:
      ValueError: `num_dims` not a positive integer.
    """
    num_dims = _checks.positive_int("num_dims", num_dims)
    return -log_px_nats / (num_dims * math.log(2.0))
