"""The base of tfp_iaf's bijectors: inputs checked at the boundary, a fixed context, and for
autoregressive flows cached per-unit log-dets."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

from tfp_iaf._checks import as_input, check_inputs
from tfp_iaf._keras import check_keras3_owner, show_layers_to_calling_model

tfb = tfp.bijectors

__all__ = ["AutoregressiveFlow", "Flow"]


class Flow(tfb.Bijector):
    """Base class of every tfp_iaf bijector: one input check, one way to fix the context.

    - `_validated(x, arg, context)`: the check every public pass starts with. Static shapes and
      dtypes always (`_checks.check_inputs`); under `validate_args=True`, at run time, `x` and
      the context finite and their batch shapes broadcasting;
    - `with_context(h)`: the flow with its context fixed.

    Subclasses implement `input_shapes` and `_with_context`.
    """

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """`(event_shape, context_shape)`: the event's shape and the context's trailing shape
        (None for a flow that takes no context)."""
        raise NotImplementedError

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict()

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

        Raises:
          ValueError: `context` is None, or this flow takes no context (there is nothing to
            fix: use the flow itself).

        Examples:
          >>> import tfp_iaf
          >>> flow = tfp_iaf.dense_iaf_stack(2, num_steps=2, hidden_units=[8], context_size=3)
          >>> h = tf.ones([4, 3])
          >>> posterior = tfp.distributions.JointDistributionNamed({
          ...     "z": tfp.distributions.TransformedDistribution(
          ...         tfp.distributions.MultivariateNormalDiag(tf.zeros([4, 2])),
          ...         flow.with_context(h))})
          >>> posterior.log_prob(posterior.sample(seed=1)).shape
          TensorShape([4])
        """
        _, context_shape = self.input_shapes
        if context_shape is None:
            shape = getattr(context, "shape", None)
            raise ValueError(
                f"bijector `{self.name}` takes no `context` (built without one), so "
                "`with_context` has nothing to fix: use the flow itself; got context="
                f"{'None' if context is None else f'of shape {shape}'}"
            )
        if context is None:
            raise ValueError(
                f"`context` must be a tensor of trailing shape {context_shape} to fix in "
                f"bijector `{self.name}`; got None"
            )
        return self._with_context(context)

    def _with_context(self, context) -> tfb.Bijector:
        raise NotImplementedError

    def _validated(self, x, arg: str, context):
        """`(x, context)` as tensors, checked (at run time too, under `validate_args`)."""
        x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
        context = as_input(context, self.dtype)
        if context is not None:
            context = tf.convert_to_tensor(context, dtype_hint=self.dtype)
        event_shape, context_shape = self.input_shapes
        check_inputs(
            x,
            context,
            event_shape=event_shape,
            context_shape=context_shape,
            dtype=self.dtype,
            owner=f"bijector `{self.name}`",
            arg=arg,
        )
        if not self.validate_args:
            return x, context
        x = tf.debugging.assert_all_finite(x, f"`{arg}` must be finite (bijector `{self.name}`)")
        if context is None:
            return x, context
        context = tf.debugging.assert_all_finite(
            context, f"`context` must be finite (bijector `{self.name}`)"
        )
        x_batch = tf.shape(x)[: tf.rank(x) - len(event_shape)]
        c_batch = tf.shape(context)[: tf.rank(context) - len(context_shape)]
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


class AutoregressiveFlow(Flow):
    """Base class of tfp_iaf's autoregressive bijectors (IAFs): a `Flow` with per-unit log-dets.

    An autoregressive flow's Jacobian is triangular, so its log-det is a sum over the event's
    units (positions): `log|det J(x)| = sum_i u_i(x)` with `u_i` the log of the `i`-th diagonal
    entry. Besides TFP's `Bijector` API, every tfp_iaf flow gives those terms:

    - `forward_unit_log_det_jacobian(x)`: `[..., *event_shape]`, summing over the event to
      `forward_log_det_jacobian(x)`;
    - `inverse_unit_log_det_jacobian(y)`: the same for the inverse (the negated terms at `x`);
    - `with_context(h)`: the flow with its context fixed, for TFP code that passes no kwargs.

    Subclasses implement `_forward_and_ildj` / `_inverse_and_ildj`, returning `(output,
    {"unit_ildj": ...})`, and `networks`. TFP's greedy cache stores the terms with the `(x, y)`
    pair, so after `q.sample` the log-density, per-unit or summed, of that sample costs no network
    pass, and `log_prob` of a fresh point reuses the scales of the inverse's last pass.
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_forward_and_ildj", inverse_name="_inverse_and_ildj"
    )

    def _forward(self, x, **kwargs):
        return self._forward_and_ildj(x, **kwargs)[0]

    def _inverse(self, y, **kwargs):
        return self._inverse_and_ildj(y, **kwargs)[0]

    def _forward_log_det_jacobian(self, x, **kwargs):
        return -self._reduce_event(self._unit_ildj_at_x(x, **kwargs))

    def _inverse_log_det_jacobian(self, y, **kwargs):
        return self._reduce_event(self._unit_ildj_at_y(y, **kwargs))

    def _unit_ildj_at_x(self, x, **kwargs):
        self.forward(x, **kwargs)  # fills the cached attributes of (x, forward(x))
        return self._cache.forward_attributes(x, **kwargs)["unit_ildj"]

    def _unit_ildj_at_y(self, y, **kwargs):
        self.inverse(y, **kwargs)
        return self._cache.inverse_attributes(y, **kwargs)["unit_ildj"]

    def _reduce_event(self, units):
        return tf.reduce_sum(units, axis=list(range(-self.forward_min_event_ndims, 0)))

    def forward_unit_log_det_jacobian(self, x, name="forward_unit_log_det_jacobian", **kwargs):
        """The forward log-det split over the event's units: `[..., *event_shape]`.

        `reduce_sum` over the event axes gives `forward_log_det_jacobian(x, event_ndims=...)`.
        Free of charge for `x` that this flow has just mapped (e.g. a base sample inside
        `TransformedDistribution.sample`): the terms are cached with the pass.

        Args:
          x: `[..., *event_shape]`.
          name: name scope.
          **kwargs: the flow's keyword arguments, e.g. `context=h`.

        Returns:
          `u` with `u[..., i] = log |d y_i / d x_i|`, shaped like `x`.
        """
        with self._name_and_control_scope(name):
            x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
            return -self._unit_ildj_at_x(x, **kwargs)

    def inverse_unit_log_det_jacobian(self, y, name="inverse_unit_log_det_jacobian", **kwargs):
        """The inverse log-det split over the event's units: `[..., *event_shape]`.

        `reduce_sum` over the event axes gives `inverse_log_det_jacobian(y, event_ndims=...)`.
        Free of charge for `y` this flow has produced (a posterior sample): the terms are cached
        with the forward pass; otherwise it runs the sequential inverse.

        Args:
          y: `[..., *event_shape]`.
          name: name scope.
          **kwargs: the flow's keyword arguments, e.g. `context=h`.

        Returns:
          `u` with `u[..., i] = log |d x_i / d y_i|`, shaped like `y`.
        """
        with self._name_and_control_scope(name):
            y = tf.convert_to_tensor(y, dtype_hint=self.dtype)
            return self._unit_ildj_at_y(y, **kwargs)

    @property
    def networks(self) -> list:
        """Every `AutoregressiveNetwork` of the flow, in the order its steps run when sampling."""
        raise NotImplementedError

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        network = self.networks[0]
        return network.event_shape, network.context_shape

    def _with_context(self, context) -> AutoregressiveFlow:
        return _WithContext(self, context)

    def _validated(self, x, arg: str, context):
        show_layers_to_calling_model(self, self.networks)
        check_keras3_owner(self, self.networks)
        return super()._validated(x, arg, context)


class _WithContext(AutoregressiveFlow):
    """A tfp_iaf flow with its context fixed (see `with_context`)."""

    def __init__(self, flow: AutoregressiveFlow, context):
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
    def networks(self) -> list:
        return self._flow.networks

    def _forward_and_ildj(self, x):
        return self._flow._forward_and_ildj(x, context=self._context)

    def _inverse_and_ildj(self, y):
        return self._flow._inverse_and_ildj(y, context=self._context)
