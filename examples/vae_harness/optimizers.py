"""The optimizer of the VAE examples: Adamax with debiased Polyak averaging of the weights.

- `make_optimizer(kind="adamax")`: Keras's Adamax (bias-corrected, `eps = 1e-7` added to the
  running maximum); `kind="reference"`: the authors' (openai/iaf `tf_utils/adamax.py`: no bias
  correction, `eps = 1e-8` inside the maximum), for the paper preset.
- The weight average's decay at update n is `min(d, (1 + n) / (10 + n))`, as in
  `tf.train.ExponentialMovingAverage` with `num_updates`, so after a short run the averages are
  not stuck near the random init. `vae_harness.train` ends by swapping them in.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfp_iaf import tf_keras

__all__ = ["OPTIMIZERS", "make_optimizer"]


class _DebiasedAveragingAdamax(tf_keras.optimizers.Adamax):
    """Adamax whose weight average uses the warm-up decay `min(d, (1 + n) / (10 + n))`.

    `n` is the number of earlier updates, so the first average is `0.1 * init + 0.9 * w_1` and
    the initial weights' share decays like `prod_n (1 + n) / (10 + n)`, not like `d ** n`.
    """

    def _update_model_variables_moving_average(self, var_list):
        if not self.use_ema:
            return
        n = tf.cast(self.iterations, tf.float32)
        decay = tf.minimum(tf.constant(self.ema_momentum, tf.float32), (1.0 + n) / (10.0 + n))

        def update_average(average, var):
            d = tf.cast(decay, average.dtype)
            average.assign(d * average + (1 - d) * var)

        for var in var_list:
            average = self._model_variables_moving_average[self._index_dict[self._var_key(var)]]
            self._distribution_strategy.extended.update(
                average, update_average, args=(var,), group=False
            )


class _ReferenceAdamax(_DebiasedAveragingAdamax):
    """The authors' Adamax (openai/iaf `tf_utils/adamax.py`): no bias correction, and `eps`
    inside the running maximum: `m <- b1 m + (1 - b1) g`, `u <- max(b2 u + eps, |g|)`,
    `w <- w - lr m / u`. The first step is `lr (1 - b1) sign(g)`, a tenth of Keras's."""

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        key = self._index_dict[self._var_key(variable)]
        m, u = self._m[key], self._u[key]
        m.assign_add((gradient - m) * (1 - self.beta_1))
        u.assign(tf.maximum(self.beta_2 * u + self.epsilon, tf.abs(gradient)))
        variable.assign_sub(tf.cast(self.learning_rate, variable.dtype) * m / u)


OPTIMIZERS = ("adamax", "reference")


def make_optimizer(
    learning_rate: float = 1e-3,
    ema_momentum: float | None = 0.998,
    clip_norm: float | None = None,
    kind: str = "adamax",
) -> tf_keras.optimizers.Optimizer:
    """Adamax (the paper's optimizer) with debiased weight averaging.

    Args:
      learning_rate: Adamax step size (the paper: 0.002 for MNIST).
      ema_momentum: the Polyak averaging decay `d` in [0, 1), reached after the warm-up
        `min(d, (1 + n) / (10 + n))` at update n; None for no averaging.
      clip_norm: the gradients are rescaled together so that their global norm is at most
        this (each replica's, under a distribution strategy); None: no clipping. An early
        gradient spike then cannot move every weight by a full step at once (see
        docs/benchmarks_stability.md).
      kind: `"adamax"`: Keras's Adamax (bias-corrected, `eps = 1e-7` added to the maximum);
        `"reference"`: the authors' (no bias correction, `eps = 1e-8` inside the maximum, so
        the first steps are ten times smaller), for the paper preset.

    Returns:
      A `tf_keras.optimizers.Adamax`.

    Raises:
      ValueError: a non-positive `learning_rate` or `clip_norm`, an `ema_momentum` outside
        [0, 1), or an unknown `kind`.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"`kind` must be one of {OPTIMIZERS}; got {kind!r}")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be positive; got {learning_rate!r}")
    if ema_momentum is not None and not 0 <= ema_momentum < 1:
        raise ValueError(f"`ema_momentum` must be in [0, 1) or None; got {ema_momentum!r}")
    if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"`clip_norm` must be a positive number or None; got {clip_norm!r}")
    reference = kind == "reference"
    return (_ReferenceAdamax if reference else _DebiasedAveragingAdamax)(
        learning_rate,
        epsilon=1e-8 if reference else 1e-7,
        global_clipnorm=clip_norm,
        use_ema=ema_momentum is not None,
        ema_momentum=0.99 if ema_momentum is None else ema_momentum,
    )
