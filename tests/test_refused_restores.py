"""A refused restore loads nothing, now or later, and leaves the flow buildable.

TensorFlow restores a value into an object that does not exist yet (a network's variables before
its first call) when the object is created. A refused restore must leave none of those queued:
each test here refuses a checkpoint, then builds the flow and compares every variable with a
fresh flow of the same seed. Also: a checkpoint of another dtype is refused naming both dtypes,
and tf_keras's HDF5 weights files (`save_weights("w.h5")`) carry the flows' fingerprints.
"""

import json

import h5py
import numpy as np
import pytest
import tensorflow as tf

import tfp_iaf
from tests import flow_checks as fc
from tests.test_weights_fingerprint import (
    CONTEXT,
    EVENT,
    GATED,
    KERAS3_SKIPS,
    Keras3Model,
    TfKerasModel,
    assert_unchanged,
    built,
    stack,
    values,
)
from tfp_iaf import _fingerprint, _hdf5, tf_keras
from tfp_iaf._fingerprint import FingerprintMismatch

X = tf.constant(np.random.default_rng(2).standard_normal((4, EVENT)), tf.float32)


def run(flow):
    """`flow` called once (its networks build now if they have not)."""
    x = tf.cast(X, flow.dtype)
    return flow.forward(x, context=tf.ones([4, flow.context_shape[0]], flow.dtype))


def assert_as_fresh(flow, fresh):
    """`flow` holds exactly the weights of `fresh` (a flow of the same seed never restored)."""
    for a, b in zip(values(flow.variables), values(fresh.variables), strict=True):
        np.testing.assert_array_equal(a, b)


def dense(seed=2, hidden=8, steps=2, context=CONTEXT, **kwargs):
    return tfp_iaf.dense_iaf_stack(
        EVENT, steps, [hidden], context_size=context, seed=seed, **kwargs
    )


# (this flow, what the refusal names): each differs from the checkpoint's `stack()`.
UNBUILT = {
    "gated": (lambda: dense(gated=True), GATED),
    "activation": (
        lambda: dense(activation="tanh"),
        r'steps\[0,1\]\.network\.activation: checkpoint "elu", this flow "tanh"',
    ),
    "residual": (lambda: dense(residual=True), r"network\.residual: checkpoint false"),
    "context": (lambda: dense(context=3), r"context_shape: checkpoint \[2\], this flow \[3\]"),
    "hidden-units": (
        lambda: dense(hidden=16),
        r"hidden_units: checkpoint \[8\], this flow \[16\]",
    ),
    "num-steps": (lambda: dense(steps=1), r"num_steps: checkpoint 2, this flow 1"),
    "dtype": (
        lambda: dense(dtype="float64"),
        r"^the weights being loaded into flow `iaf_stack` \(IAFStack\) are float32 and its "
        r"variables float64: .* dtype='float32'",
    ),
    "dtype-and-gated": (
        lambda: dense(dtype="float64", gated=True),
        rf"{GATED}; .*; dtype: checkpoint float32, this flow float64\. Build",
    ),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tf.train.Checkpoint(flow=built(stack(), seed=1)).write(
        str(tmp_path_factory.mktemp("ckpt") / "ckpt")
    )


@pytest.mark.parametrize("method", ["read", "restore"])
@pytest.mark.parametrize("case", list(UNBUILT))
def test_a_refused_restore_into_an_unbuilt_flow_queues_nothing(checkpoint, case, method):
    make, match = UNBUILT[case]
    flow = make()
    with pytest.raises(FingerprintMismatch, match=match):
        getattr(tf.train.Checkpoint(flow=flow), method)(checkpoint)
    fresh = make()
    np.testing.assert_array_equal(run(flow), run(fresh))
    assert_as_fresh(flow, fresh)


def test_a_refused_restore_keeps_an_earlier_accepted_one_queued(checkpoint, tmp_path):
    """Only the refused restore's values are dropped: the accepted one still loads."""
    saved = built(stack(seed=3), seed=4)
    accepted = tf.train.Checkpoint(flow=saved).write(str(tmp_path / "accepted"))
    other = tf.train.Checkpoint(flow=built(dense(gated=True))).write(str(tmp_path / "other"))
    flow = stack(seed=5)
    status = tf.train.Checkpoint(flow=flow).read(accepted)
    with pytest.raises(FingerprintMismatch, match=r"checkpoint true, this flow false"):
        tf.train.Checkpoint(flow=flow).read(other)
    np.testing.assert_array_equal(run(flow), run(saved))
    status.assert_consumed()
    del checkpoint


def test_an_accepted_restore_into_an_unbuilt_flow_loads_at_its_first_call(checkpoint):
    flow = stack(seed=7)
    status = tf.train.Checkpoint(flow=flow).read(checkpoint)
    run(flow)
    status.assert_consumed()
    reader = tf.train.load_checkpoint(checkpoint)
    kernel = "flow/_steps/0/_network/masked_layers/0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    np.testing.assert_array_equal(flow.networks[0].variables[0], reader.get_tensor(kernel))


def test_a_built_flow_of_another_dtype_is_refused_by_tensorflows_read(checkpoint):
    """Built, the variables are read in one op, which fails before any value is restored."""
    flow = dense(dtype="float64")
    run(flow)
    before = values(flow.variables)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected dtype double"):
        tf.train.Checkpoint(flow=flow).read(checkpoint)
    assert_unchanged(before, flow.variables)


@pytest.mark.parametrize("built_first", [True, False], ids=["built", "unbuilt"])
def test_tf_keras_load_weights_refused_queues_nothing(tmp_path, built_first):
    model = TfKerasModel()
    model(X)
    fc.perturb(model.variables)
    model.save_weights(str(tmp_path / "w"))
    other = TfKerasModel(gated=True, seed=2)
    if built_first:
        other(X)
    with pytest.raises(FingerprintMismatch, match=GATED):
        other.load_weights(str(tmp_path / "w"))
    other(X)
    fresh = TfKerasModel(gated=True, seed=2)
    fresh(X)
    assert_as_fresh(other.flow, fresh.flow)


# ---- Keras 3: a FlowLayer builds its flow at construction, so nothing can be queued ----


def _keras3_files(tmp_path):
    model = Keras3Model()
    model(X)
    fc.perturb(model.weights)
    model.save_weights(str(tmp_path / "m.weights.h5"))
    model.save(str(tmp_path / "m.keras"))
    return {
        "checkpoint": tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt")),
        "weights.h5": str(tmp_path / "m.weights.h5"),
        "keras": str(tmp_path / "m.keras"),
    }


@KERAS3_SKIPS
def test_keras3_refused_loads_leave_the_flow_as_built(tmp_path):
    files = _keras3_files(tmp_path)
    for route, path in files.items():
        other = Keras3Model(gated=True, seed=2)
        if route != "checkpoint":  # Keras 3 loads its own files into built models only
            other(X)
        with pytest.raises(ValueError, match=GATED):  # Keras 3 rewraps a `.keras` refusal
            if route == "checkpoint":
                tf.train.Checkpoint(model=other).read(path)
            else:
                other.load_weights(path)
        other(X)
        assert_as_fresh(other.flow.flow, Keras3Model(gated=True, seed=2).flow.flow)


# ---- the messages ----


@pytest.mark.parametrize("text", ["[" * 200_000 + "]" * 200_000, '{"a":' * 200_000 + "1"])
def test_a_fingerprint_nested_too_deep_is_refused(text):
    with pytest.raises(FingerprintMismatch, match=r"is not a JSON object"):
        _fingerprint.check(stack(), text)


# ---- tf_keras's HDF5 weights files ----


def _h5_saved(tmp_path, gated=False):
    model = TfKerasModel(gated=gated)
    model(X)
    fc.perturb(model.variables)
    model.save_weights(str(tmp_path / "w.h5"))
    return model


@pytest.mark.parametrize("by_name", [False, True], ids=["topological", "by-name"])
def test_tf_keras_h5_weights_refuse_another_configuration(tmp_path, by_name):
    model = _h5_saved(tmp_path)
    same = TfKerasModel(seed=1)
    same(X)
    same.load_weights(str(tmp_path / "w.h5"), by_name=by_name)
    assert_as_fresh(same.flow, model.flow)  # by name, the encoders' names differ
    other = TfKerasModel(gated=True, seed=2)
    other(X)
    before = values(other.variables)
    with pytest.raises(FingerprintMismatch, match=GATED):
        other.load_weights(str(tmp_path / "w.h5"), by_name=by_name)
    assert_unchanged(before, other.variables)


class FlowHolder(tf_keras.layers.Layer):
    def __init__(self, gated):
        super().__init__()
        self.flow = stack(gated=gated)

    def call(self, x, h):
        return self.flow.forward(x, context=h)


class LayerHeld(tf_keras.Model):
    """The flow inside a layer of the model: the file stores it under that layer."""

    def __init__(self, gated=False):
        super().__init__()
        self.encoder = tf_keras.layers.Dense(CONTEXT)
        self.holder = FlowHolder(gated)

    def call(self, x):
        return self.holder(x, self.encoder(x))


def test_tf_keras_h5_weights_refuse_a_flow_held_by_a_layer(tmp_path):
    model = LayerHeld()
    model(X)
    model.save_weights(str(tmp_path / "w.h5"))
    other = LayerHeld(gated=True)
    other(X)
    before = values(other.variables)
    with pytest.raises(FingerprintMismatch, match=GATED):
        other.load_weights(str(tmp_path / "w.h5"))
    assert_unchanged(before, other.variables)


def test_a_tf_keras_h5_file_without_fingerprints_loads_unchecked(tmp_path):
    model = _h5_saved(tmp_path)
    with h5py.File(tmp_path / "w.h5", "r+") as f:
        del f.attrs[_hdf5.ATTRIBUTE]
    other = TfKerasModel(gated=True, seed=2)
    other(X)
    other.load_weights(str(tmp_path / "w.h5"))  # what an earlier release did
    for a, b in zip(values(model.variables), values(other.variables), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_tf_keras_h5_file_with_a_damaged_fingerprint_attribute_is_refused(tmp_path):
    _h5_saved(tmp_path)
    with h5py.File(tmp_path / "w.h5", "r+") as f:
        f.attrs[_hdf5.ATTRIBUTE] = "[1"
    other = TfKerasModel(seed=2)
    other(X)
    with pytest.raises(FingerprintMismatch, match=rf"`{_hdf5.ATTRIBUTE}` .* got '\[1'"):
        other.load_weights(str(tmp_path / "w.h5"))


def test_the_hdf5_wrappers_are_installed():
    """Fails if tf_keras moves the private functions that `tfp_iaf._hdf5` wraps."""
    from tf_keras.src.saving.legacy import hdf5_format

    for name in _hdf5.WRAPPED:
        wrapper = getattr(hdf5_format, name)
        assert wrapper._tfp_iaf and wrapper.__wrapped__.__module__ == hdf5_format.__name__
    assert _hdf5.install() is True  # idempotent


def test_the_h5_attribute_names_each_flow_by_its_layer(tmp_path):
    model = _h5_saved(tmp_path)
    with h5py.File(tmp_path / "w.h5", "r") as f:
        saved = json.loads(f.attrs[_hdf5.ATTRIBUTE])
    names = [layer.name for layer in model.layers if layer.weights]
    assert [(e["index"], e["layer"]) for e in saved] == [(1, names[1])]
    assert saved[0]["fingerprint"] == model.flow._fingerprint()
