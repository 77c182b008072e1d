"""Inverse Autoregressive Flow as TFP bijectors: one step, and a stack sharing one context."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfp_iaf.autoregressive import AutoregressiveNetwork
from tfp_iaf.flow import AutoregressiveFlow
from tfp_iaf.transforms import Transform, from_update

__all__ = ["IAFStack", "InverseAutoregressiveFlow"]


class InverseAutoregressiveFlow(AutoregressiveFlow):
    """One Inverse Autoregressive Flow step (Kingma et al. 2016).

    With `params = network(x, context)`, autoregressive in the network's order, every unit is
    mapped by the step's per-unit `transform` (`tfp_iaf.transforms`): `y_i = t(x_i; params_i)`.

    - affine (default, `transforms.Affine`): `log_sigma = B * tanh(b / B)` with
      `B = log_scale_bound`, then `y = a + exp(log_sigma) * x`; log-det `sum(log_sigma)`.
    - affine with `scaled_shift=True`: `y = exp(log_sigma) * (x + a)`, the same family with the
      shift in the units of `x` (the form of TFP's `Invert(MaskedAutoregressiveFlow)`); it
      trains better as a variational posterior on funnels (docs/benchmarks_vi.md).
    - gated (`gated=True`, `transforms.Gated`, paper section 4): `g = sigmoid(b + forget_bias)`,
      then `y = g * x + (1 - g) * a`; log-det `sum(log_sigmoid(b + forget_bias))`.
    - any other `transform=` (e.g. a spline), with `transform.num_params` parameters per unit.
    - forward: one parallel network pass; log-det the sum of the transform's per-unit ones.
    - inverse: sequential, `network.num_inverse_passes` network passes in a `tf.while_loop`
      (the number of distinct input degrees), each solving the positions whose inputs are known.

    The affine soft bound keeps `|log_sigma| < B`, so `exp` cannot overflow and the inverse
    cannot divide by zero, while staying smooth (gradient never exactly zero) and the identity
    near 0.

    Shapes: `x: [..., *network.event_shape] -> y: same`; `fldj: [...]`; `context`: the
    network's context, its batch shape broadcasting against `x`'s.

    The forward direction is the one to sample with; `log_prob` of sampled points costs no extra
    network pass (the log-det is cached with the sample). `log_prob` of other points runs the
    sequential inverse.

    Args:
      network: an `AutoregressiveNetwork` with `num_params == transform.num_params` (e.g.
        `MADE`; 2 for the affine and gated transforms).
      gated: use the gated (LSTM-style) update instead of the affine one.
      forget_bias: added to the gate logit; the default 2.0 starts `g` near 0.88.
      scaled_shift: the affine update's shift applied before the scale (see above).
      log_scale_bound: `B` above, a positive float (affine update only), or None for no bound
        (`log_sigma = b`, the IAF authors' form; nothing then keeps `exp` from overflowing).
      transform: the per-unit transform (a `tfp_iaf.transforms.Transform`, its kind, e.g.
        "gated", or its config); None: the one `gated`, `forget_bias`, `log_scale_bound` and
        `scaled_shift` describe. With a `transform`, those four must keep their defaults.
      validate_args: check at run time that inputs are finite.
      name: name of the bijector (default: the transform's `step_name`, e.g. "iaf").

    Raises:
      TypeError: `network` is not an `AutoregressiveNetwork`, `gated` is not a bool, or
        `forget_bias` / `log_scale_bound` is not a number, or `transform` is none of a
        transform, a kind and a config.
      ValueError: `network.num_params` is not the transform's (or the network solves only
        updates affine in their shift, and the transform is not), a non-finite `forget_bias`, a
        `log_scale_bound` that is not finite and positive, or a `transform` beside settings of
        the update. At call time: an input or context that does not fit the network (event
        shape, dtype, or a context batch that does not broadcast).

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
        transform: Transform | str | dict | None = None,
    ):
        parameters = dict(locals())
        if transform is None:  # the settings of today's steps, and so of their fingerprints
            del parameters["transform"]
        if not isinstance(network, AutoregressiveNetwork):
            raise TypeError(
                "`network` must be a tfp_iaf AutoregressiveNetwork (e.g. tfp_iaf.MADE); "
                f"got {type(network).__name__}"
            )
        transform = from_update(transform, gated, forget_bias, log_scale_bound, scaled_shift)
        if network.num_params != transform.num_params:
            raise ValueError(
                f"`network` must output num_params={transform.num_params} (the parameters "
                f"per unit of the {transform!r} transform); got {network.num_params}"
            )
        if network.needs_affine_update and not transform.affine_in_shift:
            raise ValueError(
                f"`network` {type(network).__name__} solves its inverse in closed form for "
                f"updates affine in their shift only; got transform {transform!r}"
            )
        name = name or transform.step_name
        with tf.name_scope(name) as name:
            self._network = network
            self._transform = transform
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
    def transform(self) -> Transform:
        """The per-unit transform the step applies."""
        return self._transform

    @property
    def gated(self) -> bool:
        return self._transform.kind == "gated"

    def _fingerprint(self) -> dict:
        # The transform's settings (an affine step's omit `forget_bias`), then the network's.
        network = self._network._fingerprint()
        return {**super()._fingerprint(), **self._transform.fingerprint(), "network": network}

    def _scale(self, params):
        """`(shift, log_scale)` of an affine-form transform at the network's `params`."""
        return self._transform.shift_and_log_scale(params)

    def shift_and_log_scale(self, x, context=None):
        """The affine map of the forward step at `x`: `y = shift + exp(log_scale) * x`.

        For the transforms with an affine form (affine, gated). A public entry: the network
        checks `x` and `context` (as a direct call of it does).

        Raises:
          TypeError: the step's transform has no affine form.
        """
        affine = getattr(self._transform, "shift_and_log_scale", None)
        if affine is None:
            raise TypeError(
                f"`shift_and_log_scale` needs a transform of affine form; step `{self.name}` "
                f"applies {self._transform!r}"
            )
        return affine(self._network(x, context=context))

    def _forward_pass(self, x, context):
        y, log_det = self._transform.forward(x, self._network.call_unchecked(x, context))
        return y, {"unit_ildj": -log_det}

    def _inverse_pass(self, y, context):
        x, log_det = self._network.sequential_solve(y, context, self._transform.inverse)
        return x, {"unit_ildj": -log_det}


class IAFStack(AutoregressiveFlow):
    """A stack of IAF steps, applied in order when sampling, sharing one `context`.

    - forward `y = f_T(... f_1(x; c) ...; c)`, log-det the sum of the steps' log-dets;
    - inverse runs the steps' sequential inverses in reverse order.

    Unlike `tfb.Chain`, whose keyword arguments must be routed per step by name, the single
    `context=` keyword reaches every step (TFP issue #1410). Alternate the steps' orders (see
    `dense_iaf_stack`) so that every position gets to depend on every other.

    Shapes: as the steps; all steps must share an event shape.

    Args:
      steps: autoregressive steps (`AutoregressiveFlow`s: `InverseAutoregressiveFlow`s of any
        transform, or stacks of them), `steps[0]` applied first when sampling.
      validate_args: the run-time checks of the stack's inputs (`Flow`); on if it or any
        step asks for them. The stack checks its inputs once, at its own pass; the steps run
        unchecked inside it.
      name: name of the bijector.

    Raises:
      ValueError: no steps, or steps with different event shapes, dtypes or context shapes.
      TypeError: a step that is not an `AutoregressiveFlow`.
    """

    def __init__(
        self,
        steps: Sequence[AutoregressiveFlow],
        validate_args: bool = False,
        name: str = "iaf_stack",
    ):
        parameters = dict(locals())
        steps = list(steps)
        if not steps:
            raise ValueError("`steps` must contain at least one InverseAutoregressiveFlow; got []")
        for step in steps:
            if not isinstance(step, AutoregressiveFlow):
                raise TypeError(
                    "`steps` must be InverseAutoregressiveFlow bijectors (or other tfp_iaf "
                    f"AutoregressiveFlow steps); got {type(step).__name__}"
                )
        shapes = {s.event_shape for s in steps}
        dtypes = {s.dtype for s in steps}
        if len(shapes) > 1 or len(dtypes) > 1:
            raise ValueError(
                "`steps` must share one event shape and dtype; got event shapes "
                f"{sorted(shapes)} and dtypes {sorted(str(d) for d in dtypes)}"
            )
        contexts = {s.context_shape for s in steps}
        if len(contexts) > 1:  # one `context=` reaches every step
            raise ValueError(
                "`steps` must share one context shape (or all take none); got "
                f"{[s.context_shape for s in steps]}"
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
    def steps(self) -> list[AutoregressiveFlow]:
        return self._steps

    @property
    def networks(self) -> list[AutoregressiveNetwork]:
        return [network for step in self._steps for network in step.networks]

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
        transform: Transform | str | dict | None = None,
        validate_args: bool = False,
        name: str = "iaf_stack",
    ) -> IAFStack:
        """One `InverseAutoregressiveFlow` per network, `networks[0]` applied first, each
        applying `transform` (or the update `gated` ... `scaled_shift` describe)."""
        steps = [
            InverseAutoregressiveFlow(
                network,
                gated=gated,
                forget_bias=forget_bias,
                log_scale_bound=log_scale_bound,
                scaled_shift=scaled_shift,
                transform=transform,
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
