"""The VAE model: posterior densities agree with the core API, variables tracked, free bits."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
from tfp_iaf import vae
from tfp_iaf._keras import tf_keras

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
        context_size=CONTEXT if flow else None,
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
    model.compile(optimizer=vae.make_optimizer(1e-3, ema_momentum=None))
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
        ({"free_bits": -1.0}, ValueError, r"`free_bits` must be >= 0; got -1.0"),
        ({"flow": "iaf"}, TypeError, r"`flow` must be a tfp_iaf.IAFStack; got str"),
        (
            {"flow": tfp_iaf.dense_iaf_stack(2, 1, [4], context_size=5), "context_size": 5},
            ValueError,
            r"`flow` must act on event shape \(3,\) \(latent_size\); got \(2,\)",
        ),
        (
            {"flow": tfp_iaf.dense_iaf_stack(3, 1, [4], context_size=5), "context_size": 4},
            ValueError,
            r"`context_size` must match the flow's context size 5; got 4",
        ),
        ({"context_size": 4}, ValueError, r"`context_size` needs a `flow`; got context_size=4"),
    ],
)
def test_configuration_errors(kwargs, error, match):
    args = {"latent_size": LATENT, **kwargs}
    with pytest.raises(error, match=match):
        vae.VAE(*_parts(), **args)
