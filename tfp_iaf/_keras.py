"""The one place tfp_iaf reaches into Keras: `tf_keras`, and the Keras 3 call context.

TensorFlow Probability's layers are `tf_keras` (Keras 2) layers, and only a `tf_keras` model tracks
the variables of a network held inside a TFP bijector. Importing `tf_keras` here, rather than
`tf.keras` (Keras 3 since TF 2.16), means users need no `TF_USE_LEGACY_KERAS` environment variable.

A Keras 3 model tracks only Keras 3 variables and layers, so there a flow must be held through
`tfp_iaf.keras3.FlowLayer`; `check_keras3_owner` makes a flow held any other way fail loudly the
first time it runs inside a Keras 3 layer. It reads Keras 3's private call context, the only
private Keras 3 name tfp_iaf uses (`keras3_entry_layer`; tests/test_keras3.py guards it).

`tfp_iaf._hdf5` reaches into tf_keras once more: it wraps the private functions of tf_keras's
HDF5 weights format, so that `save_weights("w.h5")` carries the flows' fingerprints.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Sequence

import tf_keras

__all__ = [
    "tf_keras",
    "check_keras3_owner",
    "keras3_entry_layer",
    "register_keras3_owner",
    "show_layers_to_calling_model",
]


def show_layers_to_calling_model(module, layers: Sequence[tf_keras.layers.Layer]) -> None:
    """Lists `layers` among the layers of the tf_keras Model calling `module`, if it holds it.

    A tf_keras Model tracks a `tf.Module` attribute (a bijector) for training and for the
    TensorFlow checkpoint format, but its `layers` (hence `summary()` and `save_weights("*.h5")`,
    which stores weights layer by layer) see only Layer attributes: the networks inside the
    bijector would be skipped silently. Called when the bijector runs, this makes them direct
    layers of the Model whose `call` is running, if `module` is one of that Model's own
    attributes. Weights are deduplicated by Keras, and checkpoint keys do not change.
    """
    try:  # tf_keras keeps its call context in a private module; without it, nothing is done.
        from tf_keras.src.engine.base_layer_utils import call_context
    except ImportError:  # pragma: no cover
        return
    model = call_context().layer
    if not isinstance(model, tf_keras.Model):
        return
    tracked = getattr(model, "_self_tracked_trackables", None)
    if tracked is None or not any(t is module for t in tracked):
        return
    for layer in layers:
        if not any(t is layer for t in tracked):
            tracked.append(layer)


def keras3_entry_layer():
    """The outermost Keras 3 layer whose `__call__` is running, or None.

    Keras 3 keeps it in a private global (`current_call_ctx`, set by `Layer.__call__`, eager and
    symbolic calls alike). Keras 3 is not imported here: if no one has imported it, no Keras 3
    layer can be running.
    """
    if "keras" not in sys.modules:
        return None
    try:  # a Keras release without it disables the check; tests/test_keras3.py then fails
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover
        return None
    context = global_state.get_global_attribute("current_call_ctx")
    return getattr(context, "entry_layer", None)


# network -> the FlowLayers owning it; Keras 3 layer -> the networks checked to be its own.
_keras3_owners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_keras3_owner(layer, networks: Sequence[tf_keras.layers.Layer]) -> None:
    """Records that the Keras 3 `layer` (a FlowLayer) tracks the variables of `networks`."""
    for network in networks:
        _keras3_owners.setdefault(network, weakref.WeakSet()).add(layer)


def check_keras3_owner(flow, networks: Sequence[tf_keras.layers.Layer]) -> None:
    """Raises if `flow` runs inside a Keras 3 layer that does not track it through a FlowLayer.

    Keras 3 tracks attributes that are Keras 3 variables or layers only: a flow attribute (or a
    `TransformedDistribution` holding one) adds nothing to `trainable_variables`, so `fit` would
    never train it and saving would skip it, silently. The check runs where the flow's inputs
    are checked, at trace time under `tf.function`; a layer found to own the flow is remembered.

    Raises:
      ValueError: the outermost Keras 3 layer running holds no `tfp_iaf.keras3.FlowLayer`
        around `flow`.
    """
    entry = keras3_entry_layer()
    if entry is None:
        return
    checked = _checked.setdefault(entry, weakref.WeakSet())
    if all(network in checked for network in networks):
        return
    weight_ids = {id(w) for w in entry.weights}
    for network in networks:
        owners = _keras3_owners.get(network, ())
        if not any(all(id(w) in weight_ids for w in owner.weights) for owner in owners):
            num_variables = len(flow.variables)
            raise ValueError(
                f"flow `{flow.name}` ran inside the Keras 3 layer `{entry.name}` "
                f"({type(entry).__name__}), which does not track its {num_variables} variables: "
                "Keras 3 tracks only its own variables and layers, so `fit`, "
                "`trainable_variables` and saving would skip the flow. Hold it through a Keras "
                "3 layer: `self.flow = tfp_iaf.keras3.FlowLayer(flow)`, then use "
                "`self.flow.flow` as the bijector (or `self.flow(x, context=h)`). "
                "A tf_keras model (tfp_iaf.tf_keras.Model) holds a flow directly"
            )
        checked.add(network)
