"""Mixed precision done right: under `mixed_float16` and `mixed_bfloat16` the ResNet VAE's
convolutions compute in 16 bits, while its variables, the IAF networks, their log-scales and
log-dets, the likelihood and the loss are float32; float16 training scales the loss."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfp_iaf import tf_keras
from tfp_iaf.vae import ResNetVAE
from vae_harness import experiment
from vae_harness.optimizers import make_optimizer

POLICIES = ["mixed_float16", "mixed_bfloat16"]
PIXELS = np.random.RandomState(0).randint(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
SEED = tf.constant([0, 1])
# Every layer class of the model and the compute dtype it must have ("policy": the policy's
# 16-bit dtype). A new layer class fails `test_every_layer_dtype` until it is listed here.
EXPECTED_COMPUTE = {
    "ResNetVAE": "policy",
    "ResNetIAFLayer": "policy",
    "WeightNormConv2D": "policy",
    "ConvMADE": "float32",  # the IAF networks: exact log-dets, no casts around the flow
    "MaskedConv2D": "float32",
    "ContextProjection": "float32",
}


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    tf_keras.mixed_precision.set_global_policy("float32")


def _model(policy: str) -> ResNetVAE:
    """A tiny ResNet VAE built, initialised and compiled under `policy`, as `run_experiment`."""
    tf_keras.mixed_precision.set_global_policy(policy)
    tf_keras.utils.set_random_seed(0)
    model = ResNetVAE(hidden_size=4, z_size=2, depth=2, num_blocks=1, iaf_steps=2)
    model.initialize(PIXELS)
    model.compile(optimizer=make_optimizer())
    tf_keras.mixed_precision.set_global_policy("float32")
    return model


def _dtype_table(model) -> list[tuple[str, str, str, str]]:
    """`(name, class, compute dtype, variable dtype)` of every layer, the model first."""
    return [
        (layer.name, type(layer).__name__, layer.compute_dtype, layer.variable_dtype)
        for layer in model._flatten_layers(include_self=True, recursive=True)
    ]


@pytest.mark.parametrize("policy", POLICIES)
def test_every_layer_dtype(policy):
    model = _model(policy)
    half = tf_keras.mixed_precision.Policy(policy).compute_dtype
    table = _dtype_table(model)
    print(f"\n{policy}:\n" + "\n".join(f"  {n:16} {c:18} {cd:9} {vd}" for n, c, cd, vd in table))
    assert {c for _, c, _, _ in table} == set(EXPECTED_COMPUTE)
    for name, cls, compute, variable in table:
        expected = half if EXPECTED_COMPUTE[cls] == "policy" else "float32"
        assert (compute, variable) == (expected, "float32"), (name, cls)
    assert all(v.dtype == tf.float32 for v in model.variables)


@pytest.mark.parametrize("policy", POLICIES)
def test_iaf_log_scales_log_dets_likelihood_and_loss_are_float32(policy):
    model = _model(policy)
    _, _, outputs = model.forward(PIXELS, SEED)
    for block, out in zip(model.blocks, outputs, strict=True):
        for t in (out.posterior_loc, out.posterior_log_scale, out.z, out.kl):
            assert t.dtype == tf.float32
        z0 = out.posterior_loc  # any point of the base's support
        for step in block.flow.steps:
            shift, log_scale = step.shift_and_log_scale(z0, out.posterior_context)
            assert shift.dtype == log_scale.dtype == tf.float32
        fldj = block.flow.forward_log_det_jacobian(
            z0, event_ndims=3, context=out.posterior_context
        )
        units = block.flow.forward_unit_log_det_jacobian(z0, context=out.posterior_context)
        assert fldj.dtype == units.dtype == tf.float32
        assert np.all(np.isfinite(fldj))
    log_px_z, kls = model._terms(PIXELS, SEED)  # the discretized logistic likelihood
    assert log_px_z.dtype == tf.float32 and all(k.dtype == tf.float32 for k in kls)
    with tf.GradientTape() as tape:
        loss, values = model._step(PIXELS, SEED)
    assert loss.dtype == tf.float32 and math.isfinite(float(loss))
    assert {name: v.dtype for name, v in values.items()} == dict.fromkeys(values, tf.float32)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and g.dtype == tf.float32 for g in grads)


def test_float16_scales_the_loss_and_bfloat16_does_not():
    fp16, bf16 = _model("mixed_float16"), _model("mixed_bfloat16")
    assert isinstance(fp16.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    assert fp16.optimizer.dynamic  # the loss scale adapts (halves on overflow, grows after)
    assert not isinstance(bf16.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    # The custom train_step's `minimize(loss, tape=...)` goes through the scaled loss.
    calls = []
    scale = fp16.optimizer.get_scaled_loss

    def counting(loss):
        calls.append(loss.dtype)
        return scale(loss)

    fp16.optimizer.get_scaled_loss = counting
    logs = fp16.train_step(tf.constant(PIXELS))
    assert calls == [tf.float32]
    assert math.isfinite(float(logs["loss"]))
    assert int(fp16.optimizer.iterations) == 1  # the step was applied, not skipped


def test_run_experiment_builds_under_float16_with_loss_scaling(tmp_path, monkeypatch):
    """`run_experiment(mixed_precision=True)` (the examples' --mixed_precision) builds and
    compiles under mixed_float16: loss scaling on, the policy restored afterwards."""
    from tests.examples_util import TailConfig, array_loader

    class Built(Exception):
        pass

    seen = {}

    def fake_train(model, *args, **kwargs):
        seen["optimizer"] = model.optimizer
        seen["table"] = _dtype_table(model)
        raise Built()

    monkeypatch.setattr(experiment, "train", fake_train)

    def make(train_batches):
        model = ResNetVAE(hidden_size=4, z_size=2, depth=1, num_blocks=1, iaf_steps=1)
        model.initialize(next(iter(train_batches)))
        return model

    with pytest.raises(Built):
        experiment.run_experiment(
            TailConfig(model_dir=str(tmp_path), num_steps=1),
            load_split=array_loader(PIXELS),
            make_model=make,
            make_images=lambda model, test_batches: {},
            default_epochs=1,
            mixed_precision=True,
        )
    assert isinstance(seen["optimizer"], tf_keras.mixed_precision.LossScaleOptimizer)
    assert ("x_enc", "WeightNormConv2D", "float16", "float32") in seen["table"]
    assert tf_keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("policy", POLICIES)
def test_mnist_vae_under_mixed_precision(policy):
    from tfp_iaf import dense_iaf_stack, vae

    tf_keras.mixed_precision.set_global_policy(policy)
    encoder = tf_keras.Sequential([tf_keras.layers.Dense(8, activation="elu")])
    decoder = tf_keras.Sequential([tf_keras.layers.Dense(6)])
    flow = dense_iaf_stack(3, 1, [4, 4], context_size=2)
    model = vae.VAE(encoder, decoder, 3, flow=flow)
    loss, _ = model._step(tf.ones([2, 6]), SEED)
    assert loss.dtype == tf.float32
