"""examples/mnist_vae.py end to end on tfds mock data: smoke runs, flags, resume."""

import dataclasses
import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from absl.testing import flagsaver

from tests.examples_util import (
    check_image_grid,
    check_unit_range,
    loaded_example,
    record_image_grids,
)
from tfp_iaf import tf_keras
from vae_harness import experiment

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_vae.py"
TINY = dict(batch_size=4, num_importance_samples=3, importance_chunk=2, eval_batch_size=5)


@pytest.fixture(scope="module")
def mnist_vae():
    with loaded_example("mnist_vae") as module:
        yield module


def _check_outputs(model_dir: Path, results: dict, steps: int, grids: dict):
    on_disk = json.loads((model_dir / "results.json").read_text())
    assert on_disk["steps"] == results["steps"] == steps
    for key in ("test_elbo", "test_log_px", "test_bits_per_dim"):
        assert math.isfinite(on_disk[key]), key
    assert on_disk["test_elbo"] <= on_disk["test_log_px"] + 1e-3  # IWAE bound >= ELBO
    assert math.isfinite(on_disk["test_elbo_raw_weights"])
    # 100 samples of 28x28 in a 10x10 grid, written as they are: probabilities in [0, 1].
    check_image_grid(model_dir / "samples.png", 100, (28, 28, 1))
    check_unit_range(grids, {"samples.png": (100, 28, 28, 1)})
    if importlib.util.find_spec("tensorboard") is not None:  # scalars need the package
        assert list((model_dir / "tensorboard" / "train").iterdir())


@pytest.mark.slow
def test_static_mnist_diag_posterior_two_steps(mnist_vae, tmp_path, monkeypatch):
    grids = record_image_grids(monkeypatch)
    config = mnist_vae.Config(
        posterior="diag",
        dataset="binarized_mnist",
        num_steps=2,
        model_dir=str(tmp_path),
        num_eval_examples=5,
        **TINY,
    )
    with tfds.testing.mock_data(num_examples=10):
        results = mnist_vae.train_and_evaluate(config)
    _check_outputs(tmp_path, results, steps=2, grids=grids)
    assert results["num_test_examples"] > 0  # mock data ignore the "test[:5]" slice


@pytest.mark.slow
def test_static_mnist_planar_posterior_two_steps(mnist_vae, tmp_path, monkeypatch):
    grids = record_image_grids(monkeypatch)
    config = mnist_vae.Config(
        posterior="planar",
        planar_depth=3,
        dataset="binarized_mnist",
        num_steps=2,
        model_dir=str(tmp_path),
        num_eval_examples=5,
        **TINY,
    )
    with tfds.testing.mock_data(num_examples=10):
        results = mnist_vae.train_and_evaluate(config)
    _check_outputs(tmp_path, results, steps=2, grids=grids)
    assert results["test_log_px"] >= results["test_elbo"]  # k > 1 samples tighten the bound


class WeightRecorder(tf_keras.callbacks.Callback):
    """Raw weights when training starts (after the restore) and ends (before the averages)."""

    def on_train_batch_begin(self, batch, logs=None):
        if not hasattr(self, "start"):
            self.start = [v.numpy() for v in self.model.trainable_variables]

    def on_epoch_end(self, epoch, logs=None):
        self.end = [v.numpy() for v in self.model.trainable_variables]
        self.steps = int(self.model.optimizer.iterations)


@pytest.mark.slow
def test_dynamic_mnist_gated_iaf_from_flags_resumes(mnist_vae, tmp_path, monkeypatch, caplog):
    """Runs main() with flags, then again with a larger budget: it continues where it stopped."""
    grids = record_image_grids(monkeypatch)
    recorders = []
    train = experiment.train

    def recording_train(*args, callbacks=(), **kwargs):
        recorders.append(WeightRecorder())
        return train(*args, callbacks=[*callbacks, recorders[-1]], **kwargs)

    monkeypatch.setattr(experiment, "train", recording_train)
    argv = [
        "mnist_vae.py",
        "--posterior=iaf",
        "--dataset=mnist",
        "--gated",
        "--free_bits=0.1",
        "--iaf_depth=2",
        "--iaf_width=40",
        "--context_size=8",
        "--save_every=1",
        f"--model_dir={tmp_path}",
        "--num_eval_examples=5",
        "--data_dir=/nonexistent",
        *(f"--{k}={v}" for k, v in TINY.items()),
    ]

    def run(num_steps):
        with flagsaver.flagsaver(), tfds.testing.mock_data(num_examples=10):
            flags.FLAGS(argv + [f"--num_steps={num_steps}"])
            mnist_vae.main(["mnist_vae.py"])
        return json.loads((tmp_path / "results.json").read_text())

    first = run(2)
    _check_outputs(tmp_path, first, steps=2, grids=grids)
    # The script's own flags, not absl's (`--logtostderr`, ...) beside them.
    assert set(first["config"]) == {f.name for f in dataclasses.fields(mnist_vae.Config)}
    assert "logtostderr" not in first["config"] and "posterior" in first["config"]
    assert first["config"]["gated"] and first["config"]["free_bits"] == 0.1
    with caplog.at_level(logging.INFO, logger="absl"):
        second = run(4)
    assert "Resumed from step 2 of 4" in caplog.text
    _check_outputs(tmp_path, second, steps=4, grids=grids)  # the step counter continued from 2 ...
    assert second["resumed_from_step"] == 2 and recorders[1].steps == 4
    assert second["train_seconds"] > second["train_seconds_this_run"] > 0  # cumulative
    # ... and the weights from where the first run left them, not from a new initialization.
    for before, after in zip(recorders[0].end, recorders[1].start, strict=True):
        np.testing.assert_array_equal(before, after)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(recorders[0].start, recorders[1].start, strict=True)
    )


def test_unknown_posterior(mnist_vae):
    with pytest.raises(
        ValueError, match=r"`posterior` must be 'diag', 'iaf' or 'planar'; got 'flow'"
    ):
        mnist_vae.make_model(mnist_vae.Config(posterior="flow"))


def test_main_rejects_positional_arguments(mnist_vae):
    from absl import app

    with pytest.raises(app.UsageError, match=r"Unexpected arguments: \['extra'\]"):
        mnist_vae.main(["mnist_vae.py", "extra"])


@pytest.mark.slow
def test_evaluate_and_sample_modes_restore_the_run(mnist_vae, tmp_path, monkeypatch, caplog):
    """--mode=evaluate and --mode=sample on a trained --model_dir: no training, the run's
    averaged weights (T=1 draws training's samples.png), results beside results.json."""
    from tests.examples_util import decode_png
    from vae_harness import trained
    from vae_harness.images import TITLE_HEIGHT

    grids = record_image_grids(monkeypatch)
    config = mnist_vae.Config(
        posterior="diag", num_steps=2, model_dir=str(tmp_path), num_eval_examples=5, **TINY
    )
    titles, save = {}, trained.save_image_grid

    def recording_save(images, path, title=None):
        grids[Path(path).name], titles[Path(path).name] = np.array(images), title
        return save(images, path, title=title)

    argv = ["mnist_vae.py", "--posterior=diag", f"--model_dir={tmp_path}", "--num_eval_examples=5"]
    argv += [f"--{k}={v}" for k, v in TINY.items()]
    with tfds.testing.mock_data(num_examples=10):
        trained_results = mnist_vae.train_and_evaluate(config)
        monkeypatch.setattr(trained, "save_image_grid", recording_save)
        monkeypatch.setattr(experiment, "train", None)  # a mode that trained would fail
        for mode in ("--mode=evaluate", "--mode=sample", "--temperature=0.5 --mode=sample"):
            with flagsaver.flagsaver(), caplog.at_level(logging.INFO, logger="absl"):
                flags.FLAGS(argv + mode.split())
                mnist_vae.main(["mnist_vae.py"])
    evaluation = json.loads((tmp_path / "evaluation_step2_k3.json").read_text())
    assert evaluation["test_log_px"] == pytest.approx(trained_results["test_log_px"], rel=1e-6)
    assert "Test, Polyak-averaged weights: ELBO" in caplog.text and "(k=3, " in caplog.text
    np.testing.assert_array_equal(grids["samples_step2_t1.png"], grids["samples.png"])
    assert not np.array_equal(grids["samples_step2_t0.5.png"], grids["samples.png"])
    assert titles["samples_step2_t0.5.png"] == (
        "100 samples at temperature 0.5 (the prior's scale x0.5): means of p(x | z) (step 2, "
        "Polyak-averaged weights)"
    )
    for name in ("samples_step2_t1.png", "samples_step2_t0.5.png"):
        check_image_grid(tmp_path / name, 100, (28, 28, 1))
    pngs = [decode_png(tmp_path / n) for n in ("samples.png", "samples_step2_t1.png")]
    np.testing.assert_array_equal(pngs[0][TITLE_HEIGHT:], pngs[1][TITLE_HEIGHT:])


def test_temperature_must_be_positive(mnist_vae):
    with flagsaver.flagsaver():
        for value in ("0", "-0.5", "inf"):
            with pytest.raises(
                flags.IllegalFlagValueError, match="--temperature must be a positive number"
            ):
                flags.FLAGS(["mnist_vae.py", f"--temperature={value}"])
