"""The one flow base: inputs checked once per public call, `with_context` for every flow, and
posteriors built from any flow with `with_context` (the VAE), the sample's log-det cached."""

import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
from tfp_iaf import _checks, _keras, tf_keras, vae

tfd = tfp.distributions
EVENT, CONTEXT, STEPS = 3, 2, 4


def _count_calls(monkeypatch, module, name):
    """Counts the calls of `module.name`, wherever a tfp_iaf module holds that function."""
    original = getattr(module, name)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("tfp_iaf") and getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, counted)
    return calls


@pytest.fixture
def checks(monkeypatch):
    return _count_calls(monkeypatch, _checks, "check_inputs")


@pytest.fixture
def hooks(monkeypatch):
    return _count_calls(monkeypatch, _keras, "show_layers_to_calling_model")


def _stack():
    flow = tfp_iaf.dense_iaf_stack(EVENT, STEPS, [8], context_size=CONTEXT, validate_args=True)
    x = tf.random.stateless_normal([5, EVENT], seed=[1, 2])
    h = tf.random.stateless_normal([5, CONTEXT], seed=[3, 4])
    flow.forward(x, context=h)  # builds the networks
    return flow, x, h


@pytest.mark.parametrize(
    "call",
    [
        lambda flow, x, h: flow.forward(x, context=h),
        lambda flow, x, h: flow.inverse(x, context=h),
        lambda flow, x, h: flow.forward_log_det_jacobian(x, 1, context=h),
        lambda flow, x, h: flow.inverse_log_det_jacobian(x, 1, context=h),
        lambda flow, x, h: flow.inverse_unit_log_det_jacobian(x, context=h),
        lambda flow, x, h: flow.with_context(h).inverse(x),
        lambda flow, x, h: tfd.TransformedDistribution(
            tfd.MultivariateNormalDiag(tf.zeros(EVENT)), flow
        ).log_prob(x, bijector_kwargs={"context": h}),
    ],
    ids=["forward", "inverse", "fldj", "ildj", "unit_ildj", "bound_inverse", "log_prob"],
)
def test_a_stack_checks_its_inputs_once_per_public_call(call, checks, hooks):
    flow, x, h = _stack()
    checks.clear()
    hooks.clear()
    call(flow, tf.identity(x), h)  # a fresh tensor: no cache hit
    assert len(checks) == 1, f"{STEPS}-step stack: {len(checks)} input checks"
    assert len(hooks) == 1, f"{STEPS}-step stack: {len(hooks)} runs of the Keras hooks"


def test_sampling_then_scoring_checks_once_and_runs_no_inverse(checks, monkeypatch):
    flow, _, h = _stack()
    q = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros([5, EVENT])), flow.with_context(h)
    )
    for network in flow.networks:
        monkeypatch.setattr(network, "sequential_solve", _no_inverse)
    checks.clear()
    z = q.sample(seed=7)
    log_q = q.log_prob(z)
    units = tfp_iaf.unit_log_prob(q, z)
    assert len(checks) == 1
    np.testing.assert_allclose(tf.reduce_sum(units, -1), log_q, rtol=1e-5, atol=1e-5)


def _no_inverse(*args, **kwargs):
    raise AssertionError("the sample's log-density must come from the cache")


def test_a_direct_network_call_checks_once(checks):
    made = tfp_iaf.MADE(EVENT, [8], context_size=CONTEXT)
    made(tf.zeros([2, EVENT]), context=tf.zeros([2, CONTEXT]))
    assert len(checks) == 1
    with pytest.raises(ValueError, match=r"`x` must have event shape \(3,\) \(network"):
        made(tf.zeros([2, EVENT + 1]), context=tf.zeros([2, CONTEXT]))


@pytest.mark.parametrize(
    "flow",
    [
        tfp_iaf.PlanarFlow(EVENT, 2, context_size=CONTEXT),
        tfp_iaf.dense_iaf_stack(EVENT, 2, [8], context_size=CONTEXT),
    ],
    ids=["planar", "iaf"],
)
def test_every_flow_is_a_flow_with_one_with_context(flow, checks):
    assert isinstance(flow, tfp_iaf.Flow)
    assert flow.event_shape == (EVENT,) and flow.context_shape == (CONTEXT,)
    h = tf.random.stateless_normal([4, CONTEXT], seed=[5, 6])
    x = tf.random.stateless_normal([4, EVENT], seed=[7, 8])
    bound = flow.with_context(h)
    assert isinstance(bound, tfp_iaf.Flow) and bound.context_shape is None
    assert isinstance(bound, tfp_iaf.AutoregressiveFlow) == isinstance(
        flow, tfp_iaf.AutoregressiveFlow
    )
    checks.clear()
    y = bound.forward(x)
    assert len(checks) == 1
    np.testing.assert_allclose(y, flow.forward(x, context=h), rtol=1e-6)
    np.testing.assert_allclose(
        bound.inverse_log_det_jacobian(y, 1),
        flow.inverse_log_det_jacobian(tf.identity(y), 1, context=h),
        rtol=1e-4,
        atol=1e-5,
    )


def test_unit_log_prob_refuses_a_flow_without_per_unit_log_dets():
    flow = tfp_iaf.PlanarFlow(EVENT, 2)
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(EVENT)), flow)
    with pytest.raises(TypeError, match=r"triangular tfp_iaf flow .*; got bijector PlanarFlow"):
        tfp_iaf.unit_log_prob(q, q.sample(seed=1))


class _MatrixContextPlanar(tfp_iaf.PlanarFlow):
    @property
    def context_shape(self):
        return (CONTEXT, 2)


def test_a_vae_needs_a_flow_with_a_context_vector():
    with pytest.raises(ValueError, match=r"must take a context vector .*; got context shape"):
        vae.VAE(
            tf_keras.layers.Dense(4),
            tf_keras.layers.Dense(4),
            EVENT,
            flow=_MatrixContextPlanar(EVENT, 1, context_size=CONTEXT),
        )


@pytest.mark.parametrize(
    "flow",
    [None, tfp_iaf.PlanarFlow(EVENT, 2), tfp_iaf.dense_iaf_stack(EVENT, 2, [8], context_size=4)],
    ids=["diag", "planar-noctx", "iaf"],
)
def test_the_vae_takes_any_flow_and_its_context_size_from_it(flow, monkeypatch):
    model = vae.VAE(
        tf_keras.Sequential([tf_keras.layers.Dense(8, activation="elu")]),
        tf_keras.layers.Dense(4),
        EVENT,
        flow=flow,
    )
    x = tf.constant(np.eye(4, dtype=np.float32)[:3])
    model(x)
    assert model.head.units == 2 * EVENT + (4 if flow is not None and flow.context_shape else 0)
    for network in getattr(flow, "networks", []):
        monkeypatch.setattr(network, "sequential_solve", _no_inverse)
    z, log_q = model.sample_posterior(x, 2, tf.constant([1, 2]))  # no inverse pass
    monkeypatch.undo()
    assert log_q.shape[-1] == (1 if isinstance(flow, tfp_iaf.PlanarFlow) else EVENT)
    fresh = model.posterior(x).log_prob(tf.identity(z))  # through the inverse
    np.testing.assert_allclose(tf.reduce_sum(log_q, -1), fresh, rtol=1e-4, atol=1e-4)
