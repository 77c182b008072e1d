"""The CIFAR example's presets: each run for two steps on mock data, the paper's real size by
parameter count, and the reference options it sets reaching the objective."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import vae_harness as harness
from tests.examples_util import loaded_example
from tfp_iaf import tf_keras, vae


@pytest.fixture(scope="module")
def model_size():
    """bench/model_size.py: the authors' parameter count, from their layer shapes."""
    from bench import model_size

    return model_size


@pytest.fixture(scope="module")
def cifar10_vae():
    with loaded_example("cifar10_vae") as module:
        yield module


def _count(variables) -> int:
    return sum(int(np.prod(v.shape)) for v in variables)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default", "paper"])
def test_cifar_preset_two_steps(cifar10_vae, name, tmp_path):
    # The paper's sizes shrunk; its objective, optimiser, free-bits grouping and metric kept.
    tiny = dict(num_blocks=2, hidden_size=8, z_size=4, batch_size=8, eval_batch_size=4)
    tiny |= dict(num_importance_samples=2, importance_chunk=2, num_eval_examples=4)
    if name == "paper":
        tiny |= dict(free_bits_group_size=4)  # two groups per 8-image batch
    config = harness.preset_config(
        cifar10_vae.Config,
        cifar10_vae.PRESETS,
        name,
        num_steps=2,
        model_dir=str(tmp_path),
        **tiny,
    )
    with tfds.testing.mock_data(num_examples=16):
        results = cifar10_vae.train_and_evaluate(config)
    assert results["steps"] == 2 and np.isfinite(results["test_bits_per_dim"])
    assert results["config"]["preset"] == name
    assert sorted(cifar10_vae.PRESETS) == ["default", "paper"]


@pytest.mark.slow
def test_cifar_paper_preset_has_the_references_size(cifar10_vae, model_size):
    tf_keras.utils.set_random_seed(0)
    model = cifar10_vae.make_model(
        harness.preset_config(cifar10_vae.Config, cifar10_vae.PRESETS, "paper")
    )
    model(tf.zeros([1, 32, 32, 3], tf.uint8))
    count = _count(model.trainable_variables)
    assert model_size.reference_parameters() == 41_557_927  # "41.56M"
    unread = model_size.REFERENCE_UNREAD_TOP_BRANCH
    assert count == model_size.reference_parameters() - unread == 41_096_487
    assert len(model.blocks) == 20 and model.decoder_scale == "global"
    networks = [network for block in model.blocks for network in block.flow.networks]
    assert {(n.output_scale, n.project_context) for n in networks} == {(0.1, False)}
    assert model.free_bits_group_size == 32 and model.loss_units == "nats_sum"


def test_free_bits_group_size_and_loss_units_reach_the_resnet_objective(monkeypatch):
    import tfp_iaf.vae.resnet_objective as resnet_objective

    seen = []

    def recording(kl, free_bits, sum_axes=(), group_size=None):
        seen.append(group_size)
        return vae.free_bits_kl(kl, free_bits, sum_axes, group_size)

    monkeypatch.setattr(resnet_objective, "free_bits_kl", recording)
    x = tf.random.stateless_uniform([4, 8, 8, 3], [0, 1], maxval=256, dtype=tf.int32)
    losses = {}
    for units in ("bits_per_dim", "nats_sum"):
        tf_keras.utils.set_random_seed(0)
        model = vae.ResNetVAE(
            (8, 8, 3),
            hidden_size=4,
            z_size=2,
            depth=1,
            num_blocks=1,
            free_bits=0.1,
            free_bits_group_size=2,
            loss_units=units,
        )
        model.initialize(x)
        losses[units] = float(model._step(x, tf.constant([0, 1]))[0])
    assert seen and set(seen) == {2}
    # The same objective: nats summed over the 4 images vs bits per dimension, averaged.
    np.testing.assert_allclose(
        losses["nats_sum"], losses["bits_per_dim"] * 4 * 8 * 8 * 3 * np.log(2.0), rtol=1e-5
    )
    with pytest.raises(ValueError, match="`free_bits_group_size` must be a positive integer"):
        vae.ResNetVAE((8, 8, 3), hidden_size=4, z_size=2, depth=1, free_bits_group_size=0)
    with pytest.raises(ValueError, match=r"`loss_units` must be one of .*; got 'bits'"):
        vae.ResNetVAE((8, 8, 3), hidden_size=4, z_size=2, depth=1, loss_units="bits")
