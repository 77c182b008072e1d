"""tfp_iaf.vi at its edges: diagnostics of extreme weights, models and settings it refuses."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import vi

tfb, tfd = tfp.bijectors, tfp.distributions


def bad_log_weights(spread: float, n: int = 4000) -> dict[str, np.ndarray]:
    """Log-weights of surrogates that miss the target's mass, spanning ~`spread` nats."""
    rng = np.random.default_rng(int(math.log10(spread)))
    return {
        "-|normal|": -spread * np.abs(rng.standard_normal(n)),
        "normal": spread / 10 * rng.standard_normal(n),
        "student-t": spread / 100 * rng.standard_t(3, n),
        "cauchy": spread / 100 * rng.standard_cauchy(n),
    }


@pytest.mark.parametrize("spread", [1e3, 1e4, 1e5])
def test_pareto_khat_of_log_weights_spanning_thousands_of_nats_is_a_verdict(spread):
    """Tails past ~745 nats, where `exp(log w - max)` underflows to 0: k-hat says "bad"."""
    for name, log_w in bad_log_weights(spread).items():
        k = vi.pareto_khat(log_w)
        assert not math.isnan(k) and k >= 0.7, (name, k)


def test_pareto_khat_does_not_depend_on_the_weights_scale():
    log_w = np.random.default_rng(1).standard_normal(1000)
    k = vi.pareto_khat(log_w)
    assert 0 < k < 0.7
    for shift in [-1e4, 1e4, 1e6]:
        np.testing.assert_allclose(vi.pareto_khat(log_w + shift), k, rtol=1e-6)


def test_pareto_khat_of_a_tail_tied_at_its_threshold_is_inf():
    """More than a quarter of the tail at the threshold, larger weights above it."""
    log_w = np.concatenate([np.zeros(100), np.arange(1.0, 4.0)])
    assert vi.pareto_khat(log_w) == math.inf
    assert vi.pareto_khat(np.zeros(30)) == -math.inf


def test_log_evidence_in_log_space():
    assert vi.log_evidence([1e5, 1e5]) == pytest.approx(1e5)
    assert vi.log_evidence([-np.inf, 0.0]) == pytest.approx(-math.log(2))
    assert vi.log_evidence([-np.inf] * 3) == -math.inf
    assert vi.log_evidence([np.inf, 0.0]) == math.inf


def test_log_evidence_bad_input():
    with pytest.raises(ValueError, match=r"`log_weights` must hold at least one value; got 0"):
        vi.log_evidence([])
    with pytest.raises(ValueError, match=r"`log_weights` must not be NaN; got 1 NaN"):
        vi.log_evidence([0.0, np.nan])


def test_softmax_centered_and_a_dirichlet_model_sample_and_fit():
    """TFP 0.25's `tfb.Pad` calls `np.reshape(newshape=)`, which NumPy 2.4 removed."""
    simplex = tfb.SoftmaxCentered().forward(tf.constant([[0.5, -1.0]]))
    np.testing.assert_allclose(tf.reduce_sum(simplex, -1), [1.0], rtol=1e-6)
    model = tfd.Dirichlet([1.0, 2.0, 3.0])
    q = vi.surrogate_for(model, seed=0)
    z = q.sample(4, seed=(1, 2))
    assert z.shape == [4, 3]
    np.testing.assert_allclose(tf.reduce_sum(z, -1), np.ones(4), rtol=1e-5)
    optimizer = tf.optimizers.Adam(0.01)
    for step in range(3):  # eagerly: a traced fit would cost seconds of tracing
        with tf.GradientTape() as tape:
            loss = tfp.vi.monte_carlo_variational_loss(
                model.log_prob, q, sample_size=4, seed=(3, step)
            )
        grads = tape.gradient(loss, q.trainable_variables)
        optimizer.apply_gradients(zip(grads, q.trainable_variables, strict=True))
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)


def poisson_count_model():
    return tfd.JointDistributionNamed(
        {
            "rate": tfd.Exponential(1.0),
            "n": lambda rate: tfd.Poisson(rate),
            "y": lambda n: tfd.Normal(n, 1.0),
        }
    )


@tfd.JointDistributionCoroutineAutoBatched
def categorical_mixture():
    loc = yield tfd.Normal(0.0, 1.0, name="loc")
    k = yield tfd.Categorical(logits=[0.0, 1.0], name="k")
    yield tfd.Normal(loc + tf.cast(k, tf.float32), 1.0, name="obs")


@pytest.mark.parametrize(
    "model,match",
    [
        (tfd.Poisson(1.0), r"`model` is Poisson 'Poisson' with no event-space bijector"),
        (tfd.Sample(tfd.Poisson(1.0), 3), r"`model` is Sample 'SamplePoisson' with no event"),
        (tfd.Categorical(logits=[0.0, 1.0]), r"`model` is Categorical .* of dtype tf.int32"),
        (
            poisson_count_model().experimental_pin(y=1.0),
            r"`model`'s part 'n' is Poisson 'Poisson' with no event-space bijector .*"
            r"continuous parameters only; pin the part",
        ),
        (
            tfd.JointDistributionSequential(
                [tfd.Normal(0.0, 1.0), tfd.Bernoulli(logits=0.0), lambda b, m: tfd.Normal(m, 1.0)]
            ),
            r"`model`'s part 'b' is Bernoulli 'Bernoulli' of dtype tf.int32",
        ),
        (
            categorical_mixture.experimental_pin(obs=1.0),
            r"`model`'s part 'k' is Categorical 'k' of dtype tf.int32",
        ),
        (
            tfd.JointDistributionNamed(
                {
                    "inner": tfd.JointDistributionNamed({"c": tfd.Poisson(1.0)}),
                    "s": tfd.Exponential(1.0),
                }
            ),
            r"`model`'s part 'inner' -> 'c' is Poisson",
        ),
    ],
    ids=[
        "poisson",
        "sample-poisson",
        "categorical",
        "pinned-named",
        "sequential",
        "coroutine",
        "nested",
    ],
)
def test_a_discrete_latent_is_refused_naming_the_part(model, match):
    with pytest.raises(TypeError, match=match):
        vi.surrogate_for(model)


def test_discrete_parts_that_are_pinned_are_no_latents():
    q = vi.surrogate_for(poisson_count_model().experimental_pin(n=2.0, y=1.0), seed=0)
    assert sorted(q.sample(seed=(1, 2))) == ["rate"]
    q = vi.surrogate_for(categorical_mixture.experimental_pin(k=1, obs=1.0), seed=0)
    assert q.sample(seed=(1, 2)).loc.shape == []


@pytest.mark.parametrize(
    "model,match",
    [
        (tfd.Normal(tf.zeros(5), 1.0), r"`model` has batch shape \(5,\): a surrogate is of one"),
        (
            tfd.JointDistributionNamed(
                {"mu": tfd.Normal(tf.zeros(5), 1.0), "y": lambda mu: tfd.Normal(mu, 1.0)}
            ).experimental_pin(y=tf.zeros(5)),
            r"`model`'s part 'mu' has batch shape \(5,\).*`tfd.Sample\(d, n\)`.*`tfd.Independent",
        ),
        (
            tfd.JointDistributionSequential(
                [tfd.Normal(tf.zeros([2, 3]), 1.0), lambda m: tfd.Normal(m, 1.0)]
            ).experimental_pin(None, tf.zeros([2, 3])),
            r"`model`'s part 'm' has batch shape \(2, 3\)",
        ),
    ],
    ids=["normal", "pinned-named", "pinned-sequential"],
)
def test_a_batched_model_is_refused_naming_the_batch_shape(model, match):
    with pytest.raises(ValueError, match=match):
        vi.surrogate_for(model)


def test_an_auto_batched_model_of_a_vector_is_one_event():
    model = tfd.JointDistributionNamedAutoBatched(
        {"mu": tfd.Normal(tf.zeros(5), 1.0), "y": lambda mu: tfd.Normal(mu, 1.0)}
    ).experimental_pin(y=tf.zeros(5))
    assert vi.surrogate_for(model, seed=0).sample(2, seed=(1, 2))["mu"].shape == [2, 5]


@pytest.mark.parametrize(
    "event_shape,bijector,match",
    [
        (
            [3],
            tfb.CholeskyOuterProduct(),
            r"`bijector` 'cholesky_outer_product' maps onto events of rank >= 2, but "
            r"`event_shape` there is \(3,\) \(rank 1\)",
        ),
        ([5], tfb.FillScaleTriL(), r"'fill_scale_tril' maps onto events of rank >= 2, but"),
        (
            {"a": [], "b": [5]},
            {"a": tfb.Exp(), "b": tfb.FillScaleTriL()},
            r"rank >= 2 at part \['b'\], but `event_shape` there is \(5,\)",
        ),
        ([], tfb.SoftmaxCentered(), r"'softmax_centered' maps onto events of rank >= 1"),
        (
            [3, 4],
            tfb.FillScaleTriL(),
            r"`bijector` 'fill_scale_tril' cannot map onto event_shape .*\[3, 4\].*square",
        ),
    ],
    ids=["cholesky-outer-product", "fill-scale-tril", "dict-part", "softmax-scalar", "non-square"],
)
def test_a_bijector_onto_other_events_is_refused_naming_both(event_shape, bijector, match):
    with pytest.raises(ValueError, match=match):
        vi.build_iaf_surrogate_posterior(event_shape, bijector)


def test_a_bijector_onto_matrices_takes_a_batch_of_them():
    q = vi.build_iaf_surrogate_posterior([2, 3, 3], tfb.FillScaleTriL(), seed=0)
    assert q.sample(4, seed=(1, 2)).shape == [4, 2, 3, 3]


@pytest.mark.parametrize("event_shape", [[0], {}, {"a": {}}, [[0], [2, 0]]], ids=str)
def test_an_empty_event_is_refused_in_our_words(event_shape):
    with pytest.raises(ValueError, match=r"`event_shape` must have at least one element; got"):
        vi.build_iaf_surrogate_posterior(event_shape)


def test_a_negative_seed_is_refused():
    with pytest.raises(ValueError, match=r"`seed` must be a non-negative int or None; got -1"):
        vi.build_iaf_surrogate_posterior([2], seed=-1)


def test_default_widths_stay_2d_for_small_events_and_are_capped_for_large_ones():
    """`[5000]` built 500 million parameters (40 s) at `2 D` units a layer; now ~33 million."""
    for size, width in [(10, 32), (100, 200), (600, 1024)]:
        q = vi.build_iaf_surrogate_posterior([size], seed=0)
        assert q.trainable_variables[0].shape == [size + 1, width]  # the first MADE's first layer
    q = vi.build_iaf_surrogate_posterior([5000], seed=0)
    made = 5001 * 1024 + 1025 * 1024 + 1025 * 2 * 5000  # packed kernels and biases
    assert sum(v.shape.num_elements() for v in q.trainable_variables) == 2 * 5000 + 2 * made
    assert q.sample(2, seed=(1, 2)).shape == [2, 5000]
