"""Evaluating and sampling a trained `model_dir` (`vae_harness.trained`), and sampling
temperature: the prior's scale times T in both models."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import vae_harness as harness
from tests.examples_util import TailConfig, array_loader, run_tiny_experiment, tiny_vae
from tfp_iaf import tf_keras, vae
from tfp_iaf.vae.resnet_vae import ResNetVAE

X = np.tile(np.eye(4, dtype=np.float32), (2, 1))
PIXELS = np.random.RandomState(0).randint(0, 256, size=(3, 32, 32, 3)).astype(np.uint8)


@dataclasses.dataclass
class ModesConfig(TailConfig):
    temperature: float = 1.0


def evaluate(model_dir, x=X, loads=None, **config):
    return harness.evaluate_trained(
        ModesConfig(model_dir=str(model_dir), **config),
        load_split=array_loader(x, loads),
        make_model=lambda batches: tiny_vae(x.shape[1]),
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*.*")}


def test_evaluate_reproduces_the_runs_final_evaluation_and_changes_nothing(tmp_path):
    trained = run_tiny_experiment(tmp_path, X, num_steps=3)
    checkpoints, results = snapshot(tmp_path / "checkpoints"), snapshot(tmp_path)["results.json"]
    evaluated = evaluate(tmp_path)
    # The restored Polyak-averaged weights, scored with the run's seed and k: its numbers.
    for key in ("test_elbo", "test_log_px", "test_bits_per_dim", "num_test_examples"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-6), key
    assert evaluated["steps"] == 3 and evaluated["weights"] == "Polyak-averaged weights"
    assert evaluated["checkpoint"] == str(tmp_path / "checkpoints" / "ckpt-3")
    on_disk = json.loads((tmp_path / "evaluation_step3_k3.json").read_text())
    assert on_disk["test_log_px"] == evaluated["test_log_px"]
    assert on_disk["evaluation"] == {
        "steps": 3, "num_importance_samples": 3, "importance_chunk": 2, "eval_batch_size": 3,
        "num_eval_examples": 2, "seed": 0,
    }  # fmt: skip
    assert snapshot(tmp_path / "checkpoints") == checkpoints  # no checkpoint, no state file
    assert snapshot(tmp_path)["results.json"] == results


@pytest.mark.slow
def test_evaluations_of_other_settings_never_overwrite_each_other(tmp_path):
    run_tiny_experiment(tmp_path, X, num_steps=2)
    first = evaluate(tmp_path)
    first_file = (tmp_path / "evaluation_step2_k3.json").read_bytes()
    other_batch = evaluate(tmp_path, eval_batch_size=1)  # the same step and k
    assert json.loads((tmp_path / "evaluation_step2_k3_2.json").read_text()) == other_batch
    assert (tmp_path / "evaluation_step2_k3.json").read_bytes() == first_file
    evaluate(tmp_path, num_importance_samples=5)
    assert (
        json.loads((tmp_path / "evaluation_step2_k5.json").read_text())["evaluation"][
            "num_importance_samples"
        ]
        == 5
    )
    again = evaluate(tmp_path)  # the first settings again: the same numbers, the same file
    assert again["test_log_px"] == first["test_log_px"]
    names = sorted(p.name for p in tmp_path.glob("evaluation_*.json"))
    assert names == [
        "evaluation_step2_k3.json",
        "evaluation_step2_k3_2.json",
        "evaluation_step2_k5.json",
    ]


def test_a_missing_model_dir_is_refused_naming_it_and_not_created(tmp_path):
    loads = []
    missing = tmp_path / "never_trained"
    with pytest.raises(
        harness.ModelDirError,
        match=rf"must be the directory of a trained run to evaluate; got '{missing}' \(no such "
        r"directory\)\. Pass the --model_dir that training wrote",
    ):
        evaluate(missing, loads=loads)
    assert not missing.exists() and loads == []  # refused before any data was loaded
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(harness.ModelDirError, match=r"got '.*notes\.txt' \(a file\)"):
        evaluate(notes)


@pytest.mark.parametrize("mode", ["evaluate", "sample"])
def test_a_model_dir_without_checkpoints_is_refused(tmp_path, mode):
    loads = []
    config = ModesConfig(model_dir=str(tmp_path))
    run = harness.evaluate_trained if mode == "evaluate" else harness.sample_trained
    kwargs = {} if mode == "evaluate" else {"num_samples": 4}
    with pytest.raises(
        harness.CheckpointError,
        match=rf"no checkpoint in {tmp_path / 'checkpoints'}, so there is no model to {mode}: "
        r"train first \(--mode=train",
    ):
        run(config, load_split=array_loader(X, loads), make_model=lambda b: tiny_vae(), **kwargs)
    assert list(tmp_path.iterdir()) == [] and loads == []


@pytest.mark.slow
def test_another_seed_evaluates_the_same_model_into_its_own_file(tmp_path):
    # The restored model does not depend on the seed; only the importance samples do.
    run_tiny_experiment(tmp_path, X, num_steps=2)
    first, other = evaluate(tmp_path), evaluate(tmp_path, seed=1)
    assert other["evaluation"]["seed"] == 1 and other["steps"] == first["steps"] == 2
    assert other["test_log_px"] != first["test_log_px"]
    assert np.isclose(other["test_log_px"], first["test_log_px"], rtol=0.05)
    saved = json.loads((tmp_path / "evaluation_step2_k3_2.json").read_text())
    assert saved["evaluation"]["seed"] == 1
    assert json.loads((tmp_path / "evaluation_step2_k3.json").read_text()) == first


def test_a_checkpoint_of_other_flags_is_refused(tmp_path):
    run_tiny_experiment(tmp_path, X, num_steps=2)
    with pytest.raises(
        harness.CheckpointError,
        match=r"the checkpoint .*ckpt-2 is of another model or run than this one, so it cannot "
        r"be used to evaluate: .*batch_size: checkpoint 4, now 8",
    ):
        evaluate(tmp_path, batch_size=8)
    assert not list(tmp_path.glob("evaluation_*"))


# Temperature: the prior's scale times T.


def identity_decoder_vae(latent_size: int = 3) -> vae.VAE:
    """A VAE whose decoder is the identity: its samples are `sigmoid(z)`, `z ~ p(z)`."""
    tf_keras.utils.set_random_seed(0)
    encoder = tf_keras.Sequential([tf_keras.layers.Dense(4)])
    return vae.VAE(encoder, tf_keras.layers.Lambda(lambda z: z), latent_size)


def test_vae_temperature_scales_the_priors_samples():
    model = identity_decoder_vae()
    model(tf.zeros([1, 3]))

    def latents(temperature):
        p = model.sample(4000, seed=5, temperature=temperature).numpy().astype(np.float64)
        return np.log(p) - np.log1p(-p)

    np.testing.assert_array_equal(
        model.sample(50, seed=5), model.sample(50, seed=5, temperature=1.0)
    )
    z1 = latents(1.0)
    for t in (0.5, 1.7):
        zt = latents(t)
        exact = (np.abs(z1) < 4) & (np.abs(zt) < 4)  # sigmoid in float32 keeps the logit there
        np.testing.assert_allclose(zt[exact], t * z1[exact], rtol=1e-3, atol=1e-3)  # same noise
        np.testing.assert_allclose(zt.std(axis=0), t, rtol=0.06)


@pytest.fixture(scope="module")
def resnet_vae():
    tf_keras.utils.set_random_seed(1)
    model = ResNetVAE(hidden_size=4, z_size=2, depth=2, num_blocks=1, iaf_steps=1)
    model.initialize(PIXELS)
    return model


def test_resnet_vae_temperature_scales_every_layers_prior(resnet_vae):
    seed = tf.constant([4, 5])
    _, _, unit = resnet_vae.forward(None, seed, batch_size=6)
    for t in (0.3, 1.5):
        _, _, scaled = resnet_vae.forward(None, seed, batch_size=6, temperature=t)
        for a, b in zip(unit, scaled, strict=True):
            # Each layer's noise, standardised by its own prior: the same draws, times T.
            np.testing.assert_allclose(
                (b.z - b.prior_loc) * tf.exp(-b.prior_log_scale),
                t * (a.z - a.prior_loc) * tf.exp(-a.prior_log_scale),
                rtol=1e-4,
                atol=1e-4,
            )
    top_unit, top_scaled = unit[-1], scaled[-1]  # the top prior does not depend on z
    np.testing.assert_allclose(top_scaled.prior_log_scale, top_unit.prior_log_scale, atol=1e-6)
    np.testing.assert_array_equal(
        resnet_vae.sample(4, seed=3), resnet_vae.sample(4, seed=3, temperature=1.0)
    )
    assert not np.allclose(
        resnet_vae.sample(4, seed=3), resnet_vae.sample(4, seed=3, temperature=0.5)
    )


@pytest.mark.parametrize("temperature", [0, -1.0, float("inf")])
def test_temperature_must_be_positive_and_finite(resnet_vae, temperature):
    for model in (identity_decoder_vae(), resnet_vae):
        with pytest.raises(ValueError, match="`temperature` must be a finite positive number"):
            model.sample(2, temperature=temperature)
