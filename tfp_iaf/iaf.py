"""Inverse Autoregressive Flow as TFP bijectors: one step, and a stack sharing one context."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

from tfp_iaf import _checks
from tfp_iaf._keras import show_layers_to_calling_model
from tfp_iaf.networks import MADE, AutoregressiveNetwork, as_input

tfb = tfp.bijectors

__all__ = ["IAFStack", "InverseAutoregressiveFlow", "dense_iaf_stack"]


class _FlowBijector(tfb.Bijector):
    """Shared plumbing: the log-det is computed alongside each direction and cached greedily.

    `_forward_and_ildj` / `_inverse_and_ildj` return `(output, {"ildj": ...})`. TFP's greedy cache
    stores the attributes with the `(x, y)` pair, so `log_prob` of a sample reuses the network
    pass of `sample`, and `log_prob` of a fresh point reuses the scales of the inverse's last pass.
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_forward_and_ildj", inverse_name="_inverse_and_ildj"
    )

    def _forward(self, x, **kwargs):
        return self._forward_and_ildj(x, **kwargs)[0]

    def _inverse(self, y, **kwargs):
        return self._inverse_and_ildj(y, **kwargs)[0]

    def _forward_log_det_jacobian(self, x, **kwargs):
        self.forward(x, **kwargs)  # fills the cached attributes of (x, forward(x))
        return -self._cache.forward_attributes(x, **kwargs)["ildj"]

    def _inverse_log_det_jacobian(self, y, **kwargs):
        self.inverse(y, **kwargs)
        return self._cache.inverse_attributes(y, **kwargs)["ildj"]

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict()

    @property
    def _reference_network(self) -> AutoregressiveNetwork:
        """A network with the flow's event and context shapes (the first step's for a stack)."""
        raise NotImplementedError

    @property
    def _networks(self) -> list[AutoregressiveNetwork]:
        """Every network of the flow, in the order its steps run when sampling."""
        raise NotImplementedError

    def with_context(self, context) -> tfb.Bijector:
        """This flow with its `context` fixed: a bijector that takes no keyword arguments.

        For the places where TFP passes no `bijector_kwargs`: a `tfd.JointDistribution*`
        posterior, `tfd.Sample`, or a `tfb.Chain` used without routing by name. Variables stay
        those of this flow; the bound bijector caches its own samples.

        Args:
          context: the network's context, e.g. the encoder output `h`.

        Returns:
          A bijector with this flow's event shape and dtype, and `forward(x) ==
          self.forward(x, context=context)` (likewise every other method).

        Examples:

        >>> flow = dense_iaf_stack(2, num_steps=2, hidden_units=[8], context_size=3)
        >>> h = tf.ones([4, 3])
        >>> posterior = tfp.distributions.JointDistributionNamed({
        ...     "z": tfp.distributions.TransformedDistribution(
        ...         tfp.distributions.MultivariateNormalDiag(tf.zeros([4, 2])),
        ...         flow.with_context(h))})
        >>> posterior.log_prob(posterior.sample(seed=1)).shape
        TensorShape([4])
        """
        return _WithContext(self, context)

    def _validated(self, x, arg: str, context):
        """`(x, context)` as tensors, checked at run time under `validate_args`."""
        show_layers_to_calling_model(self, self._networks)
        x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
        context = as_input(context, self.dtype)
        if context is not None:
            context = tf.convert_to_tensor(context, dtype_hint=self.dtype)
        if not self.validate_args:
            return x, context
        x = tf.debugging.assert_all_finite(x, f"`{arg}` must be finite (bijector `{self.name}`)")
        if context is None:
            return x, context
        context = tf.debugging.assert_all_finite(
            context, f"`context` must be finite (bijector `{self.name}`)"
        )
        network = self._reference_network
        x_batch = tf.shape(x)[: tf.rank(x) - network.event_ndims]
        c_batch = tf.shape(context)[: tf.rank(context) - len(network.context_shape)]
        rank = tf.maximum(tf.size(x_batch), tf.size(c_batch))
        x_batch = tf.concat([tf.ones([rank - tf.size(x_batch)], tf.int32), x_batch], 0)
        c_batch = tf.concat([tf.ones([rank - tf.size(c_batch)], tf.int32), c_batch], 0)
        broadcasts = tf.reduce_all((x_batch == c_batch) | (x_batch == 1) | (c_batch == 1))
        check = tf.debugging.Assert(
            broadcasts,
            [
                f"`context` batch shape does not broadcast against the batch shape of `{arg}` "
                f"(bijector `{self.name}`); batch shapes of `{arg}` and `context`:",
                x_batch,
                c_batch,
            ],
        )
        with tf.control_dependencies([check]):
            return tf.identity(x), context


class InverseAutoregressiveFlow(_FlowBijector):
    """One Inverse Autoregressive Flow step (Kingma et al. 2016).

    With `(a, b) = network(x, context)`, autoregressive in the network's order:

    - affine (default): `log_sigma = B * tanh(b / B)` with `B = log_scale_bound`, then
      - forward `y = a + exp(log_sigma) * x`, one parallel network pass;
      - log-det `sum(log_sigma)`.
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
      log_scale_bound: `B` above, a positive float (affine update only).
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

    >>> made = MADE(event_size=2, hidden_units=[8], context_size=3)
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
        log_scale_bound: float = 5.0,
        validate_args: bool = False,
        name: str | None = None,
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
        if not isinstance(gated, bool):
            raise TypeError(f"`gated` must be a bool; got {gated!r} ({type(gated).__name__})")
        forget_bias = _checks.finite_float("forget_bias", forget_bias)
        log_scale_bound = _checks.finite_float("log_scale_bound", log_scale_bound, positive=True)
        name = name or ("gated_iaf" if gated else "iaf")
        with tf.name_scope(name) as name:
            self._network = network
            self._gated = gated
            self._forget_bias = forget_bias
            self._log_scale_bound = log_scale_bound
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
    def _reference_network(self) -> AutoregressiveNetwork:
        return self._network

    @property
    def _networks(self) -> list[AutoregressiveNetwork]:
        return [self._network]

    @property
    def gated(self) -> bool:
        return self._gated

    def _scale(self, params):
        """Returns `(shift, log_scale)` with `y = shift + exp(log_scale) * x`."""
        a, b = params[..., 0], params[..., 1]
        if self._gated:
            logit = b + tf.cast(self._forget_bias, b.dtype)
            log_gate = tf.math.log_sigmoid(logit)
            return (1.0 - tf.math.sigmoid(logit)) * a, log_gate
        bound = tf.cast(self._log_scale_bound, b.dtype)
        return a, bound * tf.math.tanh(b / bound)

    def _reduce_event(self, log_scale):
        return tf.reduce_sum(log_scale, axis=list(range(-self._network.event_ndims, 0)))

    def shift_and_log_scale(self, x, context=None):
        """The affine map of the forward step at `x`: `y = shift + exp(log_scale) * x`."""
        return self._scale(self._network(x, context=context))

    def _forward_and_ildj(self, x, context=None):
        x, context = self._validated(x, "x", context)
        shift, log_scale = self.shift_and_log_scale(x, context)
        y = shift + tf.exp(log_scale) * x
        return y, {"ildj": -self._reduce_event(log_scale)}

    def _inverse_and_ildj(self, y, context=None):
        y, context = self._validated(y, "y", context)

        def solve(y, params):
            shift, log_scale = self._scale(params)
            return (y - shift) * tf.exp(-log_scale), log_scale

        x, log_scale = self._network.sequential_solve(y, context, solve)
        return x, {"ildj": -self._reduce_event(log_scale)}


class IAFStack(_FlowBijector):
    """A stack of IAF steps, applied in order when sampling, sharing one `context`.

    - forward `y = f_T(... f_1(x; c) ...; c)`, log-det the sum of the steps' log-dets;
    - inverse runs the steps' sequential inverses in reverse order.

    Unlike `tfb.Chain`, whose keyword arguments must be routed per step by name, the single
    `context=` keyword reaches every step (TFP issue #1410). Alternate the steps' orders (see
    `dense_iaf_stack`) so that every position gets to depend on every other.

    Shapes: as the steps; all steps must share an event shape.

    Args:
      steps: `InverseAutoregressiveFlow` bijectors, `steps[0]` applied first when sampling.
      validate_args: passed to the base class (the steps check their own inputs).
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
                validate_args=validate_args,
                dtype=steps[0].dtype,
                parameters=parameters,
                name=name,
            )

    @property
    def steps(self) -> list[InverseAutoregressiveFlow]:
        return self._steps

    @property
    def _reference_network(self) -> AutoregressiveNetwork:
        return self._steps[0].network

    @property
    def _networks(self) -> list[AutoregressiveNetwork]:
        return [step.network for step in self._steps]

    @classmethod
    def from_networks(
        cls,
        networks: Sequence[AutoregressiveNetwork],
        *,
        gated: bool = False,
        forget_bias: float = 2.0,
        validate_args: bool = False,
        name: str = "iaf_stack",
    ) -> IAFStack:
        """One `InverseAutoregressiveFlow` per network, `networks[0]` applied first."""
        steps = [
            InverseAutoregressiveFlow(
                network,
                gated=gated,
                forget_bias=forget_bias,
                validate_args=validate_args,
                name=f"iaf_{t}",
            )
            for t, network in enumerate(networks)
        ]
        return cls(steps, validate_args=validate_args, name=name)

    def _forward_and_ildj(self, x, context=None):
        # Checked here once, so a bad context is named as such, not as a bad `x` at step 2.
        x, context = self._validated(x, "x", context)
        ildj = 0.0
        for step in self._steps:
            x, attrs = step._forward_and_ildj(x, context=context)
            ildj = ildj + attrs["ildj"]
        return x, {"ildj": ildj}

    def _inverse_and_ildj(self, y, context=None):
        y, context = self._validated(y, "y", context)
        ildj = 0.0
        for step in reversed(self._steps):
            y, attrs = step._inverse_and_ildj(y, context=context)
            ildj = ildj + attrs["ildj"]
        return y, {"ildj": ildj}


class _WithContext(_FlowBijector):
    """A tfp_iaf flow with its context fixed (see `with_context`)."""

    def __init__(self, flow: _FlowBijector, context):
        parameters = dict(locals())
        with tf.name_scope(f"{flow.name}_with_context") as name:
            self._flow = flow
            self._context = tf.convert_to_tensor(as_input(context, flow.dtype), flow.dtype)
            super().__init__(
                forward_min_event_ndims=flow.forward_min_event_ndims,
                is_constant_jacobian=False,
                validate_args=flow.validate_args,
                dtype=flow.dtype,
                parameters=parameters,
                name=name,
            )

    @property
    def _reference_network(self) -> AutoregressiveNetwork:
        return self._flow._reference_network

    @property
    def _networks(self) -> list[AutoregressiveNetwork]:
        return self._flow._networks

    def _forward_and_ildj(self, x):
        return self._flow._forward_and_ildj(x, context=self._context)

    def _inverse_and_ildj(self, y):
        return self._flow._inverse_and_ildj(y, context=self._context)


def dense_iaf_stack(
    event_size: int,
    num_steps: int,
    hidden_units: Sequence[int],
    *,
    context_size: int | None = None,
    gated: bool = False,
    forget_bias: float = 2.0,
    activation="elu",
    residual: bool = False,
    dtype="float32",
    validate_args: bool = False,
    name: str = "iaf_stack",
) -> IAFStack:
    """`num_steps` IAF steps on MADE networks, the order reversed between consecutive steps.

    Args:
      event_size: latent dimension.
      num_steps: number of IAF steps `T`.
      hidden_units: MADE hidden widths (each at least `event_size - 1`).
      context_size: size of the encoder's context `h`, or None.
      gated: gated or affine updates.
      forget_bias: gate bias for gated updates.
      activation: MADE activation.
      residual: residual hidden layers in the MADEs.
      dtype: float dtype of the networks.
      validate_args: checks on the steps' inputs.
      name: name of the stack.

    Returns:
      An `IAFStack`; pass `context=` through `bijector_kwargs`.

    Raises:
      TypeError: a `num_steps` that is not an int (bools included), or what `MADE` raises.
      ValueError: `num_steps < 1`, or what `MADE` raises.
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    networks = [
        MADE(
            event_size,
            hidden_units,
            context_size=context_size,
            order="left-to-right" if t % 2 == 0 else "right-to-left",
            activation=activation,
            residual=residual,
            dtype=dtype,
            name=f"made_{t}",
        )
        for t in range(num_steps)
    ]
    return IAFStack.from_networks(
        networks, gated=gated, forget_bias=forget_bias, validate_args=validate_args, name=name
    )
