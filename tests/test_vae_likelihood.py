"""The importance-sampled log p(x) and ELBO estimator, on a linear Gaussian model.

Model: `z ~ N(0, I_d)`, `x | z ~ N(W z + b, s^2 I_n)`, so `p(x) = N(b, W W^T + s^2 I)` and the
posterior `p(z | x) = N(m, S)`, `S = (I + W^T W / s^2)^-1`, `m = S W^T (x - b) / s^2`, exactly.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
from tfp_iaf import vae

tfd = tfp.distributions


class LinearGaussian:
    def __init__(self, d=2, n=3, noise=0.5, seed=0):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(n, d)).astype(np.float64)
        self.b = rng.normal(size=n).astype(np.float64)
        self.noise = noise
        self.d = d
        self.x = rng.normal(size=(4, n)) * 2.0  # a batch of 4 observations

    def exact_log_px(self):
        cov = self.w @ self.w.T + self.noise**2 * np.eye(len(self.b))
        return tfd.MultivariateNormalFullCovariance(self.b, cov).log_prob(self.x).numpy()

    def posterior(self):
        prec = np.eye(self.d) + self.w.T @ self.w / self.noise**2
        cov = np.linalg.inv(prec)
        mean = (self.x - self.b) @ self.w @ cov / self.noise**2  # [batch, d] (cov symmetric)
        return mean, cov

    def log_joint(self, z):  # z: [k, batch, d]
        prior = tfd.MultivariateNormalDiag(tf.zeros(self.d, tf.float64)).log_prob(z)
        loc = tf.linalg.matvec(self.w, z) + self.b
        lik = tfd.MultivariateNormalDiag(loc, self.noise * tf.ones_like(loc)).log_prob(self.x)
        return prior + lik

    def log_weights_fn(self, q):
        def fn(x, n, seed):
            z = q.sample(n, seed=seed)
            return self.log_joint(z) - q.log_prob(z)

        return fn


def test_exact_posterior_gives_exact_log_px_and_elbo_for_any_k():
    model = LinearGaussian()
    mean, cov = model.posterior()
    q = tfd.MultivariateNormalTriL(mean, tf.linalg.cholesky(cov))
    for k in (1, 7):
        est = vae.importance_sampled_log_likelihood(
            model.log_weights_fn(q), tf.constant(model.x), k, chunk_size=3, seed=1
        )
        np.testing.assert_allclose(est.log_px, model.exact_log_px(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(est.elbo, model.exact_log_px(), rtol=0, atol=1e-9)


def _prior_proposal(model):
    # A poor proposal: a diagonal Gaussian at the posterior mean with the prior's unit scales.
    mean, _ = model.posterior()
    return tfd.MultivariateNormalDiag(mean, tf.ones_like(mean) * 1.3)


def test_deterministic_given_seed_and_chunking_only_changes_samples():
    model = LinearGaussian()
    fn = model.log_weights_fn(_prior_proposal(model))
    x = tf.constant(model.x)
    a = vae.importance_sampled_log_likelihood(fn, x, 50, chunk_size=16, seed=3)
    b = vae.importance_sampled_log_likelihood(fn, x, 50, chunk_size=16, seed=3)
    c = vae.importance_sampled_log_likelihood(fn, x, 50, chunk_size=16, seed=4)
    np.testing.assert_array_equal(a.log_px, b.log_px)
    assert not np.allclose(a.log_px, c.log_px)


def test_chunked_equals_unchunked_on_the_same_weights():
    # With weights that do not depend on the seed, chunking is exact arithmetic.
    table = tf.constant(np.random.default_rng(0).normal(size=(10, 3)) * 50.0)

    def fn(x, n, seed):
        start = int(fn.calls)
        fn.calls += n
        return table[start : start + n]

    fn.calls = 0
    whole = vae.importance_sampled_log_likelihood(fn, tf.zeros([3, 1]), 10)
    fn.calls = 0
    chunked = vae.importance_sampled_log_likelihood(fn, tf.zeros([3, 1]), 10, chunk_size=3)
    expected = tf.reduce_logsumexp(table, axis=0) - math.log(10)
    np.testing.assert_allclose(whole.log_px, expected, rtol=1e-12)
    np.testing.assert_allclose(chunked.log_px, expected, rtol=1e-12)
    np.testing.assert_allclose(chunked.elbo, tf.reduce_mean(table, axis=0), rtol=1e-12)


def test_log_mean_exp_is_stable():
    log_w = tf.constant([[1000.0, -1000.0], [1000.0, -1001.0]])
    out = vae.log_mean_exp(log_w, axis=0).numpy()
    np.testing.assert_allclose(out, [1000.0, -1000.0 + math.log((1 + math.exp(-1)) / 2)])


def test_bound_ordering_elbo_below_log_px_below_exact_on_average():
    model = LinearGaussian()
    fn = model.log_weights_fn(_prior_proposal(model))
    est = vae.importance_sampled_log_likelihood(fn, tf.constant(model.x), 200, 50, seed=0)
    assert np.all(est.elbo.numpy() < est.log_px.numpy())
    assert np.all(est.elbo.numpy() < model.exact_log_px())


@pytest.mark.slow
def test_estimate_converges_to_exact_log_px_as_k_grows():
    model = LinearGaussian()
    fn = model.log_weights_fn(_prior_proposal(model))
    exact = model.exact_log_px()
    errors = []
    for k in (1, 10, 100, 10_000):
        # Average over seeds to see the bias, which shrinks like 1/k.
        est = [
            vae.importance_sampled_log_likelihood(
                fn, tf.constant(model.x), k, chunk_size=2_000, seed=s
            ).log_px.numpy()
            for s in range(5)
        ]
        errors.append(np.abs(np.mean(est, axis=0) - exact).max())
    assert errors[0] > 0.1  # the proposal is poor: k = 1 (the ELBO) is far off
    assert errors[-1] < 0.01, errors
    assert errors == sorted(errors, reverse=True), errors


@pytest.mark.slow
def test_elbo_with_an_iaf_posterior_approaches_exact_log_px():
    # One observation whose posterior is strongly correlated: the best diagonal Gaussian has a
    # closed-form gap, KL(q* || p(z|x)) = (sum_i log P_ii - log det P) / 2 with P the precision.
    model = LinearGaussian(d=2, n=2, noise=0.3, seed=1)
    model.w = np.array([[1.0, 1.0], [1.0, 1.2]])
    model.x = model.x[:1]
    mean, cov = model.posterior()
    prec = np.linalg.inv(cov)
    diag_gap = 0.5 * (np.log(np.diag(prec)).sum() - np.linalg.slogdet(prec)[1])
    assert diag_gap > 0.5

    tf.random.set_seed(0)
    flow = tfp_iaf.dense_iaf_stack(2, 4, [32, 32], dtype="float64")
    loc = tf.Variable(tf.zeros([1, 2], tf.float64))
    raw_scale = tf.Variable(tf.zeros([1, 2], tf.float64))

    def posterior():
        base = tfd.MultivariateNormalDiag(loc, tf.nn.softplus(raw_scale) + 1e-3)
        return tfd.TransformedDistribution(base, flow)

    opt = tfp_iaf.tf_keras.optimizers.Adam(0.01)
    posterior().sample(seed=(0, 0))  # builds the networks
    variables = [loc, raw_scale, *flow.trainable_variables]

    @tf.function
    def step(seed):
        with tf.GradientTape() as tape:
            q = posterior()
            z = q.sample(64, seed=seed)
            loss = -tf.reduce_mean(model.log_joint(z) - q.log_prob(z))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    for i in range(1500):
        step(tf.constant([1, i]))
    q = posterior()
    est = vae.importance_sampled_log_likelihood(
        model.log_weights_fn(q), tf.constant(model.x), 20_000, chunk_size=5_000, seed=9
    )
    exact = model.exact_log_px()
    iaf_gap = float(exact[0] - est.elbo.numpy()[0])
    assert -0.02 < iaf_gap < 0.25 * diag_gap, (iaf_gap, diag_gap)
    np.testing.assert_allclose(est.log_px, exact, atol=0.01)


def test_evaluate_dataset_averages_over_batches():
    model = LinearGaussian()
    mean, cov = model.posterior()
    q = tfd.MultivariateNormalTriL(mean, tf.linalg.cholesky(cov))
    fn = model.log_weights_fn(q)
    # The exact posterior makes every weight log p(x): the mean must be exact whatever the
    # batching. The weights function ignores x's values, so batches of 2 reuse the model's x.
    batches = tf.data.Dataset.from_tensor_slices(model.x).batch(4)
    out = vae.evaluate_dataset(fn, batches, 5, chunk_size=2, seed=0)
    assert out["num_examples"] == 4
    np.testing.assert_allclose(out["log_px"], model.exact_log_px().mean(), atol=1e-9)
    np.testing.assert_allclose(out["elbo"], model.exact_log_px().mean(), atol=1e-9)


def test_bits_per_dim():
    np.testing.assert_allclose(vae.bits_per_dim(-784 * math.log(2.0), 784), 1.0)
    np.testing.assert_allclose(vae.bits_per_dim(-79.88, 784), 79.88 / 784 / math.log(2.0))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_samples": 0}, ValueError, r"`num_samples` must be a positive integer; got 0"),
        ({"num_samples": 2.5}, TypeError, r"`num_samples` must be a positive integer; got 2.5"),
        ({"chunk_size": 0}, ValueError, r"`chunk_size` must be a positive integer; got 0"),
        (
            {"seed": tf.constant([1, 2, 3])},
            ValueError,
            r"`seed` must be an int or an integer tensor of shape",
        ),
    ],
)
def test_estimator_argument_errors(kwargs, error, match):
    args = {"num_samples": 4, "chunk_size": None, "seed": 0, **kwargs}
    with pytest.raises(error, match=match):
        vae.importance_sampled_log_likelihood(
            lambda x, n, s: tf.zeros([n, 2]), tf.zeros([2, 1]), **args
        )


def test_estimator_rejects_wrongly_shaped_log_weights():
    with pytest.raises(ValueError, match=r"shape \[4, 2\] \(samples, batch\); got \(2, 4\)"):
        vae.importance_sampled_log_likelihood(
            lambda x, n, s: tf.zeros([2, n]), tf.zeros([2, 1]), 4
        )


def test_evaluate_dataset_rejects_empty_dataset():
    with pytest.raises(ValueError, match=r"`dataset` must yield at least one example"):
        vae.evaluate_dataset(lambda x, n, s: tf.zeros([n, 1]), [], 4)


def test_bits_per_dim_rejects_bad_num_dims():
    with pytest.raises(ValueError, match=r"`num_dims` must be a positive integer; got 0"):
        vae.bits_per_dim(-1.0, 0)


def _evaluate_as_before(fn, batches, num_samples, chunk_size, seed):
    """The per-batch, per-chunk eager loop that `evaluate_dataset` ran before it was compiled."""
    seed = tf.constant([0, seed], tf.int32)
    log_px, elbo, count = 0.0, 0.0, 0
    for b, x in enumerate(batches):
        est = vae.importance_sampled_log_likelihood(
            fn, x, num_samples, chunk_size, tf.random.experimental.stateless_fold_in(seed, b)
        )
        log_px += float(tf.reduce_sum(tf.cast(est.log_px, tf.float64)))
        elbo += float(tf.reduce_sum(tf.cast(est.elbo, tf.float64)))
        count += int(est.log_px.shape[0])
    return {"log_px": log_px / count, "elbo": elbo / count, "num_examples": count}


@pytest.mark.slow
def test_evaluate_dataset_gives_the_numbers_of_the_eager_loop():
    model = LinearGaussian()
    mean, cov = model.posterior()
    # A deliberately poor posterior, so that the estimates depend on the samples drawn.
    q = tfd.MultivariateNormalDiag(mean + 0.3, 1.5 * tf.ones_like(mean))
    fn = model.log_weights_fn(q)
    batches = tf.data.Dataset.from_tensor_slices(model.x).batch(4).repeat(3)
    out = vae.evaluate_dataset(fn, batches, 7, chunk_size=3, seed=5, verbose=0)
    before = _evaluate_as_before(fn, batches, 7, 3, 5)
    assert out["num_examples"] == before["num_examples"] == 12
    np.testing.assert_allclose(out["log_px"], before["log_px"], rtol=1e-9)
    np.testing.assert_allclose(out["elbo"], before["elbo"], rtol=1e-9)
    assert out["log_px"] > out["elbo"]  # a sample-dependent estimate, not the exact value
    # Under XLA, TF's stateless RNG may pick another algorithm: other draws, same estimator.
    jit = [
        vae.evaluate_dataset(fn, batches, 7, chunk_size=3, seed=5, verbose=0, jit_compile=True)
        for _ in range(2)
    ]
    assert jit[0] == jit[1]
    np.testing.assert_allclose(jit[0]["log_px"], out["log_px"], rtol=0.2)


def test_evaluate_dataset_shows_progress_with_running_means(capsys):
    model = LinearGaussian()
    mean, cov = model.posterior()
    fn = model.log_weights_fn(tfd.MultivariateNormalTriL(mean, tf.linalg.cholesky(cov)))
    batches = tf.data.Dataset.from_tensor_slices(model.x).batch(4).repeat(3)
    exact = model.exact_log_px().mean()
    vae.evaluate_dataset(fn, batches, 5, chunk_size=2, seed=0, verbose=1)
    shown = capsys.readouterr().out
    # The first update has an ETA; the last counts 3 of 3 batches, with the running means
    # (exact here).
    assert "1/3 [" in shown and "ETA" in shown and "3/3 [" in shown
    assert f"log p(x): {exact:.4f}" in shown and f"elbo: {exact:.4f}" in shown
    # An iterable of unknown length still reports a count and the means at the end.
    vae.evaluate_dataset(fn, iter(list(batches)), 5, verbose=1)
    shown = capsys.readouterr().out
    assert "3/Unknown" in shown and f"log p(x): {exact:.4f}" in shown
    vae.evaluate_dataset(fn, batches, 5, verbose=0)
    assert capsys.readouterr().out == ""
