"""FlowLayer's `trainable` flag and a flow held by two FlowLayers, in Keras 3 models.

A FlowLayer built with `trainable=False` stays out of `trainable_weights` and `fit`, in the
model as in the layer, also after a `.keras` round trip; `layer.trainable = True` thaws it. Two
FlowLayers around one flow share its Keras 3 variables: a model lists each once and an
optimizer step updates each once.
"""

import keras
import numpy as np
import tensorflow as tf

from tests.test_keras3 import (
    CONTEXT,
    EVENT,
    IN,
    STACK,
    assert_all_changed,
    data,
    log_q,
    make_flow,
    values,
)
from tfp_iaf.keras3 import FlowLayer


def test_a_frozen_flow_layer_is_left_alone_by_fit_also_after_a_keras_round_trip(tmp_path):
    x, y = data()
    inputs = keras.Input((IN,))
    h = keras.layers.Dense(CONTEXT, name="encoder")(inputs)
    frozen = FlowLayer("dense_iaf_stack", trainable=False, name="flow", **STACK)
    model = keras.Model(inputs, frozen(inputs[:, :EVENT], context=h))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for m in (model, loaded):
        layer, encoder = m.get_layer("flow"), m.get_layer("encoder")
        assert not layer.trainable and layer.trainable_weights == []
        assert {id(w) for w in m.trainable_weights} == {id(w) for w in encoder.weights}
        flow_before, encoder_before = values(layer.weights), values(encoder.weights)
        m.compile(keras.optimizers.Adam(1e-2), "mse")
        m.fit(x, y, epochs=1, batch_size=4, verbose=0)
        for b, a in zip(flow_before, values(layer.weights), strict=True):
            np.testing.assert_array_equal(a, b)
        assert_all_changed(encoder_before, values(encoder.weights))
    layer.trainable = True  # thawed: listed again
    assert len(loaded.trainable_weights) == len(layer.flow.trainable_variables) + 2


class TwoFlowLayers(keras.Model):
    """A subclassed model holding one flow through two FlowLayers (one frozen, or not)."""

    def __init__(self, trainable=True):
        super().__init__()
        self.encoder = keras.layers.Dense(CONTEXT)
        flow = make_flow()
        self.first, self.second = FlowLayer(flow), FlowLayer(flow, trainable=trainable)

    def call(self, x):
        h = self.encoder(x)
        z = self.second(x[..., :EVENT], context=h)
        return log_q(self.first.flow, x[..., :EVENT], h) + tf.reduce_sum(z, -1)


def test_one_flow_in_two_flow_layers_is_listed_and_updated_once():
    x = data()[0]
    model = TwoFlowLayers()
    model(x)
    flow = model.first.flow
    assert [id(w) for w in model.first.weights] == [id(w) for w in model.second.weights]
    assert len(model.trainable_weights) == len(flow.trainable_variables) + 2
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    expected = [
        v.numpy() - 0.1 * g.numpy()
        for v, g in zip(flow.variables, tape.gradient(loss, flow.variables), strict=True)
    ]
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, model.trainable_variables, strict=True))
    for e, v in zip(expected, flow.variables, strict=True):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-7)
    # Shared weights, as between any Keras layers: freezing one layer freezes them for both.
    frozen = TwoFlowLayers(trainable=False)
    frozen(x)
    assert len(frozen.trainable_weights) == 2
