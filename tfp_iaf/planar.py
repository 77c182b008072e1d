"""The planar flow (Rezende & Mohamed 2015), the baseline the IAF paper compares against."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras
from tfp_iaf.flow import Flow

__all__ = ["PlanarFlow", "PlanarParameters"]

# Halvings of the bracket: past each dtype's resolution for brackets up to ~1e4 wide.
_BISECTION_STEPS = {tf.float16: 24, tf.bfloat16: 16, tf.float32: 40, tf.float64: 80}


class PlanarParameters(tf_keras.layers.Layer):
    """The raw parameters `(u, w, b)` of `num_steps` planar steps, learned or from a context.

    Without a context they are variables `u, w: [K, D]`, `b: [K]`. With one, a linear map of
    the context adds to them (zero-initialised, so training starts from the learned constants):
    `[..., context_size] -> u, w: [..., K, D]`, `b: [..., K]`, the amortised form of a VAE.

    Args:
      event_size: `D`.
      num_steps: `K`.
      context_size: size of the context vector, or None.
      **kwargs: passed to `tf_keras.layers.Layer` (e.g. `dtype`, `name`).
    """

    def __init__(self, event_size: int, num_steps: int, context_size: int | None, **kwargs):
        super().__init__(**kwargs)
        self.event_size, self.num_steps, self.context_size = event_size, num_steps, context_size
        d, k = event_size, num_steps
        normal = tf_keras.initializers.RandomNormal
        self.u = self.add_weight("u", shape=(k, d), initializer=normal(stddev=0.1))
        # ||w|| about 1: w . z then has unit scale for a standard normal z.
        self.w = self.add_weight("w", shape=(k, d), initializer=normal(stddev=d**-0.5))
        self.b = self.add_weight("b", shape=(k,), initializer="zeros")
        self.context_kernel = None
        if context_size is not None:
            # Zero: training starts from the learned constants, for every context.
            self.context_kernel = self.add_weight(
                "context_kernel", shape=(context_size, k * (2 * d + 1)), initializer="zeros"
            )

    def call(self, context=None):
        """`(u, w, b)`: `[..., K, D]`, `[..., K, D]`, `[..., K]` (no `...` without a context)."""
        u, w, b = self.u, self.w, self.b
        if self.context_kernel is None:
            return tf.convert_to_tensor(u), tf.convert_to_tensor(w), tf.convert_to_tensor(b)
        delta = tf.einsum("...h,hp->...p", context, self.context_kernel)
        delta = tf.reshape(
            delta, tf.concat([tf.shape(delta)[:-1], [self.num_steps, 2 * self.event_size + 1]], 0)
        )
        d = self.event_size
        return u + delta[..., :d], w + delta[..., d : 2 * d], b + delta[..., 2 * d]


class PlanarFlow(Flow):
    """`num_steps` planar steps `f(z) = z + u_hat tanh(w . z + b)` (Rezende & Mohamed 2015).

    - forward, each step: `z <- z + u_hat * tanh(w . z + b)`, with `u_hat = u + (m(w . u) - w . u)
      w / ||w||^2`, `m(a) = max(-1 + softplus(a), -1 + sqrt(eps))`: then `w . u_hat = m(w . u)
      > -1`, which makes the step invertible (Rezende & Mohamed's appendix A; the floor keeps
      it so in floating point, where `-1 + softplus(a)` rounds to -1 for `a << -1`);
    - log-det of a step: `log(1 + (w . u_hat) (1 - tanh^2(w . z + b)))` (the matrix determinant
      lemma: `u_hat . psi(z)`, `psi = (1 - tanh^2) w`), exact, not by autodiff;
    - inverse of a step: `a = w . z` solves the scalar, increasing equation
      `a + (w . u_hat) tanh(a + b) = w . y` on `[w.y - |w.u_hat|, w.y + |w.u_hat|]`, by bisection
      to the dtype's resolution and one Newton step whose gradient is the implicit function's
      (so gradients through the inverse are exact too); then `z = y - u_hat tanh(a + b)`.

    Parameters are learned constants or, with `context_size`, amortised: a linear map of the
    context `h` (the keyword `context`, as tfp_iaf's IAFs take it) adds to them per example.

    The Jacobian is not triangular, so the log-det does not split over units: a `Flow`, not an
    `AutoregressiveFlow`, it has no per-unit log-dets (`tfp_iaf.unit_log_prob` raises), and a
    VAE cannot apply per-unit free bits to this posterior's KL.

    Shapes: `z: [..., D] -> [..., D]`; `context: [..., context_size]`; `fldj: [...]`.

    Args:
      event_size: `D`.
      num_steps: `K`, the number of planar steps (one `PlanarParameters` holds them all).
      context_size: size of the context vector, or None for unconditional steps.
      dtype: float dtype of the flow and its variables.
      validate_args: check at run time that `x` (or `y`) and the context are finite and that
        their batch shapes broadcast, as tfp_iaf's IAFs do.
      name: name of the bijector.

    Raises:
      TypeError: a non-integer `event_size`, `num_steps` or `context_size`, or a `dtype` that
        is not floating-point. At call time: a context tensor of another dtype.
      ValueError: a non-positive `event_size`, `num_steps` or `context_size`. At call time: an
        input or context that does not fit (event size, a context missing, unexpected or of
        the wrong size, a context batch that does not broadcast against the input's).

    Examples:
      >>> import tensorflow_probability as tfp
      >>> import tfp_iaf
      >>> flow = tfp_iaf.PlanarFlow(3, num_steps=4, context_size=5)
      >>> h = tf.ones([2, 5])
      >>> q = tfp.distributions.TransformedDistribution(
      ...     tfp.distributions.MultivariateNormalDiag(tf.zeros([2, 3])), flow)
      >>> z = q.sample(seed=1, bijector_kwargs={"context": h})
      >>> q.log_prob(z, bijector_kwargs={"context": h}).shape
      TensorShape([2])

    References:
      Rezende & Mohamed, Variational Inference with Normalizing Flows, 2015,
      https://arxiv.org/abs/1505.05770 (eq. 10-12, appendix A); Kingma et al. 2016,
      https://arxiv.org/abs/1606.04934 (eq. 6).
    """

    def __init__(
        self,
        event_size: int,
        num_steps: int = 1,
        context_size: int | None = None,
        dtype: tf.DType | str = tf.float32,
        validate_args: bool = False,
        name: str = "planar_flow",
    ):
        parameters = dict(locals())
        event_size = _checks.positive_int("event_size", event_size)
        num_steps = _checks.positive_int("num_steps", num_steps)
        context_size = _checks.positive_int("context_size", context_size, optional=True)
        dtype = _checks.float_dtype("dtype", dtype)
        with tf.name_scope(name) as name:
            self.event_size, self.num_steps, self.context_size = (
                event_size,
                num_steps,
                context_size,
            )
            self.parameters_layer = PlanarParameters(
                event_size, num_steps, context_size, dtype=dtype.name, name=f"{name}parameters"
            )
            super().__init__(
                forward_min_event_ndims=1,
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=name,
            )

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.event_size,)

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        return None if self.context_size is None else (self.context_size,)

    def _fingerprint(self) -> dict:
        return {**super()._fingerprint(), "num_steps": self.num_steps}

    def _steps(self, context):
        """Per step `k`: `(u_hat_k, w_k, b_k, c_k = w_k . u_hat_k)`, broadcasting over batch."""
        u, w, b = self.parameters_layer(context)
        wu = tf.reduce_sum(w * u, axis=-1, keepdims=True)
        # m(a) > -1 in exact arithmetic, but rounds to -1 for a << -1 (a singular Jacobian):
        # floored at -1 + sqrt(eps), which only moves steps that far out.
        floor = -1.0 + float(np.sqrt(np.finfo(self.dtype.as_numpy_dtype).eps))
        m = tf.maximum(tf.math.softplus(wu) - 1.0, floor)
        u_hat = u + (m - wu) * w / tf.reduce_sum(tf.square(w), axis=-1, keepdims=True)
        c = m[..., 0]  # w . u_hat, exactly m(w . u) > -1
        return [
            (u_hat[..., k, :], w[..., k, :], b[..., k], c[..., k]) for k in range(self.num_steps)
        ]

    # A pass returns `(output, {"ildj": ...})`: the key TFP's `Bijector` reads cached log-dets
    # from, so the log-det of a point just mapped (a sample) costs no further pass.
    def _forward_pass(self, x, context):
        z, fldj = x, tf.zeros([], self.dtype)
        for u_hat, w, b, c in self._steps(context):
            t = tf.tanh(tf.reduce_sum(w * z, axis=-1) + b)
            fldj = fldj + _step_log_det(c, t)
            z = z + u_hat * t[..., None]
        return z, {"ildj": -fldj}

    def _inverse_pass(self, y, context):
        z, fldj = y, tf.zeros([], self.dtype)
        for u_hat, w, b, c in reversed(self._steps(context)):
            a = _solve_step(tf.reduce_sum(w * z, axis=-1), b, c, self.dtype)  # w . z_{k-1}
            t = tf.tanh(a + b)
            fldj = fldj + _step_log_det(c, t)
            z = z - u_hat * t[..., None]
        return z, {"ildj": -fldj}


def _step_log_det(c, t):
    """`log |det dz_k / dz_{k-1}| = log(1 + c (1 - t^2))`: positive since `c > -1`; `log1p`
    keeps it accurate near 0."""
    return tf.math.log1p(c * (1.0 - tf.square(t)))


def _solve_step(s, b, c, dtype):
    """The `a` with `a + c tanh(a + b) = s` (`c > -1`, so the left side increases in `a`)."""
    s, b, c = (tf.convert_to_tensor(t, dtype) for t in (s, b, c))
    shape = tf.broadcast_dynamic_shape(
        tf.shape(s), tf.broadcast_dynamic_shape(tf.shape(b), tf.shape(c))
    )
    s, b, c = (tf.broadcast_to(t, shape) for t in (s, b, c))

    def g(a):
        return a + c * tf.tanh(a + b) - s

    # |c tanh| <= |c|: the root lies in [s - |c|, s + |c|]; bisection keeps it bracketed.
    lo0, hi0 = tf.stop_gradient(s - tf.abs(c)), tf.stop_gradient(s + tf.abs(c))

    def body(lo, hi):
        mid = 0.5 * (lo + hi)
        below = tf.stop_gradient(g(mid)) < 0
        return tf.where(below, mid, lo), tf.where(below, hi, mid)

    lo, hi = tf.while_loop(
        lambda lo, hi: tf.constant(True),
        body,
        (lo0, hi0),
        maximum_iterations=_BISECTION_STEPS.get(dtype, 80),
    )
    root = tf.stop_gradient(0.5 * (lo + hi))
    # One Newton step: a refinement in value, and the implicit function's gradient
    # da/dtheta = -(dg/dtheta) / (dg/da) (the bisection itself has none).
    slope = 1.0 + c * (1.0 - tf.square(tf.tanh(root + b)))
    tiny = np.finfo(dtype.as_numpy_dtype).tiny
    return root - g(root) / tf.stop_gradient(tf.maximum(slope, tiny))
