"""tfp_iaf.mcmc: NeuTra leaves the target invariant, on any structure, dtype, under XLA."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import mcmc, vi

tfb, tfd = tfp.bijectors, tfp.distributions

NUM_CHAINS = 2000


def gaussian():
    """A correlated 3-d Gaussian: its mean and second moments."""
    loc = np.array([1.0, -2.0, 0.5], np.float32)
    chol = np.array([[1.0, 0, 0], [0.8, 0.6, 0], [-0.5, 0.3, 0.4]], np.float32)
    target = tfd.MultivariateNormalTriL(loc, chol)
    return target, loc, loc**2 + np.sum(chol**2, axis=1)


class _Funnel:
    """Neal's funnel in 3-d: `v ~ N(0, 1.5)`, `x_1, x_2 ~ N(0, exp(v / 2))`, as one vector."""

    def sample(self, n, seed):
        v_seed, x_seed = tfp.random.split_seed(seed)
        v = tfd.Normal(0.0, 1.5).sample([n, 1], seed=v_seed)
        x = tfd.Normal(0.0, tf.exp(v / 2)).sample(2, seed=x_seed)  # [2, n, 1]
        return tf.concat([v, tf.transpose(x[..., 0])], axis=-1)

    def log_prob(self, z):
        v, x = z[..., 0], z[..., 1:]
        return tfd.Normal(0.0, 1.5).log_prob(v) + tf.reduce_sum(
            tfd.Normal(0.0, tf.exp(v / 2)[..., None]).log_prob(x), axis=-1
        )


def funnel():
    """The funnel, its mean 0 and second moments (`E[x^2] = E[exp(v)] = exp(1.125)`)."""
    second = np.array([2.25, np.exp(1.125), np.exp(1.125)], np.float32)
    return _Funnel(), np.zeros(3, np.float32), second


def warped_surrogate(size: int, seed: int):
    """A tfp_iaf.vi surrogate with random weights, warped further by a sinh-arcsinh map: a flow
    far from affine (its log-det varies by about a nat across its draws), so that a kernel
    that dropped or mis-signed the log-det would sample another distribution."""
    q = vi.build_iaf_surrogate_posterior([size], initial_scale=0.7, seed=seed)
    rng = np.random.default_rng(seed)
    for v in q.trainable_variables:
        v.assign(0.4 * rng.standard_normal(v.shape).astype(np.float32))
    warp = tfb.SinhArcsinh(skewness=1.0, tailweight=0.5)
    return tfd.TransformedDistribution(q.distribution, tfb.Chain([warp, q.bijector]))


def run_from_stationary(target, q, kernel_fn, num_steps=10, seed=0):
    """`num_steps` NeuTra steps for `NUM_CHAINS` chains started at exact draws of the target
    (through the flow's inverse); the last step's states, `[NUM_CHAINS, 3]`."""
    x0 = target.sample(NUM_CHAINS, seed=tf.constant([seed, 1]))
    kernel = kernel_fn(target.log_prob, q)

    @tf.function(autograph=False)
    def run():
        return tfp.mcmc.sample_chain(
            num_steps, x0, kernel=kernel, trace_fn=None, seed=tf.constant([seed, 2])
        )[-1]

    return run().numpy()


def assert_moments(x, mean, second):
    """Means and second moments within 4 standard errors (independent chains)."""
    n = x.shape[0]
    for values, want in ((x, mean), (x**2, second)):
        error = np.abs(values.mean(0) - want) / (values.std(0) / np.sqrt(n))
        assert np.all(error < 4), (values.mean(0), want, error)


def hmc(target_log_prob_fn, q):
    return mcmc.NeuTra(target_log_prob_fn, q, "hmc", step_size=0.3, num_leapfrog_steps=4)


@pytest.mark.slow
@pytest.mark.parametrize("make_target", [gaussian, funnel])
def test_neutra_leaves_the_target_invariant(make_target):
    target, mean, second = make_target()
    x = run_from_stationary(target, warped_surrogate(3, seed=1), hmc)
    assert np.all(np.isfinite(x))
    assert_moments(x, mean, second)


class _NoLogDet(mcmc.NeuTra):
    def base_target_log_prob_fn(self, base_state):
        return self.target_log_prob_fn(self.bijector.forward(base_state))


@pytest.mark.slow
def test_the_invariance_check_catches_a_kernel_without_the_log_det():
    target, mean, second = gaussian()

    def broken(target_log_prob_fn, q):
        return _NoLogDet(target_log_prob_fn, q, "hmc", step_size=0.3, num_leapfrog_steps=4)

    x = run_from_stationary(target, warped_surrogate(3, seed=1), broken)
    with pytest.raises(AssertionError):
        assert_moments(x, mean, second)


def structured_model(dtype):
    return tfd.JointDistributionNamed(
        {
            "scale": tfd.LogNormal(tf.constant(0.0, dtype), 0.5),
            "x": lambda scale: tfd.Sample(tfd.Normal(tf.constant(1.0, dtype), scale), 3),
        }
    )


@pytest.mark.slow
def test_kernel_composes_with_step_size_adaptation_and_traces_under_xla_in_float64():
    model = structured_model(tf.float64)
    q = vi.surrogate_for(model, seed=0)
    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        mcmc.NeuTra(model.log_prob, q, "hmc", num_leapfrog_steps=3), num_adaptation_steps=8
    )

    @tf.function(jit_compile=True, autograph=False)
    def run(seed):
        return tfp.mcmc.sample_chain(
            10,
            q.sample(4, seed=seed),
            kernel=kernel,
            trace_fn=lambda _, r: (r.new_step_size, r.inner_results.inner_results.is_accepted),
            seed=seed,
        )

    states, (step_size, accepted) = run(tf.constant([0, 1]))
    assert set(states) == {"scale", "x"}
    assert states["scale"].shape == [10, 4] and states["x"].shape == [10, 4, 3]
    assert states["x"].dtype == tf.float64 and step_size.dtype == tf.float64
    assert np.all(states["scale"].numpy() > 0) and np.all(np.isfinite(states["x"].numpy()))
    assert accepted.shape == [10, 4] and len(set(step_size.numpy())) > 1  # it adapted


def test_sample_neutra_structured_result_and_gradient_count():
    """Structured states and diagnostics; every gradient counted (the target counts its calls:
    with HMC all chains take the same leapfrogs)."""
    model = structured_model(tf.float32)
    q = vi.surrogate_for(model, seed=0)
    calls = tf.Variable(0, dtype=tf.int64)

    def target(value):
        calls.assign_add(1)
        return model.log_prob(value)

    result = mcmc.sample_neutra(
        target, q, 8, num_chains=3, num_burnin_steps=5, kernel="hmc", jit_compile=False, seed=3
    )
    assert result.states["x"].shape == [8, 3, 3] and result.states["scale"].shape == [8, 3]
    assert result.base_states.shape == [8, 3, 4]
    assert result.ess["x"].shape == [3] and result.rhat["scale"].shape == []
    assert result.num_divergences.shape == [3] and result.acceptance_rate.shape == [3]
    assert result.trajectory_length is not None and result.step_size > 0
    # The states are the flow's image of the base states.
    np.testing.assert_allclose(
        q.bijector.forward(result.base_states)["x"], result.states["x"], rtol=1e-5, atol=1e-6
    )
    # One call checked the target; the rest are the chains' gradients.
    np.testing.assert_array_equal(result.num_gradient_evaluations, calls.numpy() - 1)


@pytest.mark.slow
def test_sample_neutra_samples_a_funnel_with_nuts():
    """The whole call as a user makes it, NUTS on a briefly fitted surrogate: the funnel's
    means within 4 MC standard errors, the chains agreeing."""
    target, mean, _ = funnel()
    q = vi.build_iaf_surrogate_posterior([3], seed=0)
    optimizer = tf.optimizers.Adam(tf.optimizers.schedules.CosineDecay(1e-2, 300))
    vi.fit_surrogate_posterior(
        target.log_prob, q, optimizer, 300, sample_size=8, seed=(0, 1), jit_compile=True
    )
    # 125 burn-in steps: 100 of adaptation, the least that adapts a mass matrix too.
    result = mcmc.sample_neutra(
        target.log_prob, q, 100, num_chains=4, num_burnin_steps=125, seed=0
    )
    x = np.reshape(result.states, [-1, 3])
    se = x.std(0) / np.sqrt(np.asarray(result.ess))
    assert np.all(np.abs(x.mean(0) - mean) < 4 * se), (x.mean(0), se)
    assert np.all(result.num_gradient_evaluations > 225)
    assert np.all(np.asarray(result.rhat) < 1.1), result.rhat


def test_sample_neutra_starts_at_init_state():
    model = structured_model(tf.float32)
    q = vi.surrogate_for(model, seed=0)
    start = {"scale": tf.constant([0.5, 2.0]), "x": tf.constant([[1.0, 2.0, 3.0]] * 2)}
    result = mcmc.sample_neutra(
        model.log_prob, q, 4, num_chains=2, num_burnin_steps=0, init_state=start,
        kernel="hmc", step_size=1e-4, jit_compile=False, seed=0,
    )  # fmt: skip
    # Steps of 1e-4 (no burn-in to adapt them) barely move the chains from where they started.
    np.testing.assert_allclose(result.states["scale"][0], start["scale"], rtol=1e-2)
    np.testing.assert_allclose(result.states["x"][-1], start["x"], rtol=1e-2)


def test_bootstrap_from_a_model_value_inverts_the_flow():
    model = structured_model(tf.float32)
    q = vi.surrogate_for(model, seed=0)
    base = q.distribution.sample(2, seed=tf.constant([1, 2]))
    kernel = hmc(model.log_prob, q)
    results = kernel.bootstrap_results(init_state=q.bijector.forward(base))
    np.testing.assert_allclose(results.base_state, base, atol=1e-4)


@pytest.mark.slow
def test_a_base_of_rank_two_with_a_mass_matrix():
    """A surrogate over `N(0, I)` on `[2, 2]` matrices: the states, the base states and the mass
    matrix keep the base's shape."""
    q = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0.0, 1.0), [2, 2]), tfb.Exp())

    def target(x):
        return tf.reduce_sum(tfd.LogNormal(0.0, 0.5).log_prob(x), axis=[-2, -1])

    result = mcmc.sample_neutra(
        target, q, 4, num_chains=2, num_burnin_steps=125, kernel="hmc", jit_compile=False
    )
    assert result.states.shape == [4, 2, 2, 2] and result.base_states.shape == [4, 2, 2, 2]
    assert np.all(result.states.numpy() > 0) and result.ess.shape == [2, 2]


def test_chains_that_never_moved_get_a_verdict_not_nan():
    from tfp_iaf.mcmc.sample import ess_and_rhat

    stuck = tf.constant(np.tile([[1.0, 2.0, 3.0]], [10, 1]), tf.float32)  # [draws, chains]
    same = tf.ones([10, 3])
    ess, rhat = ess_and_rhat({"stuck": stuck, "same": same}, 3)
    assert float(rhat["stuck"]) == np.inf and float(rhat["same"]) == np.inf, rhat
    assert float(ess["same"]) == 0.0 and 0 < float(ess["stuck"]) <= 3, ess  # one draw a chain


# Errors.


def small_surrogate():
    return vi.build_iaf_surrogate_posterior([2], seed=0)


def normal_target(x):
    return tf.reduce_sum(tfd.Normal(0.0, 1.0).log_prob(x), axis=-1)


@pytest.mark.parametrize(
    "base, match",
    [
        (tfd.Sample(tfd.Normal(1.0, 1.0), [2]), "standard normal"),
        (tfd.Sample(tfd.Normal(0.0, 2.0), [2]), "standard normal"),
        (tfd.Sample(tfd.StudentT(3.0, 0.0, 1.0), [2]), "standard normal"),
        (tfd.Normal(tf.zeros([2]), 1.0), "batch shape"),
    ],
)
def test_a_base_that_is_not_standard_normal_is_refused(base, match):
    q = tfd.TransformedDistribution(base, tfb.Exp())
    with pytest.raises(ValueError, match=match):
        mcmc.NeuTra(normal_target, q)
    with pytest.raises(ValueError, match=match):
        mcmc.sample_neutra(normal_target, q, 10)


def test_a_surrogate_that_is_not_a_transformed_distribution_is_refused():
    with pytest.raises(TypeError, match="`surrogate` must be a tfd.TransformedDistribution"):
        mcmc.sample_neutra(normal_target, tfd.Sample(tfd.Normal(0.0, 1.0), [2]), 10)


def test_a_target_of_another_structure_is_refused():
    q = vi.build_iaf_surrogate_posterior({"a": [], "b": [2]}, seed=0)
    with pytest.raises(ValueError, match=r"failed on 4 samples of the surrogate, structured"):
        mcmc.sample_neutra(lambda v: v[0] + v[1], q, 10)
    with pytest.raises(ValueError, match=r"shape \[4, 2\] .* one per chain"):
        mcmc.sample_neutra(lambda v: v["b"], q, 10)
    with pytest.raises(ValueError, match=r"chains' starts must have a finite log-density"):
        mcmc.sample_neutra(lambda v: tf.math.log(-tf.abs(v["a"])), q, 10)


def test_an_init_state_of_another_shape_or_outside_the_support_is_refused():
    model = structured_model(tf.float32)
    q = vi.surrogate_for(model, seed=0)
    x = tf.zeros([3, 3])
    with pytest.raises(ValueError, match=r"`init_state` must hold one value per chain \(4\)"):
        mcmc.sample_neutra(model.log_prob, q, 10, init_state={"scale": tf.ones([3]), "x": x})
    with pytest.raises(ValueError, match="`init_state` is outside the surrogate's support"):
        bad = {"scale": -tf.ones([4]), "x": tf.zeros([4, 3])}
        mcmc.sample_neutra(model.log_prob, q, 10, init_state=bad)
    with pytest.raises(ValueError, match="`init_state` is not a value of the surrogate's"):
        mcmc.sample_neutra(model.log_prob, q, 10, init_state=[tf.ones([4]), tf.zeros([4, 3])])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_results": 0}, ValueError, "`num_results` must be a positive integer; got 0"),
        ({"num_results": 3}, ValueError, r"`num_results` must be >= 4 .*; got 3"),
        ({"num_results": 5.0}, TypeError, "`num_results` must be a positive integer"),
        ({"num_chains": 0}, ValueError, "`num_chains` must be a positive integer; got 0"),
        ({"num_burnin_steps": -1}, ValueError, "`num_burnin_steps` must be a non-negative"),
        ({"kernel": "mala"}, ValueError, r"`kernel` must be one of \('nuts', 'hmc'\); got 'mala'"),
        ({"kernel": "hmc", "num_chains": 1}, ValueError, "`num_chains` must be >= 2; got 1"),
        ({"target_accept_prob": 1.0}, ValueError, r"`target_accept_prob` must be in \(0, 1\)"),
        ({"max_tree_depth": 0}, ValueError, "`max_tree_depth` must be a positive integer"),
        ({"step_size": -0.1}, ValueError, "`step_size` must be a finite positive number"),
        ({"seed": "a"}, TypeError, "`seed` must be an int or None; got 'a'"),
        ({"adapt_mass_matrix": 1}, TypeError, "`adapt_mass_matrix` must be a bool; got 1"),
    ],
)
def test_sample_neutra_bad_arguments(kwargs, error, match):
    kwargs = {"num_results": 10, **kwargs}
    with pytest.raises(error, match=match):
        mcmc.sample_neutra(normal_target, small_surrogate(), **kwargs)


def test_neutra_bad_arguments():
    q = small_surrogate()
    with pytest.raises(ValueError, match="`inner_kernel` must be one of"):
        mcmc.NeuTra(normal_target, q, "mala")
    with pytest.raises(TypeError, match="`inner_kernel` must be one of .* got 3"):
        mcmc.NeuTra(normal_target, q, 3)
    with pytest.raises(ValueError, match='`inner_kernel="hmc"` needs `num_leapfrog_steps`'):
        mcmc.NeuTra(normal_target, q, "hmc")
    with pytest.raises(ValueError, match="`num_leapfrog_steps` must be a positive integer"):
        mcmc.NeuTra(normal_target, q, "hmc", num_leapfrog_steps=0)
    with pytest.raises(ValueError, match="`step_size` must be a finite positive number"):
        mcmc.NeuTra(normal_target, q, step_size=0.0)
    kernel = mcmc.NeuTra(normal_target, q)
    with pytest.raises(
        ValueError, match="exactly one of `init_state` and `base_state`; got neither"
    ):
        kernel.bootstrap_results()
    with pytest.raises(ValueError, match="got both"):
        kernel.bootstrap_results(tf.zeros([1, 2]), tf.zeros([1, 2]))
