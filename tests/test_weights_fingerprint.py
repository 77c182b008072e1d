"""A flow's weights carry its configuration: loaded into a flow of another one, they are refused.

Variables of the same names and shapes parametrise other functions under other settings (an
affine and a gated step, two orders of one MADE). Every route a flow's weights take refuses
them with a `ValueError` naming the fields that differ, and leaves the flow's variables as they
were: `tf.train.Checkpoint`, a tf_keras model's `save_weights` (TF format), a Keras 3 model's TF
checkpoint, `.weights.h5` and `.keras` file (through `tfp_iaf.keras3.FlowLayer`), a revived
SavedModel, and the examples' resume (`vae_harness.checkpoints`). Settings that change no
function (names, seeds, an unused `forget_bias`, the conv inverse's algorithm) do not refuse; a
checkpoint written without a fingerprint (an older release's) still restores, every value
consumed.
"""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
from tests import flow_checks as fc
from tests.examples_util import run_tiny_experiment
from tfp_iaf import _fingerprint, tf_keras
from tfp_iaf.flow import Flow
from tfp_iaf.keras3 import FlowLayer
from vae_harness import checkpoints

tfb = tfp.bijectors
EVENT, CONTEXT = 3, 2
X = tf.constant(np.random.default_rng(0).standard_normal((4, EVENT)), tf.float32)
H = tf.constant(np.random.default_rng(1).standard_normal((4, CONTEXT)), tf.float32)
GATED = r"steps\[0,1\]\.gated: checkpoint false, this flow true"


def stack(seed=0, **kwargs):
    return tfp_iaf.dense_iaf_stack(EVENT, 2, [8], context_size=CONTEXT, seed=seed, **kwargs)


def step(seed=0, order="left-to-right", activation="elu", hidden_degrees="equal", **kwargs):
    net = tfp_iaf.MADE(
        EVENT, [8], context_size=CONTEXT, order=order, activation=activation,
        hidden_degrees=hidden_degrees, seed=seed,
    )  # fmt: skip
    return tfp_iaf.InverseAutoregressiveFlow(net, **kwargs)


def conv_step(order="raster", **kwargs):
    net = tfp_iaf.ConvMADE((2, 2, 2), [4], context_channels=1, order=order, **kwargs)
    return tfp_iaf.InverseAutoregressiveFlow(net)


def linear_step(order):
    return tfp_iaf.InverseAutoregressiveFlow(tfp_iaf.LinearAutoregressive(EVENT, order=order))


def built(flow, seed=0):
    """`flow` run once (so its networks exist) and its weights perturbed away from the init."""
    if flow.context_shape is None:
        flow.forward(tf.zeros([1, *flow.event_shape]))
    else:
        flow.forward(tf.zeros([1, *flow.event_shape]), context=tf.zeros([1, *flow.context_shape]))
    fc.perturb(flow.variables, scale=0.2, seed=seed)
    return flow


def values(variables):
    return [v.numpy() for v in variables]


def assert_unchanged(before, variables):
    for b, v in zip(before, values(variables), strict=True):
        np.testing.assert_array_equal(b, v)


# (checkpoint's flow, this flow, what the refusal names): the same variables, other functions.
REFUSED = {
    "affine-into-gated": (stack, lambda: stack(gated=True), GATED),
    "gated-into-affine": (
        lambda: stack(gated=True),
        stack,
        r"steps\[0,1\]\.gated: checkpoint true, this flow false; "
        r"steps\[0,1\]\.log_scale_bound: checkpoint \(none\), this flow 5\.0",
    ),
    "forget-bias": (
        lambda: step(gated=True),
        lambda: step(gated=True, forget_bias=1.0),
        r"^the weights being loaded into flow `gated_iaf` \(InverseAutoregressiveFlow\) "
        r"are those of a flow of another configuration, .*: "
        r"forget_bias: checkpoint 2\.0, this flow 1\.0\. Build",
    ),
    "log-scale-bound": (
        step,
        lambda: step(log_scale_bound=None),
        r"log_scale_bound: checkpoint 5\.0, this flow null",
    ),
    "scaled-shift": (
        step,
        lambda: step(scaled_shift=True),
        r"scaled_shift: checkpoint false, this flow true",
    ),
    "made-order": (
        step,
        lambda: step(order="right-to-left"),
        r'network\.order: checkpoint "left-to-right", this flow "right-to-left"',
    ),
    "made-permutation": (
        lambda: step(order=(2, 0, 1)),
        lambda: step(order=(1, 0, 2)),
        r"network\.order: checkpoint \[2, 0, 1\], this flow \[1, 0, 2\]",
    ),
    "made-hidden-degrees": (
        lambda: step(hidden_degrees="random", seed=1),
        lambda: step(hidden_degrees="random", seed=2),
        r'network\.masks: checkpoint "[0-9a-f]{16}", this flow "[0-9a-f]{16}"',
    ),
    "made-activation": (
        step,
        lambda: step(activation="tanh"),
        r'network\.activation: checkpoint "elu", this flow "tanh"',
    ),
    "conv-order": (
        conv_step,
        lambda: conv_step("raster_reversed"),
        r'network\.order: checkpoint "raster", this flow "raster_reversed"',
    ),
    "conv-output-scale": (
        conv_step,
        lambda: conv_step(output_scale=0.1),
        r"network\.output_scale: checkpoint 1\.0, this flow 0\.1",
    ),
    "linear-order": (
        lambda: linear_step("left-to-right"),
        lambda: linear_step("right-to-left"),
        r'network\.order: checkpoint "left-to-right", this flow "right-to-left"',
    ),
    "with-context": (
        lambda: stack().with_context(H),
        lambda: stack(gated=True).with_context(H),
        r"flow\.steps\[0,1\]\.gated: checkpoint false, this flow true",
    ),
    "in-a-chain": (
        lambda: tfb.Chain([tfb.Shift(1.0), built(stack(seed=1, name="a"))]),
        lambda: tfb.Chain([tfb.Shift(1.0), built(stack(seed=2, name="b", gated=True))]),
        rf"flow `b` .*{GATED}",
    ),
}


def _built_bijector(make, seed):
    bijector = make()
    if isinstance(bijector, Flow):
        inner = getattr(bijector, "_flow", bijector)  # a flow with its context fixed: its flow
        built(inner, seed)
    return bijector


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_checkpoint_of_another_configuration_is_refused_naming_the_fields(case, tmp_path):
    make_saved, make_this, match = REFUSED[case]
    saved = _built_bijector(make_saved, seed=1)
    this = _built_bijector(make_this, seed=2)
    assert [v.shape for v in saved.variables] == [v.shape for v in this.variables]
    path = tf.train.Checkpoint(flow=saved).write(str(tmp_path / "ckpt"))
    before = values(this.variables)
    with pytest.raises(ValueError, match=match):
        tf.train.Checkpoint(flow=this).read(path)
    assert_unchanged(before, this.variables)


def test_settings_that_change_no_function_load_bit_for_bit(tmp_path):
    """Names, seeds, an affine step's `forget_bias`, the conv inverse's algorithm."""
    pairs = [
        (stack(name="one"), stack(seed=5, name="two", forget_bias=1.0)),
        (conv_step(fast_inverse=True), conv_step(fast_inverse=False)),
    ]
    for i, (saved, this) in enumerate(pairs):
        built(saved, seed=1), built(this, seed=2)
        path = tf.train.Checkpoint(flow=saved).write(str(tmp_path / f"ckpt{i}"))
        tf.train.Checkpoint(flow=this).read(path).assert_consumed()
        for a, b in zip(values(saved.variables), values(this.variables), strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_fingerprint_is_saved_once_per_flow_beside_its_variables(tmp_path):
    path = tf.train.Checkpoint(flow=built(stack())).write(str(tmp_path / "ckpt"))
    keys = {
        name for name, _ in tf.train.list_variables(path) if _fingerprint.CHECKPOINT_NAME in name
    }
    assert keys == {
        f"flow/{p}.ATTRIBUTES/TFP_IAF_FINGERPRINT" for p in ("", "_steps/0/", "_steps/1/")
    }
    saved = json.loads(tf.train.load_checkpoint(path).get_tensor(sorted(keys)[0]))
    assert saved["steps"][0]["gated"] is False and saved["num_steps"] == 2


# ---- the routes a flow's weights take: each refuses, and the same configuration loads ----


class TfKerasModel(tf_keras.Model):
    def __init__(self, gated=False, seed=0):
        super().__init__()
        self.encoder = tf_keras.layers.Dense(CONTEXT)
        self.flow = stack(seed=seed, gated=gated)

    def call(self, x):
        return self.flow.forward(x, context=self.encoder(x))


@pytest.mark.parametrize("built_first", [True, False], ids=["built", "unbuilt"])
def test_tf_keras_load_weights_refuses_another_configuration(tmp_path, built_first):
    model = TfKerasModel()
    model(X)
    fc.perturb(model.variables)
    model.save_weights(str(tmp_path / "w"))  # the TF checkpoint format
    same = TfKerasModel(seed=1)
    same(X)
    same.load_weights(str(tmp_path / "w"))
    np.testing.assert_array_equal(same(fc.fresh(X)), model(fc.fresh(X)))
    other = TfKerasModel(gated=True, seed=2)
    if built_first:
        other(X)
    before = values(other.flow.variables)
    with pytest.raises(ValueError, match=GATED):
        other.load_weights(str(tmp_path / "w"))
    assert_unchanged(before, other.flow.variables)


class Keras3Model(keras.Model):
    def __init__(self, gated=False, seed=0):
        super().__init__()
        self.encoder = keras.layers.Dense(CONTEXT)
        self.flow = FlowLayer(stack(seed=seed, gated=gated))

    def call(self, x):
        return self.flow(x, context=self.encoder(x))


def keras3_functional(gated=False):
    x = keras.Input((EVENT,))
    h = keras.layers.Dense(CONTEXT, name="encoder")(x)
    kwargs = dict(event_size=EVENT, num_steps=2, hidden_units=[8], context_size=CONTEXT)
    flow = FlowLayer("dense_iaf_stack", name="flow", gated=gated, **kwargs)
    return keras.Model(x, flow(x, context=h))


def _keras3_saved(tmp_path, build):
    model = build()
    model(X)
    fc.perturb(model.weights)
    model.save_weights(str(tmp_path / "m.weights.h5"))
    return model


# After the refusal Keras 3 goes on walking the model and warns of a container it skips.
KERAS3_SKIPS = pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")


@KERAS3_SKIPS
@pytest.mark.parametrize(
    "build", [Keras3Model, keras3_functional], ids=["subclassed", "functional"]
)
def test_keras3_weights_files_refuse_another_configuration(tmp_path, build):
    model = _keras3_saved(tmp_path, build)
    same = build()
    same(X)
    same.load_weights(str(tmp_path / "m.weights.h5"))
    np.testing.assert_array_equal(same(X), model(X))
    other = build(gated=True)
    other(X)
    flow = other.flow if build is Keras3Model else other.get_layer("flow")
    before = values(flow.weights)
    with pytest.raises(ValueError, match=GATED):
        other.load_weights(str(tmp_path / "m.weights.h5"))
    assert_unchanged(before, flow.weights)


def test_a_keras3_weights_file_without_a_fingerprint_still_loads(tmp_path):
    import h5py

    model = _keras3_saved(tmp_path, keras3_functional)
    with h5py.File(tmp_path / "m.weights.h5", "r+") as f:
        del f[f"layers/flow_layer/vars/{_fingerprint.CHECKPOINT_NAME}"]
    restored = keras3_functional()
    restored.load_weights(str(tmp_path / "m.weights.h5"))
    np.testing.assert_array_equal(restored(X), model(X))


@KERAS3_SKIPS
def test_a_keras_file_whose_flow_config_was_changed_is_refused(tmp_path):
    model = keras3_functional()
    model(X)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    (flow,) = [layer for layer in config["config"]["layers"] if layer["name"] == "flow"]
    flow["config"]["gated"] = True
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "edited.keras", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(ValueError, match=GATED):
        keras.models.load_model(tmp_path / "edited.keras")


def test_a_keras3_models_tf_checkpoint_refuses_another_configuration(tmp_path):
    model = Keras3Model()
    model(X)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    other = Keras3Model(gated=True, seed=1)
    other(X)
    with pytest.raises(ValueError, match=GATED):
        tf.train.Checkpoint(model=other).read(path)


def test_a_revived_saved_model_refuses_another_configuration(tmp_path):
    """Traced, the check is TensorFlow's assertion (no field is named: no value exists then)."""
    module = tf.Module()
    module.flow = built(stack())
    tf.saved_model.save(module, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    same = tf.train.Checkpoint(flow=built(stack(seed=1))).write(str(tmp_path / "same"))
    tf.train.Checkpoint(flow=loaded.flow).read(same).assert_consumed()
    other = tf.train.Checkpoint(flow=built(stack(gated=True))).write(str(tmp_path / "other"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="of another configuration"):
        tf.train.Checkpoint(flow=loaded.flow).read(other)


# ---- checkpoints without a fingerprint (an older release's) ----


@pytest.fixture
def without_fingerprints(monkeypatch):
    """Writes checkpoints as a release before fingerprints did: a flow saves no value."""

    def undo():
        monkeypatch.undo()

    monkeypatch.delattr(Flow, "_serialize_to_tensors")
    monkeypatch.delattr(Flow, "_restore_from_tensors")
    return undo


def test_a_checkpoint_without_fingerprints_restores_every_value(tmp_path, without_fingerprints):
    saved = built(stack())
    path = tf.train.Checkpoint(flow=saved).write(str(tmp_path / "ckpt"))
    without_fingerprints()
    assert not [n for n, _ in tf.train.list_variables(path) if "FINGERPRINT" in n]
    this = built(stack(seed=1))
    tf.train.Checkpoint(flow=this).read(path).assert_consumed()
    np.testing.assert_array_equal(
        this.forward(X, context=H), saved.forward(fc.fresh(X), context=H)
    )


@pytest.mark.slow
def test_vae_checkpoints_resume_from_one_without_fingerprints(tmp_path, without_fingerprints):
    x = np.tile(np.eye(4, dtype=np.float32), (2, 1))
    assert run_tiny_experiment(tmp_path, x, num_steps=2, batch_size=4)["steps"] == 2
    without_fingerprints()
    resumed = run_tiny_experiment(tmp_path, x, num_steps=4, batch_size=4)
    assert (resumed["resumed_from_step"], resumed["steps"]) == (2, 4)


def test_vae_checkpoints_refuse_a_flow_of_another_configuration(tmp_path):
    """Without the examples' fingerprint file, the flow's own fingerprint still refuses."""
    saved = checkpoints.Checkpoints(tf.train.Checkpoint(flow=built(stack())), str(tmp_path))
    saved.save(1)
    this = built(stack(gated=True, seed=1))
    before = values(this.variables)
    other = checkpoints.Checkpoints(tf.train.Checkpoint(flow=this), str(tmp_path))
    with pytest.raises(checkpoints.CheckpointError, match=rf"holds a flow of .*{GATED}"):
        other.restore_newest()
    assert_unchanged(before, this.variables)
    same = checkpoints.Checkpoints(tf.train.Checkpoint(flow=built(stack(seed=2))), str(tmp_path))
    assert same.restore_newest().endswith("ckpt-1")


# ---- the messages ----


def test_a_fingerprint_that_is_no_json_object_is_refused():
    with pytest.raises(ValueError, match=r"fingerprint of flow `iaf_stack` is not a JSON object"):
        _fingerprint.check(stack(), b"[1]")


def test_a_long_list_of_differences_is_cut_short():
    saved = {**stack()._fingerprint(), **{f"field_{i:02d}": i for i in range(15)}}
    with pytest.raises(
        ValueError, match=r"field_11: checkpoint 11, this flow \(none\); and 3 more\."
    ):
        _fingerprint.check(stack(), _fingerprint.encode(saved))


def test_differences_name_each_field_once_in_this_flows_order():
    saved = {"a": 1, "steps": [{"g": False, "b": 2}, {"g": False, "b": 2}], "z": 0}
    current = {"a": 1, "steps": [{"g": True, "b": 2}, {"g": True, "b": 3}]}
    assert _fingerprint.differences(saved, current) == [
        "steps[0,1].g: checkpoint false, this flow true",
        "steps[1].b: checkpoint 2, this flow 3",
        "z: checkpoint 0, this flow (none)",
    ]
