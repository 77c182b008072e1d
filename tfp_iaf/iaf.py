"""Inverse Autoregressive Flow as TFP bijectors: one step, and a stack sharing one context."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfp_iaf import _checks
from tfp_iaf.autoregressive import AutoregressiveNetwork
from tfp_iaf.flow import AutoregressiveFlow

__all__ = ["IAFStack", "InverseAutoregressiveFlow"]


class InverseAutoregressiveFlow(AutoregressiveFlow):
    """One Inverse Autoregressive Flow step (Kingma et al. 2016).

    With `(a, b) = network(x, context)`, autoregressive in the network's order:

    - affine (default): `log_sigma = B * tanh(b / B)` with `B = log_scale_bound`, then
      - forward `y = a + exp(log_sigma) * x`, one parallel network pass;
      - log-det `sum(log_sigma)`.
    - affine with `scaled_shift=True`: `y = exp(log_sigma) * (x + a)`, the same family with the
      shift in the units of `x` (the form of TFP's `Invert(MaskedAutoregressiveFlow)`); it
      trains better as a variational posterior on funnels (docs/benchmarks_vi.md).
    - gated (`gated=True`, paper section 4): `g = sigmoid(b + forget_bias)`, then
      - forward `y = g * x + (1 - g) * a`;
      - log-det `sum(log_sigmoid(b + forget_bias))`.
    - inverse: sequential, `network.num_inverse_passes` network passes in a `tf.while_loop`
      (the number of distinct input degrees), each solving the positions whose inputs are known.

    The soft bound keeps `|log_sigma| < B`, so `exp` cannot overflow and the inverse cannot
    divide by zero, while staying smooth (gradient never exactly zero) and the identity near 0.

    Shapes: `x: [..., *network.event_shape] -> y: same`; `fldj: [...]`; `context`: the
    network's context, its batch shape broadcasting against `x`'s.

    The forward direction is the one to sample with; `log_prob` of sampled points costs no extra
    network pass (the log-det is cached with the sample). `log_prob` of other points runs the
    sequential inverse.

    Args:
      network: an `AutoregressiveNetwork` with `num_params == 2` (e.g. `MADE`).
      gated: use the gated (LSTM-style) update instead of the affine one.
      forget_bias: added to the gate logit; the default 2.0 starts `g` near 0.88.
      scaled_shift: the affine update's shift applied before the scale (see above).
      log_scale_bound: `B` above, a positive float (affine update only), or None for no bound
        (`log_sigma = b`, the IAF authors' form; nothing then keeps `exp` from overflowing).
      validate_args: check at run time that inputs are finite.
      name: name of the bijector.

    Raises:
      TypeError: `network` is not an `AutoregressiveNetwork`, `gated` is not a bool, or
        `forget_bias` / `log_scale_bound` is not a number.
      ValueError: `network.num_params != 2`, a non-finite `forget_bias`, or a `log_scale_bound`
        that is not finite and positive. At call time: an input or context that does not fit
        the network (event shape, dtype, or a context batch that does not broadcast).

    Inputs follow TFP's convention: Python and NumPy values are converted to the flow's dtype, a
    tensor of another dtype is an error. Under `validate_args=True`, `x` (or `y`) and `context`
    must be finite and their batch shapes must broadcast, checked at run time.

    Examples:
      >>> import tensorflow_probability as tfp
      >>> import tfp_iaf
      >>> made = tfp_iaf.MADE(event_size=2, hidden_units=[8], context_size=3)
      >>> iaf = InverseAutoregressiveFlow(made)
      >>> q = tfp.distributions.TransformedDistribution(
      ...     tfp.distributions.MultivariateNormalDiag(tf.zeros(2)), iaf)
      >>> h = tf.ones([4, 3])
      >>> z = q.sample(4, bijector_kwargs={"context": h})
      >>> q.log_prob(z, bijector_kwargs={"context": h}).shape
      TensorShape([4])

    References:
      Kingma et al., Improved Variational Inference with Inverse Autoregressive Flow, 2016.
      https://arxiv.org/abs/1606.04934
    """

    def __init__(
        self,
        network: AutoregressiveNetwork,
        gated: bool = False,
        forget_bias: float = 2.0,
        log_scale_bound: float | None = 5.0,
        validate_args: bool = False,
        name: str | None = None,
        *,
        scaled_shift: bool = False,
    ):
        parameters = dict(locals())
        if not isinstance(network, AutoregressiveNetwork):
            raise TypeError(
                "`network` must be a tfp_iaf AutoregressiveNetwork (e.g. tfp_iaf.MADE); "
                f"got {type(network).__name__}"
            )
        if network.num_params != 2:
            raise ValueError(
                f"`network` must output num_params=2 (shift and scale); got {network.num_params}"
            )
        for arg, value in (("gated", gated), ("scaled_shift", scaled_shift)):
            if not isinstance(value, bool):
                raise TypeError(f"`{arg}` must be a bool; got {value!r} ({type(value).__name__})")
        if gated and scaled_shift:
            raise ValueError("`scaled_shift=True` is a form of the affine update; got gated=True")
        forget_bias = _checks.finite_float("forget_bias", forget_bias)
        if log_scale_bound is not None:
            log_scale_bound = _checks.finite_float(
                "log_scale_bound", log_scale_bound, positive=True
            )
        name = name or ("gated_iaf" if gated else "iaf")
        with tf.name_scope(name) as name:
            self._network = network
            self._gated = gated
            self._forget_bias = forget_bias
            self._log_scale_bound = log_scale_bound
            self._scaled_shift = scaled_shift
            super().__init__(
                forward_min_event_ndims=network.event_ndims,
                is_constant_jacobian=False,
                validate_args=validate_args,
                # Keras layers report dtypes as strings; TFP's contract is a tf.DType.
                dtype=tf.as_dtype(network.dtype),
                parameters=parameters,
                name=name,
            )

    @property
    def network(self) -> AutoregressiveNetwork:
        return self._network

    @property
    def networks(self) -> list[AutoregressiveNetwork]:
        return [self._network]

    @property
    def gated(self) -> bool:
        return self._gated

    def _fingerprint(self) -> dict:
        # Only the settings the update uses: an affine step ignores `forget_bias`.
        update = (
            {"forget_bias": self._forget_bias}
            if self._gated
            else {"log_scale_bound": self._log_scale_bound, "scaled_shift": self._scaled_shift}
        )
        network = self._network._fingerprint()
        return {**super()._fingerprint(), "gated": self._gated, **update, "network": network}

    def _scale(self, params):
        """Returns `(shift, log_scale)` with `y = shift + exp(log_scale) * x`."""
        a, b = params[..., 0], params[..., 1]
        if self._gated:
            logit = b + tf.cast(self._forget_bias, b.dtype)
            log_gate = tf.math.log_sigmoid(logit)
            return (1.0 - tf.math.sigmoid(logit)) * a, log_gate
        if self._log_scale_bound is not None:
            bound = tf.cast(self._log_scale_bound, b.dtype)
            b = bound * tf.math.tanh(b / bound)
        return (tf.exp(b) * a if self._scaled_shift else a), b

    def shift_and_log_scale(self, x, context=None):
        """The affine map of the forward step at `x`: `y = shift + exp(log_scale) * x`.

        A public entry: the network checks `x` and `context` (as a direct call of it does).
        """
        return self._scale(self._network(x, context=context))

    def _forward_pass(self, x, context):
        shift, log_scale = self._scale(self._network.call_unchecked(x, context))
        y = shift + tf.exp(log_scale) * x
        return y, {"unit_ildj": -log_scale}

    def _inverse_pass(self, y, context):
        def solve(y, params):
            shift, log_scale = self._scale(params)
            return (y - shift) * tf.exp(-log_scale), log_scale

        x, log_scale = self._network.sequential_solve(y, context, solve)
        return x, {"unit_ildj": -log_scale}


class IAFStack(AutoregressiveFlow):
    """A stack of IAF steps, applied in order when sampling, sharing one `context`.

    - forward `y = f_T(... f_1(x; c) ...; c)`, log-det the sum of the steps' log-dets;
    - inverse runs the steps' sequential inverses in reverse order.

    Unlike `tfb.Chain`, whose keyword arguments must be routed per step by name, the single
    `context=` keyword reaches every step (TFP issue #1410). Alternate the steps' orders (see
    `dense_iaf_stack`) so that every position gets to depend on every other.

    Shapes: as the steps; all steps must share an event shape.

    Args:
      steps: `InverseAutoregressiveFlow` bijectors, `steps[0]` applied first when sampling.
      validate_args: the run-time checks of the stack's inputs (`Flow`); on if it or any
        step asks for them. The stack checks its inputs once, at its own pass; the steps run
        unchecked inside it.
      name: name of the bijector.

    Raises:
      ValueError: no steps, or steps with different event shapes, dtypes or context shapes.
      TypeError: a step that is not an `InverseAutoregressiveFlow`.
    """

    def __init__(
        self,
        steps: Sequence[InverseAutoregressiveFlow],
        validate_args: bool = False,
        name: str = "iaf_stack",
    ):
        parameters = dict(locals())
        steps = list(steps)
        if not steps:
            raise ValueError("`steps` must contain at least one InverseAutoregressiveFlow; got []")
        for step in steps:
            if not isinstance(step, InverseAutoregressiveFlow):
                raise TypeError(
                    "`steps` must be InverseAutoregressiveFlow bijectors; "
                    f"got {type(step).__name__}"
                )
        shapes = {s.network.event_shape for s in steps}
        dtypes = {s.dtype for s in steps}
        if len(shapes) > 1 or len(dtypes) > 1:
            raise ValueError(
                "`steps` must share one event shape and dtype; got event shapes "
                f"{sorted(shapes)} and dtypes {sorted(str(d) for d in dtypes)}"
            )
        contexts = {s.network.context_shape for s in steps}
        if len(contexts) > 1:  # one `context=` reaches every step
            raise ValueError(
                "`steps` must share one context shape (or all take none); got "
                f"{[s.network.context_shape for s in steps]}"
            )
        with tf.name_scope(name) as name:
            self._steps = steps
            super().__init__(
                forward_min_event_ndims=steps[0].forward_min_event_ndims,
                is_constant_jacobian=False,
                validate_args=validate_args or any(s.validate_args for s in steps),
                dtype=steps[0].dtype,
                parameters=parameters,
                name=name,
            )

    @property
    def steps(self) -> list[InverseAutoregressiveFlow]:
        return self._steps

    @property
    def networks(self) -> list[AutoregressiveNetwork]:
        return [step.network for step in self._steps]

    def _fingerprint(self) -> dict:
        # The steps' shapes are the stack's: each step's fingerprint without them.
        steps = [
            {
                k: v
                for k, v in step._fingerprint().items()
                if k not in ("event_shape", "context_shape")
            }
            for step in self._steps
        ]
        return {**super()._fingerprint(), "num_steps": len(steps), "steps": steps}

    @classmethod
    def from_networks(
        cls,
        networks: Sequence[AutoregressiveNetwork],
        *,
        gated: bool = False,
        forget_bias: float = 2.0,
        log_scale_bound: float | None = 5.0,
        scaled_shift: bool = False,
        validate_args: bool = False,
        name: str = "iaf_stack",
    ) -> IAFStack:
        """One `InverseAutoregressiveFlow` per network, `networks[0]` applied first."""
        steps = [
            InverseAutoregressiveFlow(
                network,
                gated=gated,
                forget_bias=forget_bias,
                log_scale_bound=log_scale_bound,
                scaled_shift=scaled_shift,
                validate_args=validate_args,
                name=f"iaf_{t}",
            )
            for t, network in enumerate(networks)
        ]
        return cls(steps, validate_args=validate_args, name=name)

    # The stack's pass checks its inputs once (`Flow._enter`); the steps' passes trust them.
    def _forward_pass(self, x, context):
        unit_ildj = 0.0
        for step in self._steps:
            x, attrs = step._forward_pass(x, context)
            unit_ildj = unit_ildj + attrs["unit_ildj"]
        return x, {"unit_ildj": unit_ildj}

    def _inverse_pass(self, y, context):
        unit_ildj = 0.0
        for step in reversed(self._steps):
            y, attrs = step._inverse_pass(y, context)
            unit_ildj = unit_ildj + attrs["unit_ildj"]
        return y, {"unit_ildj": unit_ildj}
