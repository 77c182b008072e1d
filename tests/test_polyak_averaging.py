"""Debiased Polyak averaging: after a short run the averaged weights are not stuck at their
random init, and results.json reports the raw weights' ELBO beside them."""

import numpy as np
import pytest
import tensorflow as tf

import vae_harness as harness
from tests.examples_util import TailConfig, array_loader, tiny_vae
from tfp_iaf import tf_keras

# 8 random binary patterns of 64 pixels: the initial weights score far below trained ones.
X = (np.random.RandomState(0).rand(8, 64) < 0.3).astype(np.float32)


@pytest.mark.slow
def test_sixty_steps_averaged_elbo_is_close_to_the_raw_one(tmp_path):
    batches = tf.data.Dataset.from_tensor_slices(X).batch(8)
    initial = harness.evaluate_model(tiny_vae(64, hidden=16), batches, 1, seed=0)
    results = harness.run_experiment(
        TailConfig(
            model_dir=str(tmp_path), num_steps=60, batch_size=8, ema_momentum=0.998,
            learning_rate=0.02, save_every=100, num_eval_examples=None, eval_batch_size=8,
        ),
        load_split=array_loader(X),
        make_model=lambda train_batches: tiny_vae(64, hidden=16),
        make_images=lambda model, test_batches: {},
        default_epochs=1,
    )  # fmt: skip
    raw, averaged = results["test_elbo_raw_weights"], results["test_elbo"]
    assert raw - initial["elbo"] > 10  # training moved far from the init ...
    assert abs(averaged - raw) < 3  # ... and so did the averages (no-warm-up 0.998: ~89% init)


def test_warm_up_decay_of_the_average():
    """After n updates of a weight from 0 to 1, the average is 1 - prod (1 + i) / (10 + i)."""
    optimizer = harness.make_optimizer(1.0, ema_momentum=0.998)
    w = tf_keras.backend.variable(0.0)
    optimizer.build([w])
    w.assign(1.0)
    for _ in range(3):
        optimizer._update_model_variables_moving_average([w])
        optimizer.iterations.assign_add(1)
    expected = 1 - (1 / 10) * (2 / 11) * (3 / 12)
    np.testing.assert_allclose(optimizer._model_variables_moving_average[0], expected, rtol=1e-6)
