"""A flow inside a Keras model: Keras 3 (`tfp_iaf.keras3.FlowLayer`) and tf_keras (an attribute).

Properties, for both Keras and for subclassed (custom `train_step`) and functional models: `fit`
changes every variable of the flow; saving and loading (`save_weights`, and `model.save` of a
`.keras` file under Keras 3) give identical log-densities; every network kind (dense, conv,
linear) trains under Keras 3 with a `mixed_float16` policy, and the functional model under XLA
(`jit_compile=True`). A flow held by a Keras 3 model any other way fails loudly at its first
call (`trainable=False`, and one flow in two FlowLayers: test_keras3_sharing.py). The private
Keras 3 name tfp_iaf reads (the call context) and the storage sharing of
`keras.Variable(tf_variable)` are guarded here, so a Keras release that changes them fails this
file, not users.
"""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
from tfp_iaf import _keras
from tfp_iaf.keras3 import FlowLayer

tfd = tfp.distributions
tf_keras = tfp_iaf.tf_keras
ROOT = pathlib.Path(__file__).resolve().parents[1]

EVENT, CONTEXT, IN = 3, 2, 4
STACK = {"event_size": EVENT, "num_steps": 2, "hidden_units": [4], "context_size": CONTEXT}


def make_flow(kind="dense"):
    if kind == "dense":
        return tfp_iaf.dense_iaf_stack(**STACK)
    if kind == "linear":
        nets = [tfp_iaf.LinearAutoregressive(EVENT, CONTEXT, order=o) for o in ("left-to-right",)]
        return tfp_iaf.IAFStack.from_networks(nets)
    return tfp_iaf.conv_iaf_stack((2, 2, 1), 2, [2], context_channels=1)


def data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, IN)).astype("float32"), rng.normal(size=(n, EVENT)).astype(
        "float32"
    )


def log_q(flow, z, h):
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(EVENT)), flow)
    return q.log_prob(z, bijector_kwargs={"context": h})


def values(variables):
    return [v.numpy() for v in variables]


def assert_all_changed(before, after):
    same = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if np.array_equal(b, a)]
    assert len(before) > 0 and not same, f"variables {same} of {len(before)} did not change"


def train_step(model, x):
    """A custom train_step, the same for both Keras: maximise `log q(z | x)`."""
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return {"loss": loss}


@keras.saving.register_keras_serializable(package="tfp_iaf_tests")
class Keras3Posterior(keras.Model):
    """Subclassed Keras 3: `call(x) = log q(z | h(x))` for a fixed slice `z` of `x`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoder = keras.layers.Dense(CONTEXT)
        self.flow = FlowLayer(make_flow())

    def call(self, x):
        return log_q(self.flow.flow, x[..., :EVENT], self.encoder(x))

    train_step = train_step


class TfKerasPosterior(tf_keras.Model):
    """The same in tf_keras, where the flow is a plain attribute (TFP's convention)."""

    def __init__(self):
        super().__init__()
        self.encoder = tf_keras.layers.Dense(CONTEXT)
        self.flow = make_flow()

    def call(self, x):
        return log_q(self.flow, x[..., :EVENT], self.encoder(x))

    train_step = train_step


def test_keras3_private_call_context_is_where_tfp_iaf_reads_it():
    seen = []

    class Probe(keras.layers.Layer):
        def call(self, x):
            seen.append(_keras.keras3_entry_layer())
            return x

    probe = Probe()
    probe(tf.zeros([1]))
    assert seen == [probe] and _keras.keras3_entry_layer() is None


def test_flow_layer_variables_share_storage_with_the_flow():
    layer = FlowLayer(make_flow())
    flow_vars = layer.flow.variables
    assert len(layer.weights) == len(flow_vars) > 0
    assert all(isinstance(w, keras.Variable) for w in layer.weights)
    layer.weights[0].assign(tf.ones(layer.weights[0].shape))
    np.testing.assert_array_equal(flow_vars[0].numpy(), 1.0)
    flow_vars[1].assign(tf.fill(flow_vars[1].shape, 2.0))
    np.testing.assert_array_equal(np.array(layer.weights[1]), 2.0)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["keras3", "tf_keras"])
def test_subclassed_custom_train_step_trains_saves_and_restores(framework, tmp_path):
    x, _ = data()
    lib, cls = (keras, Keras3Posterior) if framework == "keras3" else (tf_keras, TfKerasPosterior)
    model = cls()
    model.compile(optimizer=lib.optimizers.Adam(1e-2))
    model(x)
    flow = model.flow.flow if framework == "keras3" else model.flow
    assert {id(v) for v in flow.trainable_variables} <= {
        id(getattr(v, "value", v)) for v in model.trainable_variables
    } | {id(v) for v in model.trainable_variables}
    before = values(flow.trainable_variables)
    model.fit(x, epochs=1, batch_size=4, verbose=0)
    assert_all_changed(before, values(flow.trainable_variables))

    expected = model(x).numpy()
    path = str(tmp_path / ("m.weights.h5" if framework == "keras3" else "m.h5"))
    model.save_weights(path)
    restored = cls()
    restored(x)
    restored.load_weights(path)
    np.testing.assert_array_equal(restored(x).numpy(), expected)
    if framework == "keras3":
        model.save(tmp_path / "m.keras")
        loaded = keras.models.load_model(tmp_path / "m.keras")
        np.testing.assert_array_equal(loaded(x).numpy(), expected)


def keras3_functional():
    x = keras.Input((IN,))
    h = keras.layers.Dense(CONTEXT, name="encoder")(x)
    flow = FlowLayer("dense_iaf_stack", return_log_det=True, name="flow", **STACK)
    z, fldj = flow(x[:, :EVENT], context=h)
    return keras.Model(x, [z, fldj])


class TfKerasFlowCall(tf_keras.layers.Layer):
    """A tf_keras layer holding a flow as an attribute: tf_keras tracks it."""

    def __init__(self, flow, **kwargs):
        super().__init__(**kwargs)
        self.flow = flow

    def call(self, z, context):
        return self.flow.forward(z, context=context), self.flow.forward_log_det_jacobian(
            z, context=context
        )


def tf_keras_functional():
    x = tf_keras.Input((IN,))
    h = tf_keras.layers.Dense(CONTEXT, name="encoder")(x)
    z, fldj = TfKerasFlowCall(make_flow(), name="flow")(x[:, :EVENT], context=h)
    return tf_keras.Model(x, [z, fldj])


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["keras3", "tf_keras"])
def test_functional_fit_trains_saves_and_restores(framework, tmp_path):
    x, y = data()
    lib, build = (
        (keras, keras3_functional) if framework == "keras3" else (tf_keras, tf_keras_functional)
    )
    model = build()
    # XLA under Keras 3 here; tf_keras under XLA is TFP's own path (test_conformance.py).
    model.compile(lib.optimizers.Adam(1e-2), ["mse", None], jit_compile=framework == "keras3")
    flow = model.get_layer("flow").flow
    assert len(model.trainable_weights) == len(flow.trainable_variables) + 2
    before = values(flow.trainable_variables)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert_all_changed(before, values(flow.trainable_variables))

    h = model.get_layer("encoder")(x)
    expected = log_q(flow, y, h).numpy()
    path = str(tmp_path / ("m.weights.h5" if framework == "keras3" else "m.h5"))
    model.save_weights(path)
    restored = build()
    restored.load_weights(path)
    np.testing.assert_array_equal(log_q(restored.get_layer("flow").flow, y, h).numpy(), expected)
    if framework == "keras3":  # loaded in a fresh process: `import tfp_iaf` registers FlowLayer
        model.save(tmp_path / "m.keras")
        np.save(tmp_path / "zh.npy", np.concatenate([y, h], -1))
        code = (
            "import json, keras, numpy as np, tfp_iaf\n"
            "from tests.test_keras3 import EVENT, log_q\n"
            f"m = keras.models.load_model({str(tmp_path / 'm.keras')!r})\n"
            f"zh = np.load({str(tmp_path / 'zh.npy')!r})\n"
            "print(json.dumps(log_q(m.get_layer('flow').flow, zh[:, :EVENT], zh[:, EVENT:])"
            ".numpy().tolist()))"
        )
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
        )
        assert run.returncode == 0, run.stderr[-2000:]
        loaded = np.array(json.loads(run.stdout.strip().splitlines()[-1]), np.float32)
        np.testing.assert_array_equal(loaded, expected)


@pytest.mark.parametrize("kind", ["dense", "conv", "linear"])
def test_every_network_trains_under_keras3_with_mixed_precision(kind):
    flow = make_flow(kind)
    event_shape = flow.networks[0].event_shape
    context_shape = flow.networks[0].context_shape
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        z0 = keras.Input(event_shape)
        c = keras.Input(context_shape)
        h = keras.layers.Dense(context_shape[-1])(c)  # float16
        layer = FlowLayer(flow)
        model = keras.Model([z0, c], layer(z0, context=h))
        model.compile(keras.optimizers.Adam(1e-2), "mse")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert layer.compute_dtype == "float32" and h.dtype == "float16"
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(4, *s)).astype("float32") for s in (event_shape, context_shape)]
    before = values(flow.trainable_variables)
    model.fit(inputs, rng.normal(size=(4, *event_shape)), epochs=1, verbose=0)
    assert_all_changed(before, values(flow.trainable_variables))
    assert model.predict(inputs, verbose=0).dtype == np.float32


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_conv_and_linear_networks_train_in_a_tf_keras_model(kind):
    flow = make_flow(kind)
    shapes = flow.networks[0].event_shape, flow.networks[0].context_shape
    z0, c = (tf_keras.Input(s) for s in shapes)
    model = tf_keras.Model([z0, c], TfKerasFlowCall(flow)(z0, context=c)[0])
    model.compile(tf_keras.optimizers.Adam(1e-2), "mse")
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(4, *s)).astype("float32") for s in shapes]
    before = values(flow.trainable_variables)
    model.fit(inputs, rng.normal(size=(4, *shapes[0])), epochs=1, verbose=0)
    assert_all_changed(before, values(flow.trainable_variables))


OUTSIDE = []  # FlowLayers alive but held by no model


class Bare(keras.Model):
    """A Keras 3 model holding a flow (or a posterior on it) without a FlowLayer."""

    def __init__(self, hold):
        super().__init__()
        self.encoder = keras.layers.Dense(CONTEXT)
        flow = make_flow()
        self.flow = flow
        if hold == "distribution":
            self.q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(EVENT)), flow)
        elif hold == "outside_layer":
            OUTSIDE.append(FlowLayer(flow))  # a FlowLayer the model does not hold

    def call(self, x):
        return log_q(self.flow, x[..., :EVENT], self.encoder(x))


@pytest.mark.parametrize("hold", ["flow", "distribution", "outside_layer"])
def test_a_flow_a_keras3_model_does_not_track_fails_loudly(hold):
    model = Bare(hold)
    with pytest.raises(ValueError, match=r"flow `iaf_stack` ran inside the Keras 3 layer `bare"):
        model(data()[0])
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"tfp_iaf\.keras3\.FlowLayer\(flow\)"):
        model.fit(data()[0], epochs=1, verbose=0)


def test_flow_layer_arguments_are_checked():
    with pytest.raises(ValueError, match=r"`flow` must be a flow or one of .*; got 'made'"):
        FlowLayer("made", **STACK)
    with pytest.raises(TypeError, match=r"`flow` must be a tfp_iaf flow .*; got MADE"):
        FlowLayer(tfp_iaf.MADE(EVENT, [4]))
    with pytest.raises(TypeError, match=r"`stack_kwargs` \['num_steps'\] are arguments"):
        FlowLayer(make_flow(), num_steps=2)
    with pytest.raises(TypeError, match=r"`return_log_det` must be a bool; got 1"):
        FlowLayer(make_flow(), return_log_det=1)
    with pytest.raises(NotImplementedError, match=r"FlowLayer `iaf_stack` holds a flow object"):
        FlowLayer(make_flow()).get_config()


def test_flow_layer_config_round_trip():
    layer = FlowLayer("conv_iaf_stack", event_shape=(2, 2, 1), num_steps=1, filters=[2])
    clone = FlowLayer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert len(clone.weights) == len(layer.weights) > 0
