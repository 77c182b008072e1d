"""A VAE with a diagonal-Gaussian or IAF posterior, as a `tf_keras.Model` trained with `fit`.

- posterior: `z_0 = mu(x) + sigma(x) * eps`, `eps ~ N(0, I)`, then the IAF steps
  `z_t = shift_t(z_{t-1}; h) + exp(log_sigma_t(z_{t-1}; h)) * z_{t-1}`, all fed the encoder's
  context `h` (paper eq. 10-11); `log q(z_T | x) = sum_i [log N(eps_i) - log sigma_i -
  sum_t log_sigma_{t,i}]`;
- prior `p(z) = N(0, I)`; likelihood Bernoulli with the decoder's logits;
- training objective: `E_M[log p(x | z)] - free_bits_kl(...)` (single-sample KL per latent unit,
  floored per group, paper eq. 15); the reported `elbo` always uses the true KL.

The posterior is `tfd.TransformedDistribution(Independent(Normal(mu, sigma)),
flow.with_context(h))` (`posterior`), sampled and scored through TFP; free bits take the KL of
every latent unit from `tfp_iaf.unit_log_prob`, which reads the flow's cached per-unit log-dets
of the sample.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras
from tfp_iaf.flow import AutoregressiveFlow, Flow
from tfp_iaf.posterior import unit_log_prob
from tfp_iaf.vae.free_bits import free_bits_kl

tfd = tfp.distributions

__all__ = ["VAE"]

_METRICS = ("loss", "elbo", "kl", "nll", "log_sigma0", "flow_log_det")


class VAE(tf_keras.Model):
    """Variational autoencoder with a diagonal Gaussian or flow posterior.

    Shapes: `x: [batch, *obs_shape]` in {0, 1}; `z: [num_samples, batch, latent_size]`.

    Args:
      encoder: layer mapping `x` to features `[batch, F]`.
      decoder: layer mapping `z: [N, latent_size]` to Bernoulli logits `[N, *obs_shape]`.
      latent_size: dimension of `z`.
      flow: a tfp_iaf `Flow` on `(latent_size,)` (an `IAFStack`, a `PlanarFlow`), or None for
        the diagonal Gaussian posterior. The encoder's head produces the flow's context, of
        the flow's `context_shape` (none if it takes none). A flow without per-unit log-dets
        (not an `AutoregressiveFlow`: a `PlanarFlow`) gives the KL as one term, the total, and
        so takes no free bits.
      free_bits: the KL floor `lambda` per latent unit, in nats (0 disables it).
      seed: base of the stateless seeds of the training samples (step `i` uses `[seed, i]`).
      name: model name.

    Raises:
      ValueError: a non-positive `latent_size`, a negative `free_bits`, a `flow` whose event
        shape is not `(latent_size,)` or whose context is not a vector, or free bits with a
        flow that has no per-unit log-dets.
      TypeError: a `flow` that is not a tfp_iaf `Flow`.
    """

    def __init__(
        self,
        encoder: tf_keras.layers.Layer,
        decoder: tf_keras.layers.Layer,
        latent_size: int,
        *,
        flow: Flow | None = None,
        free_bits: float = 0.0,
        seed: int = 0,
        name: str = "vae",
    ):
        super().__init__(name=name)
        latent_size = _checks.positive_int("latent_size", latent_size)
        free_bits = _checks.non_negative_float("free_bits", free_bits)
        context_size = 0
        if flow is not None:
            if not isinstance(flow, Flow):
                raise TypeError(
                    f"`flow` must be a tfp_iaf flow (e.g. tfp_iaf.dense_iaf_stack(...), "
                    f"tfp_iaf.PlanarFlow(...)); got {type(flow).__name__}"
                )
            if flow.event_shape != (latent_size,):
                raise ValueError(
                    f"`flow` must act on event shape ({latent_size},) (latent_size); got "
                    f"{flow.event_shape}"
                )
            if flow.context_shape is not None and len(flow.context_shape) != 1:
                raise ValueError(
                    "`flow` must take a context vector (the encoder head's output) or none; "
                    f"got context shape {flow.context_shape}"
                )
            if free_bits and not isinstance(flow, AutoregressiveFlow):
                raise ValueError(
                    f"`free_bits` must be 0 with a flow that has no per-unit log-dets "
                    f"({type(flow).__name__}: its Jacobian is not triangular); got "
                    f"free_bits={free_bits!r}"
                )
            context_size = 0 if flow.context_shape is None else flow.context_shape[0]
        self.encoder = encoder
        self.decoder = decoder
        self.flow = flow
        self.latent_size = latent_size
        self.context_size = context_size
        self.free_bits = float(free_bits)
        self.seed = int(seed)
        # Per-unit terms of log q: from a triangular flow or no flow; otherwise the total.
        self._unit_terms = flow is None or isinstance(flow, AutoregressiveFlow)
        self.head = tf_keras.layers.Dense(2 * latent_size + context_size, name="head")
        self._trackers = {m: tf_keras.metrics.Mean(name=m) for m in _METRICS}

    @property
    def metrics(self):
        return list(self._trackers.values())

    def posterior_parameters(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """`(mu, sigma, h)` of `q(z | x)`: `[batch, latent]` twice, and `[batch, context]`."""
        # float32 under a mixed policy: the flow, the log-densities and the loss stay exact.
        out = tf.cast(self.head(self.encoder(x)), tf.float32)
        d = self.latent_size
        loc, raw_scale = out[..., :d], out[..., d : 2 * d]
        scale = tf.math.softplus(raw_scale) + 1e-4
        context = out[..., 2 * d :] if self.context_size else None
        return loc, scale, context

    def posterior(self, x: tf.Tensor) -> tfd.Distribution:
        """`q(z | x)`, batch shape `[batch]`, event shape `[latent]`.

        `tfd.TransformedDistribution(Independent(Normal(mu, sigma), 1), flow.with_context(h))`
        with a flow (the flow itself if it takes no context), the `Independent` base alone
        without one: sampled and scored with no `bijector_kwargs`.
        """
        return self._posterior(*self.posterior_parameters(x))

    def _posterior(self, loc, scale, context):
        base = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)
        if self.flow is None:
            return base
        flow = self.flow if context is None else self.flow.with_context(context)
        return tfd.TransformedDistribution(base, flow)

    def _sample(self, x, num_samples, seed):
        loc, scale, context = self.posterior_parameters(x)
        q = self._posterior(loc, scale, context)
        z = q.sample(num_samples, seed=seed)
        # Both from the cache of q's bijector, filled by the sample: no network pass.
        log_q = unit_log_prob(q, z) if self._unit_terms else q.log_prob(z)[..., None]
        stats = {"log_sigma0": tf.reduce_mean(tf.math.log(scale))}
        if self.flow is not None:
            log_det = -q.bijector.inverse_log_det_jacobian(z, event_ndims=1)
            stats["flow_log_det"] = tf.reduce_mean(log_det)
        else:
            stats["flow_log_det"] = tf.zeros([])
        return z, log_q, stats

    def sample_posterior(
        self, x: tf.Tensor, num_samples: int, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Samples `z ~ q(z | x)` with a stateless int32 `[2]` `seed`.

        Returns:
          `(z, log_q)`: `z: [num_samples, batch, latent]`; `log_q` holds every unit's share of
          `log q(z | x)` (they sum to it), `[num_samples, batch, latent]`, or `[..., 1]`, the
          total, with a flow that has no per-unit log-dets (a `PlanarFlow`).
        """
        z, log_q, _ = self._sample(x, num_samples, seed)
        return z, log_q

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """Bernoulli logits `[..., *obs_shape]` of `p(x | z)` for `z: [..., latent]`."""
        flat = tf.reshape(z, [-1, self.latent_size])
        logits = tf.cast(self.decoder(flat), tf.float32)
        return tf.reshape(logits, tf.concat([tf.shape(z)[:-1], tf.shape(logits)[1:]], axis=0))

    def _terms(self, x, num_samples, seed):
        """`log p(x | z)`: `[n, batch]`; per-unit KL `log q - log p(z)`: `[n, batch, latent]`
        (`[n, batch, 1]`, the total, with a flow that has no per-unit log-dets)."""
        z, log_q, stats = self._sample(x, num_samples, seed)
        logits = self.decode(z)
        labels = tf.broadcast_to(tf.cast(x, logits.dtype), tf.shape(logits))
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        log_px_z = -tf.reduce_sum(ce, axis=list(range(2, logits.shape.rank)))
        log_pz = tfd.Normal(0.0, 1.0).log_prob(z)
        if log_q.shape[-1] != log_pz.shape[-1]:
            log_pz = tf.reduce_sum(log_pz, axis=-1, keepdims=True)
        return log_px_z, log_q - log_pz, stats

    def log_weights(self, x: tf.Tensor, num_samples: int, seed: tf.Tensor) -> tf.Tensor:
        """Log importance weights `log p(x, z) - log q(z | x)`: `[num_samples, batch]`.

        The `log_weights_fn` of `tfp_iaf.vae.importance_sampled_log_likelihood`.
        """
        log_px_z, kl_units, _ = self._terms(x, num_samples, seed)
        return log_px_z - tf.reduce_sum(kl_units, axis=-1)

    def call(self, x, training=None):
        """Single-sample ELBO of every example, `[batch]` (fixed seed)."""
        return self.log_weights(x, 1, tf.constant([self.seed, 0]))[0]

    def _step(self, x, seed):
        log_px_z, kl_units, stats = self._terms(x, 1, seed)
        log_px_z, kl_units = log_px_z[0], kl_units[0]
        kl = tf.reduce_sum(kl_units, axis=-1)
        loss = -tf.reduce_mean(log_px_z) + free_bits_kl(kl_units, self.free_bits)
        values = {
            "loss": loss,
            "elbo": tf.reduce_mean(log_px_z - kl),
            "kl": tf.reduce_mean(kl),
            "nll": -tf.reduce_mean(log_px_z),
            **stats,
        }
        return loss, values

    def _report(self, values):
        for name, value in values.items():
            self._trackers[name].update_state(value)
        return {name: t.result() for name, t in self._trackers.items()}

    def train_step(self, x):
        step = tf.cast(self.optimizer.iterations, tf.int32)
        with tf.GradientTape() as tape:
            loss, values = self._step(x, tf.stack([tf.constant(self.seed, tf.int32), step]))
            # Gradients are summed over replicas: scale so that they average.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        return self._report(values)

    def test_step(self, x):
        return self._report(self._step(x, tf.constant([self.seed, -1]))[1])

    def sample(
        self, num_samples: int, seed: int | tf.Tensor = 0, temperature: float = 1.0
    ) -> tf.Tensor:
        """Mean images `sigmoid(logits)` of `p(x | z)`, `z ~ N(0, temperature^2 I)` (the prior
        at `temperature=1`; below 1, samples nearer its mode): `[num_samples, *obs_shape]`.

        Raises:
          ValueError: a `temperature` that is not a finite positive number.
        """
        temperature = _checks.finite_float("temperature", temperature, positive=True)
        seed = tf.constant([0, seed]) if isinstance(seed, int) else seed
        z = tf.random.stateless_normal([num_samples, self.latent_size], seed=seed)
        return tf.sigmoid(self.decode(temperature * z))
