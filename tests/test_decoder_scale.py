"""The ResNet VAE's decoder scale: per subpixel ("pixel", the default) or one scalar ("global")."""

import numpy as np
import pytest
import tensorflow as tf

import vae_harness as harness
from tfp_iaf import tf_keras, vae
from tfp_iaf.vae import ResNetVAE

SEED = tf.constant([0, 3])


def _model(decoder_scale: str, **kwargs) -> ResNetVAE:
    tf_keras.utils.set_random_seed(1)
    return ResNetVAE(
        (8, 8, 3),
        hidden_size=4,
        z_size=2,
        depth=1,
        num_blocks=1,
        decoder_scale=decoder_scale,
        **kwargs,
    )


def _pixels(seed: int, batch: int = 4) -> tf.Tensor:
    return tf.random.stateless_uniform([batch, 8, 8, 3], [seed, 0], maxval=256, dtype=tf.int32)


def test_global_is_the_scalar_and_pixel_adds_a_learned_offset_per_subpixel():
    x = _pixels(0)
    g = _model("global")
    g.initialize(x)  # builds: weights are drawn here, after `_model`'s seeding
    p = _model("pixel")
    p.initialize(x)
    # The per-subpixel branch is created last: every other weight is drawn as in `global`.
    pixel_weights = {w.name: w for w in p.weights}
    extra = sorted(set(pixel_weights) - {w.name for w in g.weights})
    assert len(extra) == 3 and all("x_dec_scale" in name for name in extra), extra
    for w in g.weights:
        np.testing.assert_array_equal(w.numpy(), pixel_weights[w.name].numpy(), err_msg=w.name)
    mean_g, log_scale_g, _ = g.forward(x, SEED)
    mean_p, log_scale_p, _ = p.forward(x, SEED)
    np.testing.assert_array_equal(mean_g, mean_p)
    assert log_scale_g.shape == () and float(log_scale_g) == float(g.dec_log_scale)
    assert log_scale_p.shape == x.shape and log_scale_p.dtype == tf.float32
    # Weight norm's data-dependent init starts the offset at mean 0 and sd 0.1 per channel.
    # (on the initialisation's own pass: `call`'s seed)
    offset = p.forward(x, tf.constant([p.seed, 0]))[1] - p.dec_log_scale
    mean, var = tf.nn.moments(offset, axes=[0, 1, 2])
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(tf.sqrt(var), 0.1, rtol=1e-2)
    # The likelihood scores every subpixel with its own scale.
    log_px, _ = p._terms(x, SEED)
    expected = vae.discretized_logistic_log_prob(vae.pixels_to_unit(x), mean_p, log_scale_p)
    np.testing.assert_allclose(log_px, tf.reduce_sum(expected, axis=[1, 2, 3]), rtol=1e-5)


@pytest.mark.slow
def test_pixel_scale_learns_where_the_images_are_predictable():
    """Left halves flat grey, right halves noise: the learned scale is tighter on the left."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 8, 8, 3)).astype(np.int32)
    x[:, :, :4] = 128
    x = tf.constant(x)
    model = _model("pixel", free_bits=0.0)
    model.initialize(x)
    model.compile(optimizer=harness.make_optimizer(0.01, None))
    step = tf.function(model.train_step)
    for _ in range(60):
        step(x)
    _, log_scale, _ = model.forward(x, SEED)
    flat, noisy = (
        float(tf.reduce_mean(log_scale[:, :, :4])),
        float(tf.reduce_mean(log_scale[:, :, 4:])),
    )
    assert flat < noisy - 0.2, (flat, noisy)  # a global scale has flat == noisy


def test_every_pixel_scale_weight_gets_a_gradient():
    x = _pixels(1)
    model = _model("pixel")
    model.initialize(x)
    with tf.GradientTape() as tape:
        loss, _ = model._step(x, SEED)
    grads = tape.gradient(loss, model.x_dec_scale.trainable_weights)
    assert all(g is not None and bool(tf.reduce_any(g != 0)) for g in grads)


@pytest.mark.parametrize("bad", ["channel", "", None, 1])
def test_unknown_decoder_scale_is_an_error(bad):
    with pytest.raises(ValueError, match=r"`decoder_scale` must be one of \('pixel', 'global'\)"):
        _model(bad)
