"""The ResNet VAE runs of the CIFAR-shaped benchmarks: build, train step by step, score.

The scripts, run as `python -m bench.<script>`, import it as `from bench import resnet_runs`.
bench_reference.py, studies/bench_decoder_scale.py and studies/bench_stability.py train
`tfp_iaf.vae.ResNetVAE` for a few hundred steps and look at every step (its loss, the
first non-finite one, a held-out score every few steps, a replay of a diverging step), which
`vae_harness.train` (checkpointed, stopping at the first non-finite loss) is not for;
gpu_suite's `placement` and `cifar` stages time its steps:

- `make_model(first_batch, ...)`: a seeded `ResNetVAE`, data-initialised on `first_batch` and
  compiled (by default with `make_optimizer()`);
- `train_steps(model, batches, num_steps)`: one training step a batch, yielding
  `(step, batch, loss)`, the loss of that step alone (the metrics are reset before each);
- `elbo_bits(model, seed)`: a scorer of images, their mean single-sample ELBO in bits/dim
  (the weights as they are, a fixed seed: every call scores with the same noise).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

import vae_harness
from tfp_iaf import tf_keras, vae


def make_model(
    first_batch,
    *,
    seed: int = 0,
    optimizer: tf_keras.optimizers.Optimizer | None = None,
    jit_compile: bool = False,
    **model_kwargs,
) -> vae.ResNetVAE:
    """`vae.ResNetVAE(seed=seed, **model_kwargs)` after `set_random_seed(seed)`, initialised.

    Args:
      first_batch: integer pixels `[batch, H, W, C]` for `ResNetVAE.initialize`.
      seed: the Keras and the model's seed.
      optimizer: what the model is compiled with (default: `vae_harness.make_optimizer()`).
      jit_compile: compile the training step with XLA.
      **model_kwargs: `ResNetVAE`'s arguments.
    """
    tf_keras.utils.set_random_seed(seed)
    model = vae.ResNetVAE(seed=seed, **model_kwargs)
    model.initialize(tf.convert_to_tensor(first_batch))
    model.compile(optimizer=optimizer or vae_harness.make_optimizer(), jit_compile=jit_compile)
    return model


def batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """`images` in consecutive batches of `batch_size` (a last, shorter one is dropped)."""
    for start in range(0, len(images) - batch_size + 1, batch_size):
        yield images[start : start + batch_size]


def train_steps(
    model: vae.ResNetVAE, data: Iterable, num_steps: int
) -> Iterator[tuple[int, tf.Tensor, float]]:
    """Trains on the first `num_steps` batches of `data`; after each, `(step, batch, loss)`.

    `step` counts from 1; `loss` is that step's alone (NaN or inf when it was not finite;
    training goes on unless the caller stops).
    """
    step_fn = tf.function(model.train_step)
    for step, batch in enumerate(itertools.islice(data, num_steps), 1):
        batch = tf.convert_to_tensor(batch)
        model.reset_metrics()
        yield step, batch, float(step_fn(batch)["loss"])


def elbo_bits(model: vae.ResNetVAE, seed: int) -> Callable[[object], float]:
    """A scorer: images -> their mean single-sample ELBO in bits/dim (uniform model: 8)."""
    log_weights = tf.function(model.log_weights)
    eval_seed = tf.constant([7, seed])
    dims = math.prod(model.image_shape)

    def score(images) -> float:
        elbo = tf.reduce_mean(log_weights(tf.convert_to_tensor(images), 1, eval_seed))
        return float(vae.bits_per_dim(elbo, dims))

    return score
