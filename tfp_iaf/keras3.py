"""Keras 3 (`tf.keras` since TF 2.16): a layer that owns a tfp_iaf flow, so a model trains it.

tfp_iaf's networks are `tf_keras` layers (TFP's convention), and a Keras 3 model tracks only
Keras 3 `Variable`s and layers: a flow held as a bare attribute would be left out of
`trainable_variables`, `fit` and saving. `FlowLayer` is the one way to hold a flow in a Keras 3
model; holding it bare is an error the first time it runs inside a Keras 3 layer (see
`tfp_iaf._keras.check_keras3_owner`), never a silent drop.

`tf_keras` models need none of this: they track a flow attribute as TFP's bijectors expect.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from tfp_iaf import _fingerprint, _keras
from tfp_iaf.flow import AutoregressiveFlow
from tfp_iaf.stacks import conv_iaf_stack, dense_iaf_stack
from tfp_iaf.transforms import Transform

__all__ = ["FlowLayer"]

# The stacks a FlowLayer can build from a name, and so write to a `.keras` config.
STACKS = {"dense_iaf_stack": dense_iaf_stack, "conv_iaf_stack": conv_iaf_stack}

# FlowLayer -> (a weak reference to the weights store, the refusal) of its last refused load.
_REFUSALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# network -> {variable.ref(): its Keras 3 Variable}: every FlowLayer around a network lists the
# same Keras 3 variables, so a model holding two such layers lists (and updates) each once.
_KERAS3_VARIABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@keras.saving.register_keras_serializable(package="tfp_iaf")
class FlowLayer(keras.layers.Layer):
    """A Keras 3 layer that owns a tfp_iaf flow: `fit`, `summary` and saving see its variables.

    The flow's variables are `tf.Variable`s of its `tf_keras` networks. At construction this
    layer builds the networks and lists each variable as a Keras 3 `Variable` sharing its
    storage: the optimizer's updates, `load_weights` and `load_model` write the flow's own
    variables, so `layer.flow` is the trained bijector, with nothing to copy.

    - `layer.flow`: the bijector, e.g. for `tfd.TransformedDistribution(base, layer.flow)` in a
      subclassed model's `call`, with `bijector_kwargs={"context": h}`;
    - `layer(x, context=h)`: `y = flow.forward(x, context=h)` (and the forward log-det with
      `return_log_det=True`), for functional models.

    Shapes: `x: [..., *event_shape] -> y: same`; log-det `[...]`; `context` as the flow's.

    Several FlowLayers around one flow (or around flows sharing networks) share one set of
    Keras 3 variables: a model holding them lists and updates each variable once. As for any
    weights shared between Keras layers, setting `trainable` on one of them (at construction
    or later) sets it for the shared variables, so the last setting wins.

    Its saved weights (`.weights.h5`, `.keras`, a TF checkpoint) carry the flow's fingerprint:
    loaded into a FlowLayer around a flow of another configuration (e.g. gated where they were
    affine) they raise `ValueError` naming the settings that differ, and load nothing.

    The layer computes in the flow's dtype: under a `mixed_float16` policy, inputs of another
    float dtype are cast to it (a density stays in float32). `layer.flow` called directly takes
    inputs of its own dtype only, as any tfp_iaf flow.

    Args:
      flow: a tfp_iaf flow (e.g. from `tfp_iaf.dense_iaf_stack`), or the name of a stack
        builder, `"dense_iaf_stack"` or `"conv_iaf_stack"`, called with `stack_kwargs` (which
        must then be JSON values, but for a `transform` object, which is kept as its config).
        A functional model's `model.save("m.keras")` writes every layer's config, so there
        the layer must be built from a name; a subclassed model's own config rebuilds its
        flow, and weights save and load in every case.
      return_log_det: `call` returns `(y, forward_log_det_jacobian)` instead of `y`.
      trainable: whether the flow's variables are trained. False: neither this layer nor a
        model holding it lists them as trainable, so `fit` leaves them unchanged (also after a
        `.keras` round trip); `layer.trainable = True` thaws them.
      name: name of the layer.
      **stack_kwargs: the builder's arguments, when `flow` is a name.

    Raises:
      TypeError: `flow` is neither a tfp_iaf flow nor a string, `stack_kwargs` come with a
        flow object, or `return_log_det` is not a bool.
      ValueError: an unknown stack name, or what the builder raises.
      NotImplementedError: `get_config()` of a layer around a flow object.

    Examples:
      >>> import keras
      >>> import tfp_iaf
      >>> layer = tfp_iaf.keras3.FlowLayer(
      ...     tfp_iaf.dense_iaf_stack(2, num_steps=2, hidden_units=[8], context_size=3))
      >>> len(layer.trainable_variables) == len(layer.flow.trainable_variables)
      True
      >>> layer(tf.zeros([5, 2]), context=tf.ones([5, 3])).shape
      TensorShape([5, 2])
    """

    def __init__(
        self,
        flow: AutoregressiveFlow | str,
        *,
        return_log_det: bool = False,
        trainable: bool = True,
        name: str | None = None,
        **stack_kwargs,
    ):
        stack = None
        if isinstance(flow, str):
            if flow not in STACKS:
                raise ValueError(f"`flow` must be a flow or one of {sorted(STACKS)}; got {flow!r}")
            if isinstance(stack_kwargs.get("transform"), Transform):  # a config holds JSON
                stack_kwargs["transform"] = stack_kwargs["transform"].get_config()
            stack = (flow, dict(stack_kwargs))
            flow = STACKS[flow](**stack_kwargs)
        elif not isinstance(flow, AutoregressiveFlow):
            raise TypeError(
                "`flow` must be a tfp_iaf flow (e.g. tfp_iaf.dense_iaf_stack(...)) or a stack "
                f"name; got {type(flow).__name__}"
            )
        elif stack_kwargs:
            raise TypeError(
                f"`stack_kwargs` {sorted(stack_kwargs)} are arguments of a stack builder, given "
                "with a flow object; pass a stack name as `flow` to use them"
            )
        if not isinstance(return_log_det, bool):
            raise TypeError(f"`return_log_det` must be a bool; got {return_log_det!r}")
        super().__init__(trainable=trainable, name=name or flow.name, dtype=flow.dtype.name)
        self._stack = stack
        self.return_log_det = return_log_det
        self._flow = flow
        with keras.name_scope(self.name):  # paths `iaf_stack/made_0_masked_0_kernel`
            variables = _keras3_variables(flow)
        # A list attribute: Keras 3 tracks each Variable in it as this layer's own, among its
        # trainable variables if the flow's variable is trainable; then, as Keras' `add_weight`
        # does, a layer built with trainable=False freezes them (`layer.trainable = True`
        # thaws them), so neither it nor a model holding it lists them as trainable.
        self._flow_variables = variables
        if not self.trainable:
            for v in variables:
                v.trainable = False
        _keras.register_keras3_owner(self, flow.networks)
        self.built = True  # every variable exists: nothing to build at the first call

    @property
    def flow(self) -> AutoregressiveFlow:
        """The bijector, its variables those of this layer."""
        return self._flow

    def call(self, x, context=None):
        kwargs = {} if context is None else {"context": context}
        y = self._flow.forward(x, **kwargs)
        if not self.return_log_det:
            return y
        return y, self._flow.forward_log_det_jacobian(x, **kwargs)

    def compute_output_spec(self, x, context=None):
        # The flow's shapes without tracing it: `x`'s batch broadcast against `context`'s.
        event_ndims = self._flow.forward_min_event_ndims
        batch = tf.TensorShape(x.shape[: len(x.shape) - event_ndims])
        if context is not None:
            context_ndims = len(self._flow.networks[0].context_shape)
            context_batch = tf.TensorShape(context.shape[: len(context.shape) - context_ndims])
            batch = tf.broadcast_static_shape(batch, context_batch)
        dtype = self._flow.dtype.name
        y = keras.KerasTensor((*batch, *x.shape[len(x.shape) - event_ndims :]), dtype)
        return (y, keras.KerasTensor(tuple(batch), dtype)) if self.return_log_det else y

    def save_own_variables(self, store) -> None:
        """Keras 3's weights files (`.weights.h5`, `.keras`): the flow's variables, and its
        fingerprint (UTF-8 bytes), which `load_own_variables` compares."""
        super().save_own_variables(store)
        text = _fingerprint.encode(self._flow._fingerprint())
        store[_fingerprint.CHECKPOINT_NAME] = np.frombuffer(text.encode("utf-8"), np.uint8)

    def load_own_variables(self, store) -> None:
        """Loads the flow's variables, refusing those of a flow of another configuration.

        Raises:
          ValueError: the file's fingerprint differs from the flow's (the fields are named);
            nothing is loaded. A file without one (an older release) loads unchecked.
        """
        refused = _REFUSALS.get(self)
        if refused is not None and refused[0]() is store and not len(store.keys()):
            # Keras 3 tries a layer that failed to load again at its other paths in the model
            # (a subclassed model's `layers`), where the file has nothing: the refusal stands,
            # rather than a count of missing variables.
            raise refused[1]
        name = _fingerprint.CHECKPOINT_NAME
        if name in store:
            try:
                _fingerprint.check(self._flow, np.asarray(store[name], np.uint8).tobytes())
            except _fingerprint.FingerprintMismatch as e:
                _REFUSALS[self] = (weakref.ref(store), e)
                raise
            store = {key: store[key] for key in store.keys() if key != name}
        super().load_own_variables(store)

    def get_config(self) -> dict:
        if self._stack is None:
            raise NotImplementedError(
                f"FlowLayer `{self.name}` holds a flow object, which a `.keras` config cannot "
                "describe: build the layer from a stack name, e.g. "
                "FlowLayer('dense_iaf_stack', event_size=..., num_steps=..., hidden_units=...), "
                "or save weights only (`save_weights`) and rebuild the model in code"
            )
        builder, kwargs = self._stack
        return {
            "name": self.name,
            "trainable": self.trainable,
            "return_log_det": self.return_log_det,
            "flow": builder,
            **kwargs,
        }


def _keras3_variables(flow: AutoregressiveFlow) -> list[keras.Variable]:
    """The flow's variables as Keras 3 Variables sharing their storage, one per variable.

    A variable already wrapped for another FlowLayer gets that wrapper back (its `trainable`
    reset to the variable's own), so layers around one flow share one set of Keras 3 variables.
    """
    variables = _build(flow)
    network_of = {v.ref(): n for n in flow.networks for v in n.variables}
    wrapped = []
    for v in variables:
        shared = _KERAS3_VARIABLES.setdefault(network_of[v.ref()], {})
        if v.ref() not in shared:
            shared[v.ref()] = keras.Variable(
                v, trainable=v.trainable, autocast=False, name=_variable_name(v)
            )
        shared[v.ref()].trainable = v.trainable
        wrapped.append(shared[v.ref()])
    return wrapped


def _build(flow: AutoregressiveFlow) -> list[tf.Variable]:
    """Builds every network of `flow` (eagerly, on zeros) and returns the flow's variables."""
    with tf.init_scope():
        for network in flow.networks:
            if network.built:
                continue
            x = tf.zeros([1, *network.event_shape], network.dtype)
            context = (
                None
                if network.context_shape is None
                else tf.zeros([1, *network.context_shape], network.dtype)
            )
            network(x, context=context)
    return list(flow.variables)


def _variable_name(v: tf.Variable) -> str:
    """`made_0/masked_0/kernel:0` -> `made_0_masked_0_kernel` (Keras 3 names have no `/`)."""
    return v.name.split(":")[0].replace("/", "_")
