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
    losses = tfp.vi.fit_surrogate_posterior(
        model.log_prob, q, tf.optimizers.Adam(0.01), 5, sample_size=4, seed=(3, 4)
    )
    assert np.all(np.isfinite(losses))


def test_default_widths_stay_2d_for_small_events_and_are_capped_for_large_ones():
    """`[5000]` built 500 million parameters (40 s) at `2 D` units a layer; now ~33 million."""
    for size, width in [(10, 32), (100, 200), (600, 1024)]:
        q = vi.build_iaf_surrogate_posterior([size], seed=0)
        assert q.trainable_variables[0].shape == [size + 1, width]  # the first MADE's first layer
    q = vi.build_iaf_surrogate_posterior([5000], seed=0)
    made = 5001 * 1024 + 1025 * 1024 + 1025 * 2 * 5000  # packed kernels and biases
    assert sum(v.shape.num_elements() for v in q.trainable_variables) == 2 * 5000 + 2 * made
    assert q.sample(2, seed=(1, 2)).shape == [2, 5000]
