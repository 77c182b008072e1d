"""tfp_iaf.vi: IAF surrogates for structured, constrained models; fitting; diagnostics."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.flow_checks import perturb
from tfp_iaf import vi

tfb, tfd = tfp.bijectors, tfp.distributions
Params = collections.namedtuple("Params", ["scale", "x"])

# (event_shape, bijector): one shape, a dict, a list and a namedtuple, constrained and not.
STRUCTURES = {
    "single": ([2, 3], None),
    "dict": ({"scale": [], "x": [3]}, {"scale": tfb.Exp(), "x": tfb.Identity()}),
    "list": ([[2], [], [2, 2]], [tfb.Identity(), tfb.Sigmoid(), tfb.Identity()]),
    "namedtuple": (Params([], [3]), tfb.JointMap(Params(tfb.Softplus(), tfb.Identity()))),
}


def surrogate(name, dtype=tf.float32, **kwargs):
    event_shape, bijector = STRUCTURES[name]
    return vi.build_iaf_surrogate_posterior(event_shape, bijector, dtype=dtype, seed=0, **kwargs)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_samples_have_the_models_structure_dtype_and_support(name, dtype):
    event_shape, _ = STRUCTURES[name]
    q = surrogate(name, dtype)
    z = q.sample([4, 5], seed=(1, 2))
    expected = vi.structure.as_shapes(event_shape)
    if name != "single":
        tf.nest.assert_same_structure(expected, z, check_types=True)
    for shape, part in zip(tf.nest.flatten(expected), tf.nest.flatten(z), strict=True):
        assert part.shape == [4, 5, *shape]
        assert part.dtype == dtype
        assert np.all(np.isfinite(part))
    assert q.log_prob(z).shape == [4, 5]
    assert q.log_prob(z).dtype == dtype
    if name == "dict":
        assert np.all(z["scale"] > 0)
    if name == "list":
        assert np.all((z[1] > 0) & (z[1] < 1))
    if name == "namedtuple":
        assert isinstance(z, Params) and np.all(z.scale > 0)


@pytest.mark.parametrize(
    "name,affine", [(n, "diag") for n in STRUCTURES] + [("dict", "tril"), ("list", None)]
)
def test_log_prob_is_the_change_of_variables(name, affine):
    """`log q(z) = log N(eps) - log|det d z_free / d eps| - log|det d z / d z_free|`, from the
    autodiff Jacobian, at points whose log-density is not cached (the sequential inverse)."""
    q = surrogate(name, tf.float64, affine=affine)
    perturb(q.trainable_variables, scale=0.2)
    constrain, *flat_to_free = q.bijector.bijectors  # the constraining bijector comes first
    flat_to_free = tfb.Chain(flat_to_free)
    eps = tf.random.stateless_normal([6, q.distribution.event_shape[0]], (3, 4), dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(eps)
        free = flat_to_free.forward(eps)
        flat = tf.concat([tf.reshape(p, [6, -1]) for p in tf.nest.flatten(free)], axis=-1)
    jacobian = tape.batch_jacobian(flat, eps)
    log_det_flow = tf.linalg.slogdet(jacobian)[1]
    free_shapes = constrain.inverse_event_shape(q.event_shape)
    ndims = 2 if name == "single" else tf.nest.map_structure(len, free_shapes)
    log_det_constrain = constrain.forward_log_det_jacobian(free, ndims)
    expected = q.distribution.log_prob(eps) - log_det_flow - log_det_constrain
    z = tf.nest.map_structure(tf.identity, q.bijector.forward(eps))
    got = q.log_prob(tf.nest.map_structure(lambda t: tf.identity(t + 0.0), z))
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7)


def test_every_variable_trains_and_the_seed_fixes_the_initial_values():
    q = surrogate("dict")
    with tf.GradientTape() as tape:
        loss = tfp.vi.monte_carlo_variational_loss(
            vi.as_tfp_target(lambda z: -tf.reduce_sum(z["x"] ** 2, -1) - z["scale"], q.dtype),
            q,
            sample_size=8,
            seed=(5, 6),
        )
    grads = tape.gradient(loss, q.trainable_variables)
    # loc and scale packed; two 3-layer MADEs, each layer its kernel and bias packed
    assert len(q.trainable_variables) == 1 + 2 * 3
    assert all(g is not None and np.any(g != 0) for g in grads)
    again = surrogate("dict")
    other = vi.build_iaf_surrogate_posterior(*STRUCTURES["dict"], seed=1)
    for a, b in zip(q.trainable_variables, again.trainable_variables, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, c)
        for a, c in zip(q.trainable_variables, other.trainable_variables, strict=True)
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
def test_fits_a_correlated_gaussian_with_tfps_own_fit_under_xla(dtype):
    """A Gaussian target is in the family (the affine step): the ELBO of the normalised target
    reaches ~0 (KL(q || p) ~ 0), and the fitted moments are the target's. The learning rate
    decays to 0: at a constant rate the gradient noise keeps the flow's extra parameters
    moving and the covariance ~20% off after 1000 steps."""
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    p = tfd.MultivariateNormalTriL([1.0, -2.0, 0.5], tf.cast(np.linalg.cholesky(cov), dtype))
    q = vi.build_iaf_surrogate_posterior([3], dtype=dtype, seed=0)
    tfp.vi.fit_surrogate_posterior(
        p.log_prob,
        q,
        tf.optimizers.Adam(tf.optimizers.schedules.CosineDecay(0.02, 1000)),
        1000,
        sample_size=16,
        seed=(1, 2),
        jit_compile=True,
    )
    z, log_w = vi.importance_weights(p.log_prob, q, 4000, seed=(3, 4))
    assert float(np.mean(log_w)) > -0.05
    np.testing.assert_allclose(np.mean(z, 0), p.mean(), atol=0.1)
    np.testing.assert_allclose(np.cov(np.asarray(z).T), cov, atol=0.1)


def assert_fit_improves(target, q, **kwargs):
    """300 steps of `vi.fit_surrogate_posterior`: the last 50 losses below the first 50."""
    losses = vi.fit_surrogate_posterior(
        target, q, tf.optimizers.Adam(0.01), 300, sample_size=8, seed=(1, 2), **kwargs
    )
    assert np.mean(losses[-50:]) < np.mean(losses[:50])


@pytest.mark.slow
def test_an_inference_gym_model_fits_as_given():
    """TFP's fit calls a dict target with keyword arguments, which inference_gym's
    `unnormalized_log_prob(value)` refuses; `vi.fit_surrogate_posterior` passes one value."""
    gym = pytest.importorskip("inference_gym.using_tensorflow")
    model = gym.targets.EightSchools()
    q = vi.surrogate_for(model, seed=0)
    assert isinstance(q.sample(seed=(1, 2)), dict)
    with pytest.raises(Exception, match="unexpected keyword argument"):
        tfp.vi.fit_surrogate_posterior(
            model.unnormalized_log_prob, q, tf.optimizers.Adam(0.01), 1, seed=(1, 2)
        )
    assert_fit_improves(model.unnormalized_log_prob, q, jit_compile=True)


def test_surrogate_for_a_pinned_joint_distribution():
    jd = tfd.JointDistributionNamed(
        {
            "scale": tfd.HalfNormal(tf.constant(1.0, tf.float64)),
            "loc": tfd.Normal(tf.constant(0.0, tf.float64), 1.0),
            "y": lambda scale, loc: tfd.Sample(tfd.Normal(loc, scale), 4),
        }
    )
    pinned = jd.experimental_pin(y=tf.constant([0.5, 0.1, 0.3, 0.9], tf.float64))
    q = vi.surrogate_for(pinned, seed=0)
    z = q.sample(100, seed=(1, 2))
    assert sorted(z) == ["loc", "scale"] and z["scale"].dtype == tf.float64
    assert np.all(z["scale"] > 0)
    assert_fit_improves(pinned.unnormalized_log_prob, q)


def test_as_tfp_target_rebuilds_each_structure():
    seen = []
    for name in STRUCTURES:
        q = surrogate(name)
        z = q.sample(2, seed=(1, 2))
        target = vi.as_tfp_target(lambda v: seen.append(v) or 0.0, q.dtype)
        if isinstance(z, dict):
            target(**z)
        elif isinstance(z, list | tuple):
            target(*z)
        else:
            target(z)
        tf.nest.assert_same_structure(seen[-1], z, check_types=True)


def test_pareto_khat_recovers_the_tail_of_generalised_pareto_weights():
    rng = np.random.default_rng(0)
    for xi in [0.2, 0.5, 0.8]:
        estimates = []
        for _ in range(5):
            w = (rng.uniform(size=20000) ** -xi - 1.0) / xi
            estimates.append(vi.pareto_khat(np.log(w)))
        assert abs(np.mean(estimates) - xi) < 0.1, (xi, estimates)
    # Light tails (a surrogate wider than the target) give k < 0.5.
    assert vi.pareto_khat(-0.5 * rng.standard_normal(4000) ** 2) < 0.5


def test_log_evidence_of_an_exact_surrogate_is_the_normaliser():
    q = tfd.Normal(tf.constant(1.0, tf.float64), 2.0)
    log_z = 3.7
    _, log_w = vi.importance_weights(lambda x: q.log_prob(x) + log_z, q, 100, seed=(1, 2))
    np.testing.assert_allclose(vi.log_evidence(log_w), log_z, rtol=1e-6)
    assert vi.pareto_khat(log_w) == -np.inf


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        (
            ({"a": [2], "b": []}, [tfb.Exp(), tfb.Exp()]),
            {},
            ValueError,
            r"`bijector` must have the structure of `event_shape`",
        ),
        (
            ({"a": [2], "b": []}, tfb.Exp()),
            {},
            ValueError,
            r"`bijector` must have the structure of `event_shape`: got a single-part",
        ),
        (
            ([2], tfb.JointMap([tfb.Exp()])),
            {},
            ValueError,
            r"`bijector` must have the structure of `event_shape`: got a structured",
        ),
        (([2], "exp"), {}, TypeError, r"`bijector` must be None, a tfp bijector"),
        (
            ([2],),
            {"dtype": tf.int32},
            TypeError,
            r"`dtype` must be a floating-point dtype; got tf.int32",
        ),
        (([0],), {}, ValueError, r"`event_shape` must have at least one element; got"),
        (({"a": [0, 2]},), {}, ValueError, r"`event_shape` must have at least one element"),
        (("abc",), {}, TypeError, r"`event_shape` must be a shape .*got 'abc'"),
        (([2],), {"affine": "full"}, ValueError, r"`affine` must be one of .*got 'full'"),
        (([2],), {"seed": 1.5}, TypeError, r"`seed` must be an int or None; got 1.5"),
        (([2],), {"initial_scale": 0.0}, ValueError, r"`initial_scale`"),
        (([2],), {"num_steps": -1}, ValueError, r"`num_steps` must be a non-negative integer"),
        (
            ([2],),
            {"num_steps": 0, "affine": None},
            ValueError,
            r"`num_steps=0` with `affine=None` leaves nothing",
        ),
    ],
)
def test_bad_arguments_name_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        vi.build_iaf_surrogate_posterior(*args, **kwargs)


def test_surrogate_for_rejects_a_non_model():
    with pytest.raises(TypeError, match=r"`model` must be a TFP distribution .*got Dense"):
        vi.surrogate_for(tf.keras.layers.Dense(2))


def test_a_target_that_is_nan_at_the_initial_samples_is_reported_with_the_sample():
    q = vi.build_iaf_surrogate_posterior({"scale": [], "x": [2]}, seed=0)

    def target(z):  # NaN for scale < 10: every initial sample (loc in (-2, 2), sd 0.01)
        return tf.math.log(z["scale"] - 10.0) + tf.reduce_sum(z["x"], -1)

    with pytest.raises(
        ValueError,
        match=r"`target_log_prob_fn` returned nan at the "
        r"surrogate's initial sample \d+ of 4: \{'scale': ",
    ):
        vi.fit_surrogate_posterior(
            target, q, tf.optimizers.Adam(0.1), 5, sample_size=4, seed=(1, 2)
        )


def test_pareto_khat_bad_input():
    with pytest.raises(ValueError, match="at least 25 values; got 3"):
        vi.pareto_khat([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="must be finite; got 1 not"):
        vi.pareto_khat([*range(30), np.nan])


@pytest.mark.parametrize(
    "event_shape,kwargs",
    [([], {}), ([3], {"gated": True, "affine": None}), ([2], {"log_scale_bound": None})],
    ids=["scalar", "gated-no-affine", "unbounded"],
)
def test_other_configurations_sample_and_score_their_samples(event_shape, kwargs):
    q = vi.build_iaf_surrogate_posterior(event_shape, seed=0, **kwargs)
    z = q.sample(7, seed=(1, 2))
    assert z.shape == [7, *event_shape]
    np.testing.assert_allclose(q.log_prob(z), q.log_prob(tf.identity(z)), rtol=1e-5, atol=1e-5)
