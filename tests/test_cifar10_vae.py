"""examples/cifar10_vae.py and tfp_iaf.vae.resnet_vae on tfds mock data: runs, shapes, resume."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import vae_harness as harness
from tests.examples_util import (
    check_image_grid,
    check_unit_range,
    loaded_example,
    record_image_grids,
)
from tfp_iaf import tf_keras, vae
from tfp_iaf.stacks import conv_iaf_stack
from tfp_iaf.vae.resnet_layer import ResNetIAFLayer
from tfp_iaf.vae.resnet_vae import ResNetVAE
from tfp_iaf.vae.weight_norm_conv import WeightNormConv2D
from tfp_iaf.weight_norm import data_dependent_init
from vae_harness import experiment

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cifar10_vae.py"
TINY = dict(
    depth=1, num_blocks=1, hidden_size=4, z_size=2, batch_size=4, num_importance_samples=3,
    importance_chunk=2, eval_batch_size=4, num_eval_examples=4,
)  # fmt: skip
IMAGE = (32, 32, 3)
PIXELS = np.random.RandomState(0).randint(0, 256, size=(3, 32, 32, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def cifar10_vae():
    with loaded_example("cifar10_vae") as module:
        yield module


def _check_outputs(model_dir: Path, steps: int, grids: dict | None = None):
    results = json.loads((model_dir / "results.json").read_text())
    assert results["steps"] == steps
    for key in ("test_bits_per_dim", "test_elbo_bits_per_dim", "test_log_px", "test_elbo"):
        assert math.isfinite(results[key]), key
    assert results["test_elbo"] <= results["test_log_px"] + 1e-3  # IWAE bound >= ELBO
    np.testing.assert_allclose(
        results["test_bits_per_dim"], -results["test_log_px"] / (3072 * math.log(2)), rtol=1e-9
    )
    assert math.isfinite(results["test_elbo_raw_weights"])
    # 36 samples; the first test batch (4 images: TINY's eval_batch_size), each image followed
    # by its reconstruction. All in [0, 1] as written, not clipped.
    expected = {"samples.png": (36, *IMAGE), "reconstructions.png": (8, *IMAGE)}
    for png, shape in expected.items():
        check_image_grid(model_dir / png, shape[0], IMAGE)
    if grids is not None:
        check_unit_range(grids, expected)
    assert list((model_dir / "tensorboard" / "train").iterdir())
    return results


class Killed(Exception):
    pass


class KillAt(tf_keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step, self.first = step, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.first is None:
            self.first = int(self.model.optimizer.iterations)

    def on_train_batch_end(self, batch, logs=None):
        if self.step is not None and int(self.model.optimizer.iterations) == self.step:
            raise Killed()


@pytest.mark.slow
def test_two_steps_then_killed_run_resumes(cifar10_vae, tmp_path, monkeypatch):
    """Default strategy: killed after step 2 of 3, the same command continues from step 2."""
    grids = record_image_grids(monkeypatch)
    kills = [KillAt(2), KillAt(None)]
    train = experiment.train

    def killing_train(*args, callbacks=(), **kwargs):
        return train(*args, callbacks=[*callbacks, kills.pop(0)], **kwargs)

    monkeypatch.setattr(experiment, "train", killing_train)
    config = cifar10_vae.Config(num_steps=3, save_every=1, model_dir=str(tmp_path), **TINY)
    with tfds.testing.mock_data(num_examples=8):
        with pytest.raises(Killed):
            cifar10_vae.train_and_evaluate(config)
        resumed = KillAt(None)
        kills.append(resumed)
        kills.pop(0)
        cifar10_vae.train_and_evaluate(config)
    assert resumed.first == 2  # restored step counter, not a fresh start
    assert _check_outputs(tmp_path, steps=3, grids=grids)["num_replicas"] == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"mixed_precision": True},
        {"jit_compile": True},
        {"metric": "reference", "decoder_scale_init": "zero"},
    ],
    ids=["mixed-precision", "xla", "reference-metric-zero-scale"],
)
def test_two_steps_with_mixed_precision_xla_or_reference_metric(
    cifar10_vae, tmp_path, options, monkeypatch
):
    grids = record_image_grids(monkeypatch)
    config = cifar10_vae.Config(num_steps=2, model_dir=str(tmp_path), **options, **TINY)
    with tfds.testing.mock_data(num_examples=8):
        cifar10_vae.train_and_evaluate(config)
    results = _check_outputs(tmp_path, steps=2, grids=grids)
    assert results["config"]["metric"] == options.get("metric", "proper")  # results say which
    assert tf_keras.mixed_precision.global_policy().name == "float32"  # restored afterwards


@pytest.mark.slow
def test_evaluate_and_sample_modes_restore_the_run(cifar10_vae, tmp_path, monkeypatch):
    """On a trained --model_dir: the run's evaluation again (the data-dependent init on the test
    batch is overwritten by the checkpoint), and a captioned grid at a temperature."""
    config = cifar10_vae.Config(num_steps=2, model_dir=str(tmp_path), **TINY)
    with tfds.testing.mock_data(num_examples=8):
        trained = cifar10_vae.train_and_evaluate(config)
        monkeypatch.setattr(experiment, "train", None)  # a mode that trained would fail
        evaluated = cifar10_vae.evaluate(config)
        path = cifar10_vae.sample(dataclasses.replace(config, temperature=0.5))
        other_seed = cifar10_vae.sample(dataclasses.replace(config, temperature=0.5, seed=3))
    for key in ("test_bits_per_dim", "test_elbo"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-6), key
    assert json.loads((tmp_path / "evaluation_step2_k3.json").read_text())["steps"] == 2
    assert path == str(tmp_path / "samples_step2_t0.5.png")
    check_image_grid(path, 36, IMAGE)
    # Another seed draws other samples of the same model, into a file of its own.
    assert other_seed == str(tmp_path / "samples_step2_t0.5_seed3.png")
    check_image_grid(other_seed, 36, IMAGE)


MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tensorflow_datasets as tfds
sys.argv = ["cifar10_vae"]
sys.path.insert(0, {examples!r})
import cifar10_vae
config = cifar10_vae.Config(strategy="mirrored", num_steps=2, model_dir={model_dir!r}, **{tiny!r})
with tfds.testing.mock_data(num_examples=8):
    cifar10_vae.train_and_evaluate(config)
"""


@pytest.mark.slow
def test_two_steps_mirrored_on_two_logical_cpus(tmp_path):
    # Logical devices must be set before TensorFlow initialises: a fresh process.
    code = MIRRORED.format(examples=str(EXAMPLE.parent), model_dir=str(tmp_path), tiny=TINY)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _check_outputs(tmp_path, steps=2)["num_replicas"] == 2


@pytest.fixture(scope="module")
def model():
    tf_keras.utils.set_random_seed(1)
    m = ResNetVAE(hidden_size=4, z_size=2, depth=2, num_blocks=1, iaf_steps=2, order="channel")
    m.initialize(PIXELS)
    return m


def test_every_layer_prior_and_posterior_shapes(model):
    _, _, outputs = model.forward(PIXELS, tf.constant([0, 1]))
    assert [b.latent_shape for b in model.blocks] == [(16, 16, 2), (8, 8, 2)]
    for block, out in zip(model.blocks, outputs, strict=True):
        *latents, context = out
        for t in latents:
            assert t.shape == (3, *block.latent_shape) and t.dtype == tf.float32
            assert np.all(np.isfinite(t))
        assert context.shape == (3, *block.latent_shape[:2], block.hidden_size)
    assert [len(b.flow.steps) for b in model.blocks] == [2, 2]


def test_sampling_mode_draws_every_layer_from_its_prior(model):
    seed = tf.constant([4, 5])
    x_mean, _, outputs = model.forward(None, seed, batch_size=6)
    noise = [  # layer i's seed is the forward seed folded with i
        tf.random.stateless_normal(
            [6, *b.latent_shape], tf.random.experimental.stateless_fold_in(seed, i)
        )
        for i, b in enumerate(model.blocks)
    ]
    for out, eps in zip(outputs, noise, strict=True):
        assert out.posterior_loc is None and out.kl is None
        np.testing.assert_allclose(
            (out.z - out.prior_loc) * tf.exp(-out.prior_log_scale), eps, atol=1e-4
        )
    images = model.sample(6, seed=3).numpy()
    assert images.shape == (6, 32, 32, 3)
    assert images.min() >= 0.0 and images.max() <= 1.0
    recon = model.reconstruct(PIXELS).numpy()
    assert recon.min() >= 0.0 and recon.max() <= 1.0


def test_every_variable_gets_a_gradient(model):
    with tf.GradientTape() as tape:
        loss, values = model._step(PIXELS, tf.constant([0, 2]))
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.name for v, g in zip(model.trainable_variables, grads, strict=True) if g is None]
    assert not missing
    assert set(values) >= {"bits_per_dim", "kl_layer_0_0", "kl_layer_1_0"}


def test_free_bits_floor_per_layer_and_channel():
    tf_keras.utils.set_random_seed(2)
    loose = ResNetVAE(hidden_size=4, z_size=2, depth=1, num_blocks=1, free_bits=0.0)
    loose.initialize(PIXELS)
    floored = ResNetVAE(hidden_size=4, z_size=2, depth=1, num_blocks=1, free_bits=1e4)
    floored.initialize(PIXELS)
    floored.set_weights(loose.get_weights())
    seed = tf.constant([0, 3])
    loss0, v0 = loose._step(PIXELS, seed)
    loss1, v1 = floored._step(PIXELS, seed)
    # 1 layer x 2 channels floored at 1e4 nats each; the reported bits/dim are unchanged.
    nats = 2 * 1e4 + v0["nll"]
    np.testing.assert_allclose(loss1, nats / (3072 * math.log(2)), rtol=1e-5)
    np.testing.assert_allclose(v1["bits_per_dim"], v0["bits_per_dim"], rtol=1e-6)


def test_log_weights_shape_and_importance_bound(model):
    log_w = model.log_weights(PIXELS, 4, tf.constant([0, 7]))
    assert log_w.shape == (4, 3)
    est = vae.importance_sampled_log_likelihood(model.log_weights, PIXELS, 4, seed=1)
    assert np.all(est.log_px.numpy() >= est.elbo.numpy() - 1e-3)


def test_evaluation_edge_bins_change_only_saturated_subpixels(model):
    """`eval_edge_bins="reference"` drops the tails' mass in `log_weights` (evaluation) only."""
    seed = tf.constant([0, 9])
    inner = np.clip(PIXELS, 1, 254)
    try:
        proper = [model.log_weights(x, 2, seed) for x in (inner, PIXELS)]
        loss = model._step(PIXELS, seed)[0]
        model.eval_edge_bins = "reference"
        ref = [model.log_weights(x, 2, seed) for x in (inner, PIXELS)]
        np.testing.assert_allclose(model._step(PIXELS, seed)[0], loss, rtol=0)  # training: same
    finally:
        model.eval_edge_bins = "proper"
    np.testing.assert_array_equal(ref[0], proper[0])  # no pixel at 0 or 255: identical
    assert np.all(ref[1].numpy() < proper[1].numpy())  # each image has edge pixels: lower
    model.eval_edge_bins = "tails"
    try:
        with pytest.raises(ValueError, match="`eval_edge_bins` must be one of .*; got 'tails'"):
            model.log_weights(PIXELS, 1, seed)
    finally:
        model.eval_edge_bins = "proper"


def test_data_dependent_decoder_scale_beats_the_zero_start():
    """The same weights and batch of natural-image crops: the log-scale `initialize` sets is
    the moment match of the residuals around the initial mean, and scores better than 0."""
    crops = tf.constant(photo_crops(8, 16, seed=4))
    models = {}
    for init in ("zero", "data"):
        tf_keras.utils.set_random_seed(3)
        models[init] = ResNetVAE(
            (16, 16, 3), hidden_size=4, z_size=2, depth=1, num_blocks=1, decoder_scale_init=init
        )
        models[init].initialize(crops)
    zero, data = models["zero"], models["data"]
    assert float(zero.dec_log_scale) == 0.0  # the authors' start, untouched
    log_scale = float(data.dec_log_scale)
    assert math.isfinite(log_scale)
    x_mean, _, _ = data.forward(crops, tf.constant([data.seed, 0]))
    residual = vae.pixels_to_unit(crops).numpy() - x_mean.numpy()
    np.testing.assert_allclose(log_scale, math.log(residual.std() * math.sqrt(3) / math.pi), 1e-4)
    # Only the decoder scale differs: the data-dependent one gives fewer bits/dim.
    for a, b in zip(zero.weights, data.weights, strict=True):
        if a is not zero.dec_log_scale:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    seed = tf.constant([0, 5])
    bpd = {k: float(m._step(crops, seed)[1]["bits_per_dim"]) for k, m in models.items()}
    assert bpd["data"] < bpd["zero"], bpd


def test_constant_batch_keeps_the_decoder_scale_finite():
    tf_keras.utils.set_random_seed(0)
    model = ResNetVAE((8, 8, 1), hidden_size=2, z_size=1, depth=1, num_blocks=1)
    model.initialize(np.full([2, 8, 8, 1], 128, np.uint8))
    assert math.isfinite(float(model.dec_log_scale))


@pytest.mark.parametrize("transpose", [False, True])
def test_weight_norm_data_dependent_init_normalises_each_channel(transpose):
    layer = WeightNormConv2D(5, 3, strides=2, transpose=transpose, init_scale=0.1)
    x = tf.random.stateless_normal([4, 8, 8, 3], [0, 1]) * 3.0 + 1.0
    wrapper = tf_keras.Sequential([layer])
    data_dependent_init(wrapper, x)
    y = layer(x)
    mean, var = tf.nn.moments(y, axes=[0, 1, 2])
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    np.testing.assert_allclose(tf.sqrt(var), 0.1, rtol=1e-3)
    axes = [0, 1, 3] if transpose else [0, 1, 2]
    kernel = layer._kernel(layer.g)
    norms = tf.sqrt(tf.reduce_sum(tf.square(kernel), axis=axes))
    np.testing.assert_allclose(norms, layer.g, rtol=1e-5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ResNetVAE(hidden_size=0), "`hidden_size` must be a positive integer; got 0"),
        (lambda: ResNetVAE(image_shape=(30, 30, 3), depth=2), r"2\*\*depth=4; got \(30, 30, 3\)"),
        (lambda: ResNetVAE(free_bits=-1.0), "`free_bits` must be a finite number >= 0; got -1.0"),
        (
            lambda: ResNetVAE(iaf_steps=-1),
            "`iaf_steps` must be a non-negative",
        ),
        (
            lambda: ResNetIAFLayer(
                (4, 4, 2), 4, flow=conv_iaf_stack((2, 2, 2), 1, [4], context_channels=4)
            ),
            r"`flow` must have event shape \(4, 4, 2\) and context shape \(4, 4, 4\); "
            r"got \(2, 2, 2\) and \(2, 2, 4\)",
        ),
        (
            lambda: ResNetVAE(decoder_scale_init="ones"),
            r"`decoder_scale_init` must be one of \('data', 'zero'\); got 'ones'",
        ),
        (
            lambda: ResNetVAE(decoder_scale_init=0.0),
            r"`decoder_scale_init` must be one of .*; got 0.0",
        ),
        (
            lambda: ResNetVAE(eval_edge_bins="openai"),
            r"`eval_edge_bins` must be one of \('proper', 'reference'\); got 'openai'",
        ),
        (lambda: WeightNormConv2D(0), "`filters` must be a positive integer; got 0"),
        (
            lambda: WeightNormConv2D(2, init_scale=0.0),
            "`init_scale` must be a finite positive number; got 0.0",
        ),
    ],
)
def test_bad_configuration_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_data_dependent_init_errors():
    with pytest.raises(ValueError, match="has no weight-normalised layer"):
        data_dependent_init(tf_keras.Sequential([tf_keras.layers.Dense(2)]), tf.zeros([1, 2]))
    unused = WeightNormConv2D(2, name="unused")
    used = WeightNormConv2D(2, name="used")

    class Partial(tf_keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.a, self.b = used, unused

        def call(self, x):
            return self.a(x)

    with pytest.raises(ValueError, match=r"did not reach the layers \['unused'\]"):
        data_dependent_init(Partial(), tf.ones([2, 4, 4, 1]))
    layer = WeightNormConv2D(2, name="graph")
    layer.build((None, 4, 4, 1))
    layer.initializing = True
    with pytest.raises(
        ValueError, match="`graph`: data-dependent initialisation must run eagerly"
    ):
        tf.function(layer.call)(tf.ones([2, 4, 4, 1]))


def test_example_errors(cifar10_vae, tmp_path):
    with pytest.raises(ValueError, match="`strategy` must be .*; got 'tpu'"):
        cifar10_vae.train_and_evaluate(
            cifar10_vae.Config(strategy="tpu", model_dir=str(tmp_path), **TINY)
        )
    config = cifar10_vae.Config(data_dir=str(tmp_path), model_dir=str(tmp_path), **TINY)
    with pytest.raises(harness.DatasetUnavailableError, match="`cifar10` is not available under"):
        cifar10_vae.train_and_evaluate(config)


def photo_crops(num: int, size: int, seed: int = 0) -> np.ndarray:
    """`num` random `size x size` crops (uint8) of the photograph that ships with matplotlib."""
    import matplotlib.cbook
    import matplotlib.image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = np.asarray(matplotlib.image.imread(f, format="jpg"), np.uint8)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, photo.shape[0] - size, num)
    cols = rng.integers(0, photo.shape[1] - size, num)
    return np.stack([photo[r : r + size, c : c + size] for r, c in zip(rows, cols, strict=True)])


@pytest.mark.slow
def test_small_resnet_vae_trains_100_steps_at_learning_rate_0_01(tmp_path):
    """Real image statistics, the default (gated) IAF: no overflow at a 5x learning rate."""
    crops = photo_crops(100 * 8, 16)
    model = ResNetVAE((16, 16, 3), hidden_size=32, z_size=16, depth=2, num_blocks=2, seed=1)
    model.initialize(crops[:8])
    model.compile(optimizer=harness.make_optimizer(0.01, ema_momentum=None))
    data = tf.data.Dataset.from_tensor_slices(crops).batch(8)
    run = harness.train(  # raises TrainingDiverged at the first non-finite logged value
        model, data, model_dir=str(tmp_path), num_steps=100, steps_per_epoch=50, verbose=0
    )
    assert run.step == 100
    first, last = (run.history.history["loss"][i] for i in (0, -1))
    assert math.isfinite(last) and last < first, (first, last)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
