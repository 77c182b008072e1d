"""PlanarFlow: the property checklist, the invertibility constraint, the inverse's root solve."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
from tests import flow_checks as fc
from tests.configs import CONTEXT, EVENT, checklist_cases
from tfp_iaf.planar import _solve_step

tfd = tfp.distributions
D, H = EVENT, CONTEXT  # the registry's planar flows


def make(dtype, context: bool, num_steps: int = 3, seed: int = 0) -> tfp_iaf.PlanarFlow:
    tfp_iaf.tf_keras.utils.set_random_seed(seed)
    flow = tfp_iaf.PlanarFlow(D, num_steps, context_size=H if context else None, dtype=dtype)
    return built_and_perturbed(flow, dtype, context, seed)


def built_and_perturbed(flow, dtype, context: bool, seed: int = 0):
    x, kwargs = inputs((2,), dtype, context)
    flow.forward(x, **kwargs)  # builds
    fc.perturb(flow.variables, scale=0.5, seed=seed)  # away from the initial parameters
    return flow


def inputs(batch, dtype, context: bool, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((*batch, D)), dtype)
    if not context:
        return x, {}
    return x, {"context": tf.constant(rng.standard_normal((*batch, H)), dtype)}


@pytest.mark.parametrize(
    "config,batch,context",
    [
        pytest.param(
            config, batch, context, id=f"{context or 'noctx'}-{config.dtype.name}-{batch}"
        )
        for config, batch, context in checklist_cases(["planar"])
    ],
)
def test_property_checklist(config, batch, context):
    """The registry's planar flows x context (x's batch or its trailing part) x batch x dtype."""
    tfp_iaf.tf_keras.utils.set_random_seed(0)
    flow = built_and_perturbed(config.build(), config.dtype, config.context)
    x, kwargs = inputs(batch, config.dtype, config.context)
    if context == "ctx_broadcast" and batch:
        kwargs["context"] = kwargs["context"][0]  # batch [1:]: broadcasts against x's
    fc.assert_flow_properties(flow, x, kwargs, fc.strict_tolerance(config.dtype))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_round_trip_error_is_within_its_bound_at_large_values(dtype):
    flow = make(dtype, context=True, num_steps=6)
    x, kwargs = inputs((64,), dtype, context=True)
    x = 4.0 * x
    x_back = flow.inverse(fc.fresh(flow.forward(x, **kwargs)), **kwargs)
    limit = 1e-5 if dtype == tf.float32 else 1e-10
    assert np.max(np.abs(x_back - x)) <= limit * max(1.0, float(tf.reduce_max(tf.abs(x))))


def test_constraint_holds_for_adversarial_raw_parameters():
    """`w . u_hat = m(w . u) > -1` whatever `u` and `w`: raw `u = -10 w` has `w . u` << -1."""
    flow = tfp_iaf.PlanarFlow(D, 2, dtype=tf.float64)
    flow.forward(tf.zeros([1, D], tf.float64))
    w = np.array([[1.0, -2.0, 0.5, 3.0], [1e-3, 0.0, 0.0, 0.0]])
    layer = flow.parameters_layer
    layer.w.assign(w)
    layer.u.assign(-10.0 * w / np.sum(w**2, axis=1, keepdims=True) * 50.0)
    for u_hat, w_k, _, c in flow._steps(None):
        np.testing.assert_allclose(tf.reduce_sum(u_hat * w_k, -1), c, rtol=1e-12)
        assert float(c) > -1.0
    # Still a bijection with a positive Jacobian determinant everywhere checked.
    x = tf.constant(np.random.default_rng(0).standard_normal((50, D)) * 3.0, tf.float64)
    y = flow.forward(x)
    # Near-singular (c = -1 + 1.5e-8, |u_hat| ~ 1e3): the inverse amplifies rounding ~1e10-fold.
    np.testing.assert_allclose(flow.inverse(fc.fresh(y)), x, rtol=1e-5, atol=1e-5)
    jac = fc.forward_jacobian(flow, x, {})
    assert np.all(np.linalg.det(jac) > 0)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_scalar_solve_and_its_implicit_gradient(dtype):
    rng = np.random.default_rng(3)
    s, b = (tf.constant(rng.standard_normal(100) * 5, dtype) for _ in range(2))
    c = tf.constant(rng.uniform(-0.999, 20.0, 100), dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([s, b, c])
        a = _solve_step(s, b, c, dtype)
        residual = a + c * tf.tanh(a + b) - s
    np.testing.assert_allclose(residual, 0.0, atol=1e-5 if dtype == tf.float32 else 1e-12)
    # d a / d s = 1 / g'(a), the implicit function theorem's answer.
    slope = 1.0 + c * (1.0 - tf.tanh(a + b) ** 2)
    np.testing.assert_allclose(
        tape.gradient(a, s), 1.0 / slope, rtol=1e-4 if dtype == tf.float32 else 1e-9
    )


def test_empty_batch_and_transformed_distribution():
    flow = make(tf.float32, context=True)
    x, kwargs = inputs((0,), tf.float32, context=True)
    assert flow.forward(x, **kwargs).shape == (0, D)
    assert flow.inverse(x, **kwargs).shape == (0, D)
    assert flow.forward_log_det_jacobian(x, 1, **kwargs).shape == (0,)
    _, kwargs = inputs((5,), tf.float32, context=True)
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros([5, D])), flow)
    z = q.sample(2, seed=(1, 2), bijector_kwargs=kwargs)
    assert z.shape == (2, 5, D)
    np.testing.assert_allclose(
        q.log_prob(fc.fresh(z), bijector_kwargs=kwargs),  # through the inverse
        q.log_prob(z, bijector_kwargs=kwargs),  # the cached sample
        rtol=1e-4,
        atol=1e-4,
    )


def test_each_point_costs_one_pass_its_log_det_comes_with_it(monkeypatch):
    flow = make(tf.float64, context=True)
    x, kwargs = inputs((5,), tf.float64, context=True)
    passes = []
    steps = flow._steps
    monkeypatch.setattr(flow, "_steps", lambda context: passes.append(1) or steps(context))
    y = flow.forward(x, **kwargs)
    fldj = flow.forward_log_det_jacobian(x, 1, **kwargs)
    assert len(passes) == 1
    y_fresh = fc.fresh(y)
    x_back = flow.inverse(y_fresh, **kwargs)
    ildj = flow.inverse_log_det_jacobian(y_fresh, 1, **kwargs)  # the inverse pass gave it
    assert len(passes) == 2
    np.testing.assert_allclose(ildj, -fldj, rtol=1e-10)
    np.testing.assert_allclose(x_back, x, rtol=1e-10, atol=1e-10)
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros([5, D], tf.float64)), flow)
    z = q.sample(seed=(3, 4), bijector_kwargs=kwargs)
    log_q = q.log_prob(z, bijector_kwargs=kwargs)  # what a VAE step does: no second pass
    assert len(passes) == 3
    np.testing.assert_allclose(log_q, q.log_prob(fc.fresh(z), bijector_kwargs=kwargs), rtol=1e-9)


def test_eager_function_and_xla_agree_including_inverse_gradients():
    flow = make(tf.float32, context=True)
    x, kwargs = inputs((3,), tf.float32, context=True)
    y = flow.forward(x, **kwargs)

    def everything(y, kw):
        with tf.GradientTape() as tape:
            x_back = flow.inverse(tf.identity(y), **kw)
            loss = tf.reduce_sum(x_back**2)
        return x_back, tape.gradient(loss, flow.trainable_variables)

    eager = everything(y, kwargs)
    for jit in (False, True):
        x_back, grads = tf.function(everything, jit_compile=jit)(y, kwargs)
        np.testing.assert_allclose(x_back, eager[0], rtol=1e-4, atol=1e-4)
        for g, g_eager in zip(grads, eager[1], strict=True):
            np.testing.assert_allclose(g, g_eager, rtol=2e-3, atol=2e-3)


def test_with_context_and_checkpoint_round_trip(tmp_path):
    flow = make(tf.float64, context=True)
    x, kwargs = inputs((3,), tf.float64, context=True)
    bound = flow.with_context(kwargs["context"])
    np.testing.assert_array_equal(bound.forward(x), flow.forward(fc.fresh(x), **kwargs))
    np.testing.assert_allclose(
        bound.inverse_log_det_jacobian(x, 1),
        flow.inverse_log_det_jacobian(fc.fresh(x), 1, **kwargs),
        rtol=1e-12,
    )
    path = tf.train.Checkpoint(flow=flow).write(str(tmp_path / "ckpt"))
    restored = make(tf.float64, context=True, seed=9)
    assert not np.allclose(restored.forward(x, **kwargs), flow.forward(fc.fresh(x), **kwargs))
    tf.train.Checkpoint(flow=restored).read(path).assert_consumed()
    np.testing.assert_array_equal(
        restored.forward(fc.fresh(x), **kwargs), flow.forward(fc.fresh(x), **kwargs)
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(event_size=0), ValueError, "`event_size` must be a positive integer; got 0"),
        (dict(event_size=2.5), TypeError, "`event_size` must be a positive integer; got 2.5"),
        (
            dict(event_size=2, num_steps=0),
            ValueError,
            "`num_steps` must be a positive integer; got 0",
        ),
        (dict(event_size=2, context_size=-1), ValueError, "`context_size` must be a positive"),
        (dict(event_size=2, dtype=tf.int32), TypeError, "`dtype` must be a floating-point dtype"),
    ],
)
def test_bad_configuration_is_an_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        tfp_iaf.PlanarFlow(**kwargs)


def test_missing_unexpected_or_misshapen_context_is_an_error():
    with pytest.raises(
        ValueError, match=r"`context` is required: bijector `planar_flow` .*\(3,\)"
    ):
        tfp_iaf.PlanarFlow(2, context_size=3).forward(tf.zeros([1, 2]))
    with pytest.raises(ValueError, match=r"`context` was given \(shape \(1, 3\)\) but bijector"):
        tfp_iaf.PlanarFlow(2).forward(tf.zeros([1, 2]), context=tf.zeros([1, 3]))
    with pytest.raises(ValueError, match=r"`context` must have trailing shape \(3,\) .*\(1, 4\)"):
        tfp_iaf.PlanarFlow(2, context_size=3).forward(tf.zeros([1, 2]), context=tf.zeros([1, 4]))
    with pytest.raises(TypeError, match=r"`context` has dtype float64 but bijector .* is float32"):
        tfp_iaf.PlanarFlow(2, context_size=3).forward(
            tf.zeros([1, 2]), context=tf.zeros([1, 3], tf.float64)
        )


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_inputs_are_checked_like_the_iaf_flows(direction):
    """The checks of every tfp_iaf flow (`Flow._validated`): static shapes always, and under
    `validate_args` finite inputs and contexts and broadcasting batch shapes at run time."""
    arg = "x" if direction == "forward" else "y"
    flow = tfp_iaf.PlanarFlow(D, 2, context_size=H, validate_args=True)
    method = getattr(flow, direction)
    with pytest.raises(ValueError, match=rf"`{arg}` must have event shape \(4,\) \(bijector"):
        method(tf.zeros([2, D + 1]), context=tf.zeros([2, H]))
    with pytest.raises(
        ValueError,
        match=rf"`context` batch shape \(3,\) does not broadcast against the batch shape \(2,\) "
        rf"of `{arg}`",
    ):
        method(tf.zeros([2, D]), context=tf.zeros([3, H]))
    nan = tf.constant([[np.nan] + [0.0] * (H - 1), [0.0] * H])
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"`context` must be finite \(bijector `planar_flow`"
    ):
        method(tf.zeros([2, D]), context=nan)
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"`{arg}` must be finite"):
        method(tf.fill([2, D], np.inf), context=tf.zeros([2, H]))
    spec = [tf.TensorSpec([None, D]), tf.TensorSpec([None, H])]
    run = tf.function(lambda x, c: method(x, context=c), input_signature=spec)
    assert run(tf.zeros([3, D]), tf.zeros([1, H])).shape == (3, D)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="`context` batch shape does not broadcast"
    ):
        run(tf.zeros([3, D]), tf.zeros([5, H]))


def test_with_context_needs_a_context_and_a_flow_that_takes_one():
    with pytest.raises(ValueError, match=r"`context` must be a tensor of trailing shape \(3,\)"):
        tfp_iaf.PlanarFlow(D, context_size=H).with_context(None)
    with pytest.raises(ValueError, match=r"`planar_flow` takes no `context` .*of shape \(2, 3\)"):
        tfp_iaf.PlanarFlow(D).with_context(tf.zeros([2, H]))
