"""The one base of tfp_iaf's bijectors: TFP's greedy cache, inputs checked once at the
boundary, a fixed context, and for triangular (autoregressive) flows per-unit log-dets."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

from tfp_iaf import _checks, _fingerprint
from tfp_iaf._keras import check_keras3_owner, show_layers_to_calling_model

tfb = tfp.bijectors

__all__ = ["AutoregressiveFlow", "Flow"]


class Flow(tfb.Bijector):
    """Base class of every tfp_iaf bijector: one cache, one input check, one `with_context`.

    - a pass (`_forward_and_ildj`, `_inverse_and_ildj`, what TFP's greedy cache calls) checks
      its inputs once (`_validated`) and runs the subclass's unchecked `_forward_pass` /
      `_inverse_pass`, which return `(output, attrs)`: `attrs["ildj"]`, the inverse log-det
      over the event (`[...]`), or, for triangular flows (`AutoregressiveFlow`),
      `attrs["unit_ildj"]`, its per-unit terms. TFP's cache stores `attrs` with the `(x, y)`
      pair, so the log-det of a point just mapped, either way, costs no further pass;
    - composite flows (a stack) call their parts' unchecked passes: a stack of `T` steps checks
      its inputs once per call, not once per step;
    - `with_context(h)`: the flow with its context fixed;
    - `event_shape`, `context_shape`: what the flow takes.

    Checks (`_validated`): static shapes and dtypes always (`_checks.check_inputs`); under
    `validate_args=True`, at run time, `x` and the context finite and their batch shapes
    broadcasting. The Keras tracking hooks of the flow's layers run next to the check, once per
    pass, never inside it.

    Weights carry the flow's configuration: a TF checkpoint of a flow stores its `_fingerprint`
    (class, shapes, update, networks' orders, ...), and a restore into a flow of another
    configuration raises `ValueError` naming the fields that differ (`tfp_iaf._fingerprint`).

    Subclasses implement `event_shape`, `context_shape`, `_forward_pass` and `_inverse_pass`,
    and extend `_fingerprint` with their own settings.
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_forward_and_ildj", inverse_name="_inverse_and_ildj"
    )

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The shape of one event, e.g. `(D,)` or `(H, W, C)`."""
        raise NotImplementedError

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        """The context's trailing shape, or None for a flow that takes no context."""
        raise NotImplementedError

    @property
    def _keras_layers(self) -> list:
        """The `tf_keras` layers whose variables a calling Keras model must see (none here)."""
        return []

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict()

    def _fingerprint(self) -> dict:
        """The settings that define this flow's function for given weights, as JSON values."""
        context = self.context_shape
        return {
            "class": type(self).__name__,
            "event_shape": list(self.event_shape),
            "context_shape": None if context is None else list(context),
        }

    # TensorFlow's saveable protocol: the fingerprint is saved with the flow's variables and
    # checked when they are restored; a restore of another configuration (or, into variables
    # not made yet, of another dtype) raises and drops what it queued under the flow.
    def _serialize_to_tensors(self):
        return _fingerprint.serialize(self)

    def _restore_from_tensors(self, restored_tensors):
        return _fingerprint.restore(self, restored_tensors)

    def with_context(self, context) -> Flow:
        """This flow with its `context` fixed: a bijector that takes no keyword arguments.

        For `tfd.TransformedDistribution(base, flow.with_context(h))` sampled and scored with no
        `bijector_kwargs`, and for the places where TFP passes none: a `tfd.JointDistribution*`
        posterior, `tfd.Sample`, or a `tfb.Chain` used without routing by name. Variables stay
        those of this flow; the bound bijector caches its own samples (with their log-dets).

        Args:
          context: the network's context, e.g. the encoder output `h`.

        Returns:
          A `Flow` with this flow's event shape and dtype, no context, and `forward(x) ==
          self.forward(x, context=context)` (likewise every other method, per-unit log-dets
          included for a triangular flow).

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
        if self.context_shape is None:
            shape = getattr(context, "shape", None)
            raise ValueError(
                f"bijector `{self.name}` takes no `context` (built without one), so "
                "`with_context` has nothing to fix: use the flow itself; got context="
                f"{'None' if context is None else f'of shape {shape}'}"
            )
        if context is None:
            raise ValueError(
                f"`context` must be a tensor of trailing shape {self.context_shape} to fix in "
                f"bijector `{self.name}`; got None"
            )
        return self._with_context(context)

    def _with_context(self, context) -> Flow:
        return _WithContext(self, context)

    def _forward_pass(self, x, context):
        """`(y, attrs)` for checked inputs."""
        raise NotImplementedError

    def _inverse_pass(self, y, context):
        """`(x, attrs)` for checked inputs."""
        raise NotImplementedError

    def _forward_and_ildj(self, x, context=None):
        x, context = self._enter(x, "x", context)
        return self._forward_pass(x, context)

    def _inverse_and_ildj(self, y, context=None):
        y, context = self._enter(y, "y", context)
        return self._inverse_pass(y, context)

    def _forward(self, x, **kwargs):
        return self._forward_and_ildj(x, **kwargs)[0]

    def _inverse(self, y, **kwargs):
        return self._inverse_and_ildj(y, **kwargs)[0]

    def _forward_log_det_jacobian(self, x, **kwargs):
        self.forward(x, **kwargs)  # fills the cached attributes of (x, forward(x))
        return -self._event_ildj(self._cache.forward_attributes(x, **kwargs))

    def _inverse_log_det_jacobian(self, y, **kwargs):
        self.inverse(y, **kwargs)
        return self._event_ildj(self._cache.inverse_attributes(y, **kwargs))

    def _event_ildj(self, attrs) -> tf.Tensor:
        """The inverse log-det over the event, `[...]`, from a pass's cached `attrs`."""
        return attrs["ildj"]

    def _enter(self, x, arg: str, context):
        """The boundary of a public pass: the Keras tracking hooks, then the one check."""
        layers = self._keras_layers
        if layers:
            show_layers_to_calling_model(self, layers)
            check_keras3_owner(self, layers)
        return self._validated(x, arg, context)

    def _validated(self, x, arg: str, context):
        """`(x, context)` as tensors, checked (at run time too, under `validate_args`)."""
        x = tf.convert_to_tensor(_checks.as_input(x, self.dtype), dtype_hint=self.dtype)
        context = _checks.as_input(context, self.dtype)
        if context is not None:
            context = tf.convert_to_tensor(context, dtype_hint=self.dtype)
        event_shape = self.event_shape
        _checks.check_inputs(
            x,
            context,
            event_shape=event_shape,
            context_shape=self.context_shape,
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
        c_batch = tf.shape(context)[: tf.rank(context) - len(self.context_shape)]
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
    entry. Besides TFP's `Bijector` API, every such flow gives those terms:

    - `forward_unit_log_det_jacobian(x)`: `[..., *event_shape]`, summing over the event to
      `forward_log_det_jacobian(x)`;
    - `inverse_unit_log_det_jacobian(y)`: the same for the inverse (the negated terms at `x`).

    Subclasses implement `_forward_pass` / `_inverse_pass`, returning `(output, {"unit_ildj":
    ...})`, and `networks`. TFP's greedy cache stores the terms with the `(x, y)` pair, so after
    `q.sample` the log-density, per-unit or summed, of that sample costs no network pass, and
    `log_prob` of a fresh point reuses the scales of the inverse's last pass.
    """

    def _event_ildj(self, attrs) -> tf.Tensor:
        return tf.reduce_sum(
            attrs["unit_ildj"], axis=list(range(-self.forward_min_event_ndims, 0))
        )

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
            self.forward(x, **kwargs)
            return -self._cache.forward_attributes(x, **kwargs)["unit_ildj"]

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
            self.inverse(y, **kwargs)
            return self._cache.inverse_attributes(y, **kwargs)["unit_ildj"]

    @property
    def networks(self) -> list:
        """Every `AutoregressiveNetwork` of the flow, in the order its steps run when sampling."""
        raise NotImplementedError

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.networks[0].event_shape

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        return self.networks[0].context_shape

    @property
    def _keras_layers(self) -> list:
        return self.networks

    def _with_context(self, context) -> AutoregressiveFlow:
        return _AutoregressiveWithContext(self, context)


class _WithContext(Flow):
    """A flow with its context fixed (see `Flow.with_context`): its passes are the flow's,
    checked once there."""

    def __init__(self, flow: Flow, context):
        parameters = dict(locals())
        with tf.name_scope(f"{flow.name}_with_context") as name:
            self._flow = flow
            self._context = tf.convert_to_tensor(
                _checks.as_input(context, flow.dtype), dtype_hint=flow.dtype
            )
            super().__init__(
                forward_min_event_ndims=flow.forward_min_event_ndims,
                is_constant_jacobian=False,
                validate_args=flow.validate_args,
                dtype=flow.dtype,
                parameters=parameters,
                name=name,
            )

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self._flow.event_shape

    @property
    def context_shape(self) -> None:
        return None

    def _fingerprint(self) -> dict:
        return {**super()._fingerprint(), "flow": self._flow._fingerprint()}

    def _forward_and_ildj(self, x):
        return self._flow._forward_and_ildj(x, context=self._context)

    def _inverse_and_ildj(self, y):
        return self._flow._inverse_and_ildj(y, context=self._context)

    def _event_ildj(self, attrs) -> tf.Tensor:
        return self._flow._event_ildj(attrs)


class _AutoregressiveWithContext(_WithContext, AutoregressiveFlow):
    """A triangular flow with its context fixed: per-unit log-dets too."""

    @property
    def networks(self) -> list:
        return self._flow.networks
