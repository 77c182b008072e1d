"""The one place tfp_iaf imports Keras.

TensorFlow Probability's layers are `tf_keras` (Keras 2) layers, and only a `tf_keras` model tracks
the variables of a network held inside a TFP bijector. Importing `tf_keras` here, rather than
`tf.keras` (Keras 3 since TF 2.16), means users need no `TF_USE_LEGACY_KERAS` environment variable.
"""

from __future__ import annotations

from collections.abc import Sequence

import tf_keras

__all__ = ["tf_keras", "show_layers_to_calling_model"]


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
