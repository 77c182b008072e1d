"""The VAE model: posterior densities agree with the core API, variables tracked, free bits."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
import vae_harness as harness
from tfp_iaf import tf_keras, vae
from tfp_iaf.vae import ResNetVAE

tfd = tfp.distributions
LATENT, CONTEXT = 3, 5
X = tf.constant(np.eye(4, dtype=np.float32)[:3])  # [3, 4] binary observations


def make_vae(flow=True, free_bits=0.0, gated=False):
    tf_keras.utils.set_random_seed(0)
    encoder = tf_keras.Sequential([tf_keras.layers.Dense(8, activation="elu")])
    decoder = tf_keras.Sequential(
        [tf_keras.layers.Dense(8, activation="elu"), tf_keras.layers.Dense(4)]
    )
    stack = (
        tfp_iaf.dense_iaf_stack(LATENT, 2, [8], context_size=CONTEXT, gated=gated)
        if flow
        else None
    )
    return vae.VAE(
        encoder,
        decoder,
        LATENT,
        flow=stack,
        free_bits=free_bits,
    )


@pytest.mark.parametrize("gated", [False, True])
def test_log_q_per_unit_sums_to_the_transformed_distribution_log_prob(gated):
    model = make_vae(gated=gated)
    model(X)
    z, log_q = model.sample_posterior(X, 6, tf.constant([1, 2]))
    loc, scale, h = model.posterior_parameters(X)
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc, scale), model.flow)
    expected = q.log_prob(tf.identity(z), bijector_kwargs={"context": h})  # fresh: the inverse
    assert z.shape == log_q.shape == (6, 3, LATENT)
    np.testing.assert_allclose(tf.reduce_sum(log_q, -1), expected, rtol=1e-4, atol=1e-4)


def test_planar_posterior_log_q_and_log_weights_come_from_the_public_distribution():
    tf_keras.utils.set_random_seed(0)
    model = vae.VAE(
        tf_keras.Sequential([tf_keras.layers.Dense(8, activation="elu")]),
        tf_keras.Sequential([tf_keras.layers.Dense(4)]),
        LATENT,
        flow=tfp_iaf.PlanarFlow(LATENT, 3, context_size=CONTEXT),
    )
    model(X)
    z, log_q = model.sample_posterior(X, 6, tf.constant([1, 2]))
    loc, scale, h = model.posterior_parameters(X)
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc, scale), model.flow)
    expected = q.log_prob(tf.identity(z), bijector_kwargs={"context": h})  # fresh: the inverse
    assert z.shape == (6, 3, LATENT) and log_q.shape == (6, 3, 1)  # the total: no unit terms
    np.testing.assert_allclose(log_q[..., 0], expected, rtol=1e-4, atol=1e-4)
    # log w = log p(x | z) + log p(z) - log q(z | x), for the same samples.
    seed = tf.constant([4, 4])
    z, log_q = model.sample_posterior(X, 5, seed)
    logits = model.decode(z)
    log_px_z = -tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.broadcast_to(X, logits.shape), logits=logits
        ),
        -1,
    )
    log_pz = tfd.MultivariateNormalDiag(tf.zeros(LATENT)).log_prob(z)
    np.testing.assert_allclose(
        model.log_weights(X, 5, seed), log_px_z + log_pz - log_q[..., 0], rtol=1e-4, atol=1e-4
    )
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model(X))
    grads = tape.gradient(loss, model.flow.trainable_variables)
    assert grads and all(g is not None for g in grads)


def test_diag_log_q_is_the_gaussian_density():
    model = make_vae(flow=False)
    z, log_q = model.sample_posterior(X, 5, tf.constant([0, 1]))
    loc, scale, _ = model.posterior_parameters(X)
    expected = tfd.MultivariateNormalDiag(loc, scale).log_prob(z)
    np.testing.assert_allclose(tf.reduce_sum(log_q, -1), expected, rtol=1e-5)


def test_flow_variables_are_trained_model_variables():
    model = make_vae()
    model(X)
    names = {v.ref() for v in model.trainable_variables}
    flow_vars = model.flow.trainable_variables
    assert flow_vars and all(v.ref() in names for v in flow_vars)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model(X))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)


def test_log_weights_deterministic_and_shaped():
    model = make_vae()
    a = model.log_weights(X, 4, tf.constant([3, 4]))
    b = model.log_weights(X, 4, tf.constant([3, 4]))
    assert a.shape == (4, 3)
    np.testing.assert_array_equal(a, b)


def test_reported_elbo_uses_the_true_kl_under_free_bits():
    model = make_vae(free_bits=10.0)
    model.compile(optimizer=harness.make_optimizer(1e-3, ema_momentum=None))
    logs = model.evaluate(tf.data.Dataset.from_tensors(X), verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["elbo"], -(logs["nll"] + logs["kl"]), rtol=1e-5)
    # The floor: 10 nats per unit, far above this KL, so the objective is nll + 3 * 10.
    np.testing.assert_allclose(logs["loss"], logs["nll"] + LATENT * 10.0, rtol=1e-5)
    assert logs["kl"] < LATENT * 10.0


def test_sample_shape_and_range():
    model = make_vae()
    model(X)
    images = model.sample(7, seed=1).numpy()
    assert images.shape == (7, 4) and np.all((images >= 0) & (images <= 1))


def _parts():
    return (tf_keras.layers.Dense(4), tf_keras.layers.Dense(4))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"latent_size": 0}, ValueError, r"`latent_size` must be a positive integer; got 0"),
        ({"free_bits": -1.0}, ValueError, r"`free_bits` must be a finite number >= 0; got -1.0"),
        (
            {"flow": "iaf"},
            TypeError,
            r"`flow` must be a tfp_iaf flow \(e.g. .*\); got str",
        ),
        (
            {
                "flow": tfp_iaf.PlanarFlow(3, 2, context_size=5),
                "free_bits": 0.5,
            },
            ValueError,
            r"`free_bits` must be 0 with a flow that has no per-unit log-dets \(PlanarFlow: .*; "
            r"got free_bits=0.5",
        ),
        (
            {"flow": tfp_iaf.PlanarFlow(2, 2, context_size=5)},
            ValueError,
            r"`flow` must act on event shape \(3,\) \(latent_size\); got \(2,\)",
        ),
        (
            {"flow": tfp_iaf.dense_iaf_stack(2, 1, [4], context_size=5)},
            ValueError,
            r"`flow` must act on event shape \(3,\) \(latent_size\); got \(2,\)",
        ),
        (
            {"flow": tfp_iaf.conv_iaf_stack((3, 1, 1), 1, [3], context_channels=2)},
            ValueError,
            r"`flow` must act on event shape \(3,\) \(latent_size\); got \(3, 1, 1\)",
        ),
    ],
)
def test_configuration_errors(kwargs, error, match):
    args = {"latent_size": LATENT, **kwargs}
    with pytest.raises(error, match=match):
        vae.VAE(*_parts(), **args)


def test_samples_come_from_the_public_transformed_distribution():
    model = make_vae()
    model(X)
    q = model.posterior(X)
    _, _, h = model.posterior_parameters(X)
    seed = tf.constant([4, 5])
    z, _ = model.sample_posterior(X, 2, seed)
    np.testing.assert_allclose(z, q.sample(2, seed=seed), rtol=1e-6)
    np.testing.assert_allclose(
        q.bijector.forward(X[:, :LATENT]), model.flow.forward(X[:, :LATENT], context=h)
    )


@pytest.mark.parametrize("iaf_steps", [0, 2])
def test_resnet_vae_kl_units_are_the_public_posterior_log_prob_minus_the_prior(iaf_steps):
    model = ResNetVAE(
        (8, 8, 3), hidden_size=4, z_size=2, depth=1, num_blocks=2, iaf_steps=iaf_steps
    )
    x = tf.random.stateless_uniform([3, 8, 8, 3], seed=[1, 2], maxval=256, dtype=tf.int32)
    model.initialize(x)
    _, _, outputs = model.forward(x, tf.constant([7, 8]))
    for block, out in zip(model.blocks, outputs, strict=True):
        q = block.posterior(out.posterior_loc, out.posterior_log_scale, out.posterior_context)
        log_q = q.log_prob(tf.identity(out.z))
        prior = tfd.Independent(tfd.Normal(out.prior_loc, tf.exp(out.prior_log_scale)), 3)
        assert out.kl.shape == out.z.shape
        np.testing.assert_allclose(
            tf.reduce_sum(out.kl, [1, 2, 3]), log_q - prior.log_prob(out.z), rtol=1e-4, atol=1e-3
        )


@pytest.mark.parametrize("order", ["raster", "channel"])
def test_data_dependent_init_reaches_weight_normalised_masked_convs(order):
    net = tfp_iaf.ConvMADE((4, 4, 2), [4, 4], context_channels=3, order=order, weight_norm=True)
    x = tf.random.stateless_normal([8, 4, 4, 2], seed=[1, 2]) * 3.0
    context = tf.random.stateless_normal([8, 4, 4, 3], seed=[3, 4]) * 2.0
    tfp_iaf.data_dependent_init(net, x, context=context)
    out = net(x, context=context)
    # The output layer is initialised to standard deviation 1e-2 per channel (near identity).
    _, var = tf.nn.moments(tf.reshape(out, [-1, 4]), axes=[0])
    np.testing.assert_allclose(tf.sqrt(var), 1e-2, rtol=1e-3)
    assert not any(layer.initializing for layer in net.masked_layers)
