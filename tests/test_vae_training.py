"""Training plumbing: Adamax + EMA, the fit schedule, exact resume after a kill, and the
examples' shared tail (`vae_harness.experiment`)."""

import dataclasses
import json
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import vae_harness as harness
from tests.examples_util import TailConfig
from tfp_iaf import tf_keras, vae

X = np.tile(np.eye(4, dtype=np.float32), (2, 1))  # one fixed batch: deterministic training


def tiny_vae():
    tf_keras.utils.set_random_seed(0)
    encoder = tf_keras.Sequential([tf_keras.layers.Dense(6, activation="elu")])
    decoder = tf_keras.Sequential([tf_keras.layers.Dense(4)])
    model = vae.VAE(encoder, decoder, 2, seed=3)
    model.compile(optimizer=harness.make_optimizer(0.05, ema_momentum=0.5))
    return model


class Killed(Exception):
    pass


class KillAfter(tf_keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            raise Killed()


def test_resume_after_kill_continues_exactly(tmp_path):
    data = tf.data.Dataset.from_tensors(X).repeat()
    reference = tiny_vae()
    harness.train(
        reference,
        data,
        model_dir=str(tmp_path / "ref"),
        num_steps=6,
        steps_per_epoch=3,
        save_every=1,
        verbose=0,
    )

    killed = tiny_vae()
    with pytest.raises(Killed):
        harness.train(
            killed,
            data,
            model_dir=str(tmp_path / "run"),
            num_steps=6,
            steps_per_epoch=3,
            save_every=1,
            verbose=0,
            callbacks=[KillAfter(4)],
        )
    resumed = tiny_vae()
    run = harness.train(
        resumed,
        data,
        model_dir=str(tmp_path / "run"),
        num_steps=6,
        steps_per_epoch=3,
        save_every=1,
        verbose=0,
    )
    assert int(resumed.optimizer.iterations) == 6
    assert (run.initial_step, run.step) == (4, 6)  # killed after step 4's checkpoint
    assert run.history.epoch == [1]  # only the unfinished epoch ran again, from its 5th step
    # Same weights (Polyak averages, which `fit` swaps in at the end) as the uninterrupted run.
    pairs = zip(reference.trainable_variables, resumed.trainable_variables, strict=True)
    assert len(reference.trainable_variables) == 6
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_larger_budget_continues_and_the_same_budget_trains_no_more(tmp_path):
    data = tf.data.Dataset.from_tensors(X).repeat()
    kwargs = dict(model_dir=str(tmp_path), steps_per_epoch=2, save_every=5, verbose=0)
    model = tiny_vae()
    harness.train(model, data, num_steps=2, **kwargs)
    model = tiny_vae()
    run = harness.train(model, data, num_steps=2, **kwargs)
    assert run.history.epoch == [] and int(model.optimizer.iterations) == 2
    model = tiny_vae()
    run = harness.train(model, data, num_steps=6, **kwargs)
    assert run.history.epoch == [1, 2] and int(model.optimizer.iterations) == 6


@pytest.mark.parametrize("initial, num_steps", [(0, 3), (2, 7)])
def test_progress_bar_counts_to_the_steps_the_budget_leaves_in_each_epoch(
    tmp_path, capsys, initial, num_steps
):
    data = tf.data.Dataset.from_tensors(X).repeat()
    kwargs = dict(model_dir=str(tmp_path), steps_per_epoch=5, save_every=1)
    if initial:
        harness.train(tiny_vae(), data, num_steps=initial, verbose=0, **kwargs)
        capsys.readouterr()
    harness.train(tiny_vae(), data, num_steps=num_steps, verbose=1, **kwargs)
    printed = capsys.readouterr().out
    # Each epoch's bar targets, and reaches, its last step: 3 of 5 steps; 5, then 2 of 5.
    counts = [(int(n), int(m)) for n, m in re.findall(r"(\d+)/(\d+) \[", printed)]
    targets = list(dict.fromkeys(m for _, m in counts))
    assert targets == ([3] if num_steps == 3 else [5, 2]), printed
    assert all((m, m) in counts for m in targets) and all(n <= m for n, m in counts), printed


def test_tensorboard_scalars_written(tmp_path):
    pytest.importorskip("tensorboard")
    model = tiny_vae()
    harness.train(
        model,
        tf.data.Dataset.from_tensors(X).repeat(),
        model_dir=str(tmp_path),
        num_steps=2,
        steps_per_epoch=2,
        verbose=0,
        tensorboard_every=1,
    )
    assert os.listdir(tmp_path / "tensorboard" / "train")
    assert harness.write_scalars(str(tmp_path / "tb_test"), 3, {"elbo": -1.0})
    assert os.listdir(tmp_path / "tb_test")


def test_optimizer_is_adamax_with_weight_averaging():
    opt = harness.make_optimizer(2e-3, ema_momentum=0.99)
    assert isinstance(opt, tf_keras.optimizers.Adamax)
    assert opt.use_ema and opt.ema_momentum == pytest.approx(0.99)
    assert not harness.make_optimizer(ema_momentum=None).use_ema


@pytest.mark.parametrize(
    "args, expected",
    [
        ((50_000, 100, 3, None), (1500, 500)),
        ((50_000, 100, None, 2), (2, 500)),
        ((50_000, 100, None, 997), (997, 500)),  # a prime budget: still epochs of one pass
        ((1_000, 100, None, 25), (25, 10)),
        ((10, 100, 2, None), (2, 1)),  # a batch larger than the data: one step per epoch
    ],
)
def test_fit_schedule(args, expected):
    assert harness.fit_schedule(*args) == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": None, "num_steps": None}, r"exactly one of `epochs` and `num_steps`"),
        ({"epochs": 1, "num_steps": 2}, r"exactly one of .*got epochs=1, num_steps=2"),
        ({"epochs": 0}, r"`epochs` must be a positive integer; got 0"),
        ({"num_steps": -1}, r"`num_steps` must be a positive integer; got -1"),
        ({"epochs": 1, "batch_size": 0}, r"`batch_size` must be a positive integer; got 0"),
        ({"epochs": 1, "num_examples": 0}, r"`num_examples` must be a positive integer; got 0"),
    ],
)
def test_fit_schedule_errors(kwargs, match):
    args = {"num_examples": 100, "batch_size": 10, "epochs": None, "num_steps": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        harness.fit_schedule(**args)


def test_clip_norm_rescales_a_gradient_above_it_and_leaves_one_below_it():
    rng = np.random.default_rng(0)
    big, small = rng.normal(size=(2, 5)) * [[10.0], [0.1]]  # global norms ~20 and ~0.2

    def weights_after(optimizer, grads):
        w = tf.Variable(tf.zeros(5, tf.float64))
        for g in grads:
            optimizer.apply_gradients([(tf.constant(g), w)])
        return w.numpy()

    clipped = weights_after(harness.make_optimizer(0.1, None, clip_norm=1.0), [big, small])
    by_hand = [big / np.linalg.norm(big), small]
    np.testing.assert_allclose(clipped, weights_after(harness.make_optimizer(0.1, None), by_hand))
    unclipped = weights_after(harness.make_optimizer(0.1, None), [big, small])
    assert np.abs(clipped - unclipped).max() > 1e-3  # Adamax is not blind to the rescaling


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"learning_rate": 0.0}, r"`learning_rate` must be positive; got 0.0"),
        ({"ema_momentum": 1.0}, r"`ema_momentum` must be in \[0, 1\) or None; got 1.0"),
        ({"clip_norm": 0.0}, r"`clip_norm` must be a positive number or None; got 0.0"),
        ({"clip_norm": math.inf}, r"`clip_norm` must be a positive number or None; got inf"),
    ],
)
def test_make_optimizer_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        harness.make_optimizer(**kwargs)


@pytest.mark.parametrize(
    "name", ["num_steps", "steps_per_epoch", "save_every", "tensorboard_every"]
)
def test_train_errors(name, tmp_path):
    with pytest.raises(ValueError, match=rf"`{name}` must be a positive integer; got 0"):
        kwargs = {"num_steps": 1, "steps_per_epoch": 1, name: 0}
        harness.train(tiny_vae(), None, model_dir=str(tmp_path), **kwargs)


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_train_refuses_a_negative_or_non_finite_save_every_seconds(seconds, tmp_path):
    match = rf"`save_every_seconds` must be a finite number >= 0 or None; got {seconds}"
    with pytest.raises(ValueError, match=match):
        harness.train(
            tiny_vae(), None, model_dir=str(tmp_path), num_steps=1, steps_per_epoch=1,
            save_every_seconds=seconds,
        )  # fmt: skip


# The examples' shared tail, vae_harness.experiment.


def test_flags_config_has_one_field_per_flag_of_the_module():
    registry = flags.FlagValues()
    flags.DEFINE_integer("steps", 3, "", flag_values=registry, module_name="example")
    flags.DEFINE_string("model_dir", None, "", flag_values=registry, module_name="example")
    flags.DEFINE_list("sizes", ["1", "2"], "", flag_values=registry, module_name="example")
    flags.DEFINE_bool("other", False, "", flag_values=registry, module_name="other_module")
    config_class = harness.flags_config("example", registry)
    assert [f.name for f in dataclasses.fields(config_class)] == ["steps", "model_dir", "sizes"]
    config = config_class(model_dir="runs")
    assert dataclasses.asdict(config) == {"steps": 3, "model_dir": "runs", "sizes": ["1", "2"]}
    config.sizes.append("3")
    assert config_class().sizes == ["1", "2"]  # every instance its own copy of a list default
    with pytest.raises(TypeError, match="other"):
        config_class(other=True)
    registry(["prog", "--steps=7", "--sizes=4"])
    parsed = config_class.from_flags(registry)
    assert (parsed.steps, parsed.model_dir, parsed.sizes) == (7, None, ["4"])
    with pytest.raises(ValueError, match="`module` must have defined absl flags .*'nothing'"):
        harness.flags_config("nothing", registry)


def test_make_strategy():
    assert harness.make_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="`strategy` must be .*; got 'tpu'"):
        harness.make_strategy("tpu")


def test_evaluate_model_bits_per_dim_count_the_example_dims():
    result = harness.evaluate_model(tiny_vae(), tf.data.Dataset.from_tensors(X), 3, seed=1)
    assert result["num_examples"] == len(X) and result["elbo"] <= result["log_px"] + 1e-4
    for nats, bits in (("log_px", "bits_per_dim"), ("elbo", "elbo_bits_per_dim")):
        np.testing.assert_allclose(result[bits], -result[nats] / (4 * math.log(2)), rtol=1e-9)
    unknown = tf.data.Dataset.from_generator(
        lambda: iter([X]), output_signature=tf.TensorSpec([None, None], tf.float32)
    )
    with pytest.raises(ValueError, match=r"`dataset` must have a static example shape"):
        harness.evaluate_model(tiny_vae(), unknown, 3)


def test_run_experiment_trains_default_epochs_and_writes_results(tmp_path):
    loads = []

    def load_split(split, batch_size, *, shuffle=False, repeat=False, **kwargs):
        loads.append((split, batch_size, shuffle, repeat, kwargs))
        ds = tf.data.Dataset.from_tensor_slices(X)
        return (ds.repeat() if repeat else ds).batch(batch_size), len(X)

    results = harness.run_experiment(
        TailConfig(model_dir=str(tmp_path)),
        load_split=load_split,
        make_model=lambda train_batches: tiny_vae(),
        make_images=lambda model, test_batches: {"grid.png": ("grey", np.full((3, 2, 2, 1), 0.5))},
        default_epochs=2,
        headline="bits_per_dim",
    )
    assert [load[:4] for load in loads] == [
        ("train", 4, True, True),
        ("test[:2]", 3, False, False),
    ]
    assert loads[0][4] == {"drop_remainder": True, "data_dir": None, "download": False, "seed": 0}
    assert loads[1][4] == {"data_dir": None, "download": False, "seed": 0}
    assert (results["steps"], results["steps_per_epoch"]) == (4, 2)  # 2 epochs of 8 // 4 steps
    assert results["resumed_from_step"] == 0
    assert results["train_seconds"] == results["train_seconds_this_run"] > 0
    assert results["num_test_examples"] == len(X) and results["num_replicas"] == 1
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert results["config"]["model_dir"] == str(tmp_path)
    assert (tmp_path / "grid.png").exists()


def test_run_experiment_unknown_headline(tmp_path):
    with pytest.raises(ValueError, match=r"`headline` must be one of .*; got 'bits'"):
        harness.run_experiment(
            TailConfig(model_dir=str(tmp_path)),
            load_split=None,
            make_model=None,
            make_images=None,
            default_epochs=1,
            headline="bits",
        )
