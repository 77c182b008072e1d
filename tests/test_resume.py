"""Resume counted in steps: a rerun with a larger `num_steps` continues to exactly that total,
says so, and keeps the cumulative training time."""

import json
import logging

import numpy as np
import pytest

import vae_harness as harness
from tests.examples_util import TailConfig, array_loader, run_tiny_experiment
from tfp_iaf import vae

X = np.tile(np.eye(4, dtype=np.float32), (3, 1))  # 12 rows


def run(tmp_path, x, **config):
    return run_tiny_experiment(tmp_path, x, **config)


@pytest.mark.slow
@pytest.mark.parametrize(
    "x, batch_size, first, second, save_every",
    [
        (X, 4, 60, 90, 25),  # 60 -> 90 (3-step epochs; the last save at step 50)
        (X, 4, 5, 7, 2),  # 500 -> 510 scaled down: resumed mid-epoch
        (X[:3], 4, 2, 3, 1),  # a batch larger than the data: 20 -> 21 scaled down
    ],
    ids=["60-to-90", "mid-epoch", "batch-larger-than-data"],
)
def test_a_larger_num_steps_continues_to_exactly_that_total(
    tmp_path, caplog, x, batch_size, first, second, save_every
):
    runs = dict(batch_size=batch_size, save_every=save_every)
    one = run(tmp_path, x, num_steps=first, **runs)
    assert (one["steps"], one["resumed_from_step"]) == (first, 0)
    with caplog.at_level(logging.INFO, logger="absl"):
        two = run(tmp_path, x, num_steps=second, **runs)
    assert f"Resumed from step {first} of {second}" in caplog.text
    assert (two["steps"], two["resumed_from_step"]) == (second, first)
    assert two["steps_per_epoch"] == one["steps_per_epoch"] == max(1, len(x) // batch_size)
    # results.json keeps the training time of both runs, not only the last one's.
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["train_seconds"] == pytest.approx(
        one["train_seconds"] + two["train_seconds_this_run"], rel=0.2, abs=0.5
    )
    assert on_disk["train_seconds"] > two["train_seconds_this_run"] > 0
    # The same budget again trains nothing and keeps the time.
    three = run(tmp_path, x, num_steps=second, **runs)
    assert (three["steps"], three["train_seconds_this_run"]) == (second, 0.0)
    assert three["train_seconds"] == pytest.approx(two["train_seconds"])


def test_odd_step_budgets_keep_one_pass_epochs():
    assert harness.fit_schedule(60_000, 100, num_steps=997) == (997, 600)  # not 997 epochs of 1
    assert harness.fit_schedule(10_000, 2500, num_steps=21) == (21, 4)


def _dense_vae(encoder_widths):
    from tfp_iaf import tf_keras

    tf_keras.utils.set_random_seed(0)
    encoder = tf_keras.Sequential(
        [tf_keras.layers.Dense(w, activation="elu") for w in encoder_widths]
    )
    return vae.VAE(encoder, tf_keras.Sequential([tf_keras.layers.Dense(4)]), 2, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "first, second",
    [([6], [6, 6]), ([6, 6], [6])],
    ids=["model-has-more-variables", "checkpoint-has-more-values"],
)
@pytest.mark.parametrize("fingerprinted", [True, False], ids=["fingerprint", "no-fingerprint"])
def test_a_checkpoint_of_another_model_is_refused_not_half_restored(
    tmp_path, first, second, fingerprinted
):
    def run_with(widths, num_steps):
        return harness.run_experiment(
            TailConfig(model_dir=str(tmp_path), num_steps=num_steps, batch_size=4),
            load_split=array_loader(X),
            make_model=lambda train_batches: _dense_vae(widths),
            make_images=lambda model, test_batches: {},
            default_epochs=1,
        )

    assert run_with(first, 2)["steps"] == 2
    if fingerprinted:  # the fingerprint names the difference before anything is restored
        match = r"ckpt-2 is of another model .*: module Dense: checkpoint \d, now \d\."
    else:  # a checkpoint written without a fingerprint: its variables are compared
        for path in (tmp_path / "checkpoints").glob("*.json"):
            path.unlink()
        match = r"written by a model with other variables .* results\.json"
    with pytest.raises(ValueError, match=match):
        run_with(second, 4)
    assert run_with(first, 4)["resumed_from_step"] == 2  # its own model still resumes
