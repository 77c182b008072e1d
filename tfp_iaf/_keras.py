"""The one place tfp_iaf imports Keras.

TensorFlow Probability's layers are `tf_keras` (Keras 2) layers, and only a `tf_keras` model tracks
the variables of a network held inside a TFP bijector. Importing `tf_keras` here, rather than
`tf.keras` (Keras 3 since TF 2.16), means users need no `TF_USE_LEGACY_KERAS` environment variable.
"""

import tf_keras

__all__ = ["tf_keras"]
