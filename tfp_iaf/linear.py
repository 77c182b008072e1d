"""The linear special case of IAF: a strictly triangular map computed from the context."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks, _fingerprint
from tfp_iaf import masks as masks_lib
from tfp_iaf.autoregressive import AutoregressiveNetwork, output_initializer, structure_seed

__all__ = ["LinearAutoregressive"]


class LinearAutoregressive(AutoregressiveNetwork):
    """The linear special case of IAF (Kingma et al. 2016, appendix A).

    - shift: `L(c) x` with `L(c)` strictly lower triangular in the chosen order, its entries a
      linear function of the context `c` (learned constants without a context);
    - log-scale: a linear function of the context, independent of `x`.

    With `InverseAutoregressiveFlow`, one step is `y = (diag(sigma(c)) + L(c)) x`: the paper's
    linear IAF `y = L(c) x` with unit diagonal is the case `sigma = 1`, where training starts,
    since both maps start near zero.

    Shapes: `x: [..., event_size]`, `context: [..., context_size] -> [..., event_size, 2]`.

    Args:
      event_size: number of positions `D`.
      context_size: size of the context vector, or None.
      order: generation order, as for `MADE`.
      seed: seed for a "random" order; None: drawn from TensorFlow's global seed if one is
        set, else fresh.
      **kwargs: passed to `tf_keras.layers.Layer`.

    Raises:
      TypeError: a size that is not an int, or a `dtype` that is not floating-point.
      ValueError: a non-positive size or a bad `order`.
    """

    needs_affine_update = True  # the one triangular solve below

    def __init__(
        self,
        event_size: int,
        context_size: int | None = None,
        order: masks_lib.OrderSpec = "left-to-right",
        seed: int | None = None,
        **kwargs,
    ):
        event_size = _checks.positive_int("event_size", event_size)
        context_size = _checks.positive_int("context_size", context_size, optional=True)
        if isinstance(order, str) and order == "random":
            seed = structure_seed(seed)
        degrees = masks_lib.input_degrees(event_size, order, seed)
        super().__init__(
            (event_size,), 2, None if context_size is None else (context_size,), degrees, **kwargs
        )
        self.event_size = event_size
        self.context_size = context_size
        # mask[i, j] = 1 where input j comes before output i in the order.
        self.mask = masks_lib.connect(degrees, degrees, strict=True).T
        # Every coefficient is a function of the context alone: its projection is the network.
        self.coefficients = self.context_projection(
            event_size * (event_size + 1),
            name="coefficients",
            kernel_initializer=output_initializer(),
            use_bias=True,
        )

    def _fingerprint(self) -> dict:
        return {**super()._fingerprint(), "order": _fingerprint.order_name(self.degrees)}

    def build(self, input_shape):
        if self.coefficients is None:
            self.constants = self.add_weight(
                "constants",
                shape=(self.event_size * (self.event_size + 1),),
                initializer=output_initializer(),
            )
        else:
            self.build_sublayer(self.coefficients, (None, self.context_size))
        super().build(input_shape)

    def _maps(self, context):
        """`(L, b)`: the masked `[..., D, D]` shift matrix and the `[..., D]` second output."""
        d = self.event_size
        flat = self.constants if context is None else self.coefficients(context)
        lower = tf.reshape(flat[..., : d * d], tf.concat([tf.shape(flat)[:-1], [d, d]], 0))
        return lower * tf.constant(self.mask, dtype=self.dtype), flat[..., d * d :]

    def call(self, x, context=None):
        lower, second = self._maps(context)
        shift = tf.linalg.matvec(lower, x)
        out = tf.stack([shift, tf.broadcast_to(second, tf.shape(shift))], axis=-1)
        out.set_shape(x.shape.concatenate([2]) if context is None else out.shape)
        return out

    def sequential_solve(self, y, context, solve_fn):
        """The inverse as one triangular solve instead of `event_size` network passes.

        The parameters at `x` are `(L x, b)` with `b` independent of `x`, and every update of
        `InverseAutoregressiveFlow` (affine, scaled-shift, gated) inverts affinely in the shift:
        `solve_fn(y, (a, b)) = alpha + beta * a`. So `x = alpha + beta * L x`, that is
        `(I - diag(beta) L) x = alpha`, lower triangular once the positions are sorted by
        degree. `alpha` and `beta` come from two calls of `solve_fn`, at shifts 0 and 1.

        Args:
          y: `[..., event_size]`.
          context: the context, or None.
          solve_fn: the per-position inverse of the flow's update, affine in the shift.

        Returns:
          `(x, log_scale)`, both shaped like `y` broadcast against the context's batch.
        """
        if not self.built:
            self.build(y.shape)
        lower, second = self._maps(context)
        shape = tf.broadcast_dynamic_shape(tf.shape(y), tf.shape(second))
        y, second = tf.broadcast_to(y, shape), tf.broadcast_to(second, shape)
        alpha, log_scale = solve_fn(y, tf.stack([tf.zeros_like(y), second], axis=-1))
        beta = solve_fn(y, tf.stack([tf.ones_like(y), second], axis=-1))[0] - alpha
        order = np.argsort(self.degrees, kind="stable")  # L is strictly lower in this order
        lower = tf.gather(tf.gather(lower, order, axis=-2), order, axis=-1)
        alpha, beta = tf.gather(alpha, order, axis=-1), tf.gather(beta, order, axis=-1)
        system = tf.eye(self.event_size, dtype=self.dtype) - beta[..., :, None] * lower
        x = tf.linalg.triangular_solve(system, alpha[..., None], lower=True)[..., 0]
        return tf.gather(x, np.argsort(order), axis=-1), log_scale
