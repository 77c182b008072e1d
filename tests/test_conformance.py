"""Conformance: every bijector configuration tfp_iaf ships works wherever a TFP bijector works.

One checklist, run over `configs.CONFORMANCE`: the registry's selection of shipped
configurations that reaches every kind (MADE, linear, conv, dense and conv stacks, planar), every
order, every update, with and without context, float32 and float64. Each check
is one TFP use: `tfb.Chain` and `tfb.Invert`, `tfd.TransformedDistribution` (batched and
unbatched bases, `sample(n)` with a context batch), a `tfd.JointDistribution*` posterior, empty
batches, eager == `tf.function` == XLA (values and gradients, through the inverse too), TFP's
dtype and shape methods, TFP's bijective-and-finite check, SavedModel and checkpoint round trips.

TFP's `assert_scalar_congruency` does not apply: it is for scalar bijectors (event ndims 0),
and every IAF acts on events of rank >= 1.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
from tests import flow_checks as fc
from tests.configs import CHECKLIST_UPDATES, CONFORMANCE, DTYPES, KINDS, Config

tfb, tfd = tfp.bijectors, tfp.distributions

BATCH = 3


per_config = pytest.mark.parametrize("config", CONFORMANCE, ids=lambda c: c.id)


def inputs(config: Config, batch=(BATCH,), seed=0):
    """`(x, kwargs)`: a standard normal `x` and, if the flow takes one, `{"context": ...}`."""
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((*batch, *config.event_shape)), config.dtype)
    if config.context_shape is None:
        return x, {}
    context = rng.standard_normal((*batch, *config.context_shape))
    return x, {"context": tf.constant(context, config.dtype)}


def make(config: Config, name="flow", seed=1):
    """The flow, built and with every weight perturbed away from its near-identity init."""
    tfp_iaf.tf_keras.utils.set_random_seed(seed)
    flow = config.build(name)
    x, kwargs = inputs(config)
    flow.forward(x, **kwargs)
    fc.perturb(flow.variables, scale=0.2, seed=seed)
    return flow


def tol(config):
    return fc.tolerance(config.dtype)


def base_distribution(config, batch=(BATCH,)):
    zeros = tf.zeros([*batch, *config.event_shape], config.dtype)
    return tfd.Independent(
        tfd.Normal(zeros, 1.0), reinterpreted_batch_ndims=len(config.event_shape)
    )


def event_ndims(config):
    return len(config.event_shape)


@per_config
def test_dtype_and_shape_methods_follow_tfp(config):
    flow = make(config)
    assert isinstance(flow.dtype, tf.DType) and flow.dtype == config.dtype
    for dtype in (flow.forward_dtype(), flow.inverse_dtype()):
        assert isinstance(dtype, tf.DType) and dtype == config.dtype
    assert flow.forward_min_event_ndims == flow.inverse_min_event_ndims == event_ndims(config)
    for shape in (config.event_shape, (5, *config.event_shape)):
        assert flow.forward_event_shape(shape) == shape
        assert flow.inverse_event_shape(shape) == shape
        np.testing.assert_array_equal(flow.forward_event_shape_tensor(shape), shape)
        np.testing.assert_array_equal(flow.inverse_event_shape_tensor(shape), shape)
    x, kwargs = inputs(config)
    y = flow.forward(x, **kwargs)
    assert y.dtype == config.dtype and y.shape == x.shape
    fldj = flow.forward_log_det_jacobian(fc.fresh(x), event_ndims(config), **kwargs)
    assert fldj.dtype == config.dtype and fldj.shape == (BATCH,)


@per_config
def test_chain_with_tfp_bijectors_and_another_flow(config):
    flow, other = make(config, "flow"), make(config, "other", seed=2)
    shift, scale = (
        tfb.Shift(tf.constant(0.5, config.dtype)),
        tfb.Scale(tf.constant(1.5, config.dtype)),
    )
    chain = tfb.Chain([shift, flow, scale, other])  # `other` is applied first
    assert chain.forward_dtype() == config.dtype
    x, kwargs = inputs(config)
    routed = {"flow": kwargs, "other": kwargs}  # tfb.Chain routes keyword arguments by name
    expected = shift.forward(flow.forward(scale.forward(other.forward(x, **kwargs)), **kwargs))
    y = chain.forward(x, **routed)
    np.testing.assert_allclose(y, expected, **tol(config))
    np.testing.assert_allclose(chain.inverse(fc.fresh(y), **routed), x, **tol(config))
    n = event_ndims(config)
    expected_fldj = (
        other.forward_log_det_jacobian(fc.fresh(x), n, **kwargs)
        + np.log(1.5) * np.prod(config.event_shape)
        + flow.forward_log_det_jacobian(scale.forward(other.forward(x, **kwargs)), n, **kwargs)
    )
    np.testing.assert_allclose(
        chain.forward_log_det_jacobian(fc.fresh(x), n, **routed), expected_fldj, **tol(config)
    )
    np.testing.assert_allclose(
        chain.inverse_log_det_jacobian(fc.fresh(y), n, **routed), -expected_fldj, **tol(config)
    )


@per_config
def test_invert(config):
    flow = make(config)
    inverted = tfb.Invert(flow)
    assert inverted.forward_dtype() == config.dtype
    y, kwargs = inputs(config)
    n = event_ndims(config)
    np.testing.assert_allclose(
        inverted.forward(y, **kwargs), flow.inverse(fc.fresh(y), **kwargs), **tol(config)
    )
    np.testing.assert_allclose(
        inverted.forward_log_det_jacobian(fc.fresh(y), n, **kwargs),
        flow.inverse_log_det_jacobian(fc.fresh(y), n, **kwargs),
        **tol(config),
    )
    x = inverted.forward(fc.fresh(y), **kwargs)
    np.testing.assert_allclose(inverted.inverse(fc.fresh(x), **kwargs), y, **tol(config))


@per_config
def test_transformed_distribution_batched_and_unbatched_bases(config):
    flow = make(config)
    _, kwargs = inputs(config)
    bk = {"bijector_kwargs": kwargs}
    e = config.event_shape

    batched = tfd.TransformedDistribution(base_distribution(config), flow)
    z = batched.sample(2, seed=(1, 2), **bk)  # the context [3, ...] broadcasts to [2, 3, ...]
    assert z.shape == (2, BATCH, *e) and z.dtype == config.dtype
    log_q = batched.log_prob(z, **bk)  # cached: the forward pass's log-det
    assert log_q.shape == (2, BATCH)
    np.testing.assert_allclose(batched.log_prob(fc.fresh(z), **bk), log_q, **tol(config))
    eps = flow.inverse(fc.fresh(z), **kwargs)
    expected = batched.distribution.log_prob(eps) + flow.inverse_log_det_jacobian(
        fc.fresh(z), len(e), **kwargs
    )
    np.testing.assert_allclose(log_q, expected, **tol(config))

    unbatched = tfd.TransformedDistribution(base_distribution(config, batch=()), flow)
    z = unbatched.sample(BATCH, seed=(3, 4), **bk)  # one sample per context row
    assert z.shape == (BATCH, *e)
    np.testing.assert_allclose(
        unbatched.log_prob(fc.fresh(z), **bk), unbatched.log_prob(z, **bk), **tol(config)
    )


@per_config
def test_joint_distribution_posterior(config):
    flow = make(config)
    _, kwargs = inputs(config)
    bound = flow.with_context(kwargs["context"]) if kwargs else flow
    q_z = tfd.TransformedDistribution(base_distribution(config), bound)
    for joint in (
        tfd.JointDistributionNamed({"z": q_z}),
        tfd.JointDistributionSequential([q_z, lambda z: tfd.Independent(tfd.Normal(z, 1.0), 1)]),
    ):
        sample = joint.sample(seed=(5, 6))
        z = sample["z"] if isinstance(sample, dict) else sample[0]
        assert z.shape == (BATCH, *config.event_shape)
        expected = tfd.TransformedDistribution(base_distribution(config), flow).log_prob(
            fc.fresh(z), bijector_kwargs=kwargs
        )
        if isinstance(sample, dict):
            np.testing.assert_allclose(joint.log_prob(sample), expected, **tol(config))
        else:
            np.testing.assert_allclose(joint.log_prob_parts(sample)[0], expected, **tol(config))


@per_config
def test_empty_batch(config):
    flow = make(config)
    x, kwargs = inputs(config, batch=(0,))
    n = event_ndims(config)
    y = flow.forward(x, **kwargs)
    x_back = flow.inverse(fc.fresh(y), **kwargs)
    assert y.shape == x_back.shape == x.shape
    assert flow.forward_log_det_jacobian(fc.fresh(x), n, **kwargs).shape == (0,)
    assert flow.inverse_log_det_jacobian(fc.fresh(y), n, **kwargs).shape == (0,)
    q = tfd.TransformedDistribution(base_distribution(config, batch=(0,)), flow)
    assert q.log_prob(fc.fresh(y), bijector_kwargs=kwargs).shape == (0,)


def _everything(flow, config, x, kwargs):
    """Forward values and log-det, `log_prob` through the inverse, and both gradients."""
    q = tfd.TransformedDistribution(base_distribution(config), flow)
    with tf.GradientTape() as forward_tape:
        y = flow.forward(x, **kwargs)
        fldj = flow.forward_log_det_jacobian(x, event_ndims(config), **kwargs)
        forward_loss = tf.reduce_sum(y) + tf.reduce_sum(fldj)
    with tf.GradientTape() as inverse_tape:
        log_q = q.log_prob(tf.identity(y), bijector_kwargs=kwargs)  # the sequential inverse
    return {
        "y": y,
        "fldj": fldj,
        "log_q": log_q,
        "d_forward/dvars": forward_tape.gradient(forward_loss, flow.trainable_variables),
        "d_log_q/dvars": inverse_tape.gradient(log_q, flow.trainable_variables),
    }


# XLA compiles (10-35 s per configuration on 2 cores) and SavedModels (3-13 s: the traces of
# `sample` and `log_prob`, the sequential inverse's loop among them) of every configuration are
# the `slow` tier's (`make test-slow`, run by CI) but these four, which `make test` checks: one
# configuration of each dense kind (MADE, linear, dense stack, planar), together both dtypes,
# context and none, the affine and the gated update. Every other check runs every configuration
# in `make test`.
COMPILED_IN_MAIN = (
    "made-left-to-right-affine-ctx-float32",
    "linear-left-to-right-affine-ctx-float64",
    "dense_stack-gated-ctx-float32",
    "planar-noctx-float64",
)
assert set(COMPILED_IN_MAIN) <= {c.id for c in CONFORMANCE}
per_compiled_config = pytest.mark.parametrize(
    "config",
    [
        pytest.param(c, id=c.id, marks=[] if c.id in COMPILED_IN_MAIN else [pytest.mark.slow])
        for c in CONFORMANCE
    ],
)


@per_compiled_config
def test_eager_function_and_xla_agree_values_and_gradients(config):
    flow = make(config)
    x, kwargs = inputs(config)
    eager = _everything(flow, config, x, kwargs)
    for jit in (False, True):
        compiled = tf.function(lambda x, kw: _everything(flow, config, x, kw), jit_compile=jit)
        result = compiled(x, kwargs)
        for key, value in eager.items():
            if isinstance(value, list | tuple):
                assert all(g is not None for g in value), key
                for g_eager, g in zip(value, result[key], strict=True):
                    np.testing.assert_allclose(g, g_eager, rtol=2e-3, atol=2e-3, err_msg=key)
            else:
                np.testing.assert_allclose(result[key], value, **tol(config), err_msg=key)


@per_config
def test_bijective_and_finite(config):
    """TFP's `assert_bijective_and_finite` contract, at large values (the domain is all of R^n)."""
    flow = make(config)
    x, kwargs = inputs(config)
    y, _ = inputs(config, seed=7)
    # A conv inverse's passes feed their rounding forward (fc.sequential_tolerance): at 4x the
    # inputs, oneDNN's float32 convolutions (CPUs with AMX) measured 2.5e-4.
    conv = config.kind.startswith("conv")
    fc.assert_bijective_and_finite(
        flow,
        4.0 * x,
        4.0 * y,
        kwargs,
        event_ndims(config),
        config.dtype,
        tol=fc.sequential_tolerance(config.dtype) if conv else None,
    )


@per_config
def test_per_unit_log_dets_sum_to_the_log_dets_and_log_prob(config, monkeypatch):
    """`forward/inverse_unit_log_det_jacobian` and `unit_log_prob`: shapes, sums, and free after
    `sample` (TFP's cache): no network pass between the sample and its per-unit log-density."""
    if config.kind == "planar":
        pytest.skip("a planar step's Jacobian is not triangular: no per-unit log-dets exist")
    flow = make(config)
    x, kwargs = inputs(config)
    n = event_ndims(config)
    units = flow.forward_unit_log_det_jacobian(x, **kwargs)
    assert units.shape == x.shape and units.dtype == config.dtype
    fldj = flow.forward_log_det_jacobian(fc.fresh(x), n, **kwargs)
    np.testing.assert_allclose(tf.reduce_sum(units, axis=list(range(-n, 0))), fldj, **tol(config))
    y = flow.forward(x, **kwargs)
    inverse_units = flow.inverse_unit_log_det_jacobian(fc.fresh(y), **kwargs)  # sequential
    np.testing.assert_allclose(inverse_units, -units, **tol(config))

    q = tfd.TransformedDistribution(base_distribution(config), flow)
    z = q.sample(seed=3, bijector_kwargs=kwargs)
    passes = []
    for network in flow.networks:
        for method in ("call", "sequential_solve"):
            original = getattr(network, method)

            def counted(*args, _original=original, **kw):
                passes.append(1)
                return _original(*args, **kw)

            monkeypatch.setattr(network, method, counted)
    log_q_units = tfp_iaf.unit_log_prob(q, z, kwargs)
    assert passes == [], "the per-unit terms of a sample must come from the cache"
    assert log_q_units.shape == z.shape
    np.testing.assert_allclose(
        tf.reduce_sum(log_q_units, axis=list(range(-n, 0))),
        q.log_prob(fc.fresh(z), bijector_kwargs=kwargs),  # through the inverse
        **tol(config),
    )


@per_compiled_config
def test_saved_model_round_trip(config, tmp_path):
    flow = make(config)
    x, kwargs = inputs(config)
    event = [None, *config.event_shape]
    context_spec = (
        []
        if config.context_shape is None
        else [tf.TensorSpec([None, *config.context_shape], config.dtype)]
    )

    class Posterior(tf.Module):
        def __init__(self, flow):
            super().__init__()
            self.flow = flow

        def _q(self, context):
            kw = {} if context is None else {"context": context}
            return tfd.TransformedDistribution(base_distribution(config), self.flow), kw

        @tf.function(input_signature=[tf.TensorSpec(event, config.dtype), *context_spec])
        def log_prob(self, z, context=None):
            q, kw = self._q(context)
            return q.log_prob(z, bijector_kwargs=kw)

        @tf.function(input_signature=[tf.TensorSpec([2], tf.int32), *context_spec])
        def sample(self, seed, context=None):
            q, kw = self._q(context)
            return q.sample(seed=seed, bijector_kwargs=kw)

    module = Posterior(flow)
    args = list(kwargs.values())
    tf.saved_model.save(module, str(tmp_path / "posterior"))
    loaded = tf.saved_model.load(str(tmp_path / "posterior"))
    seed = tf.constant([4, 2])
    np.testing.assert_allclose(
        loaded.sample(seed, *args), module.sample(seed, *args), **tol(config)
    )
    np.testing.assert_allclose(loaded.log_prob(x, *args), module.log_prob(x, *args), **tol(config))


@per_config
def test_checkpoint_round_trip(config, tmp_path):
    flow = make(config)
    x, kwargs = inputs(config)
    path = tf.train.Checkpoint(flow=flow).write(str(tmp_path / "ckpt"))
    restored = make(config, seed=9)  # other weights until restored
    assert not np.allclose(restored.forward(x, **kwargs), flow.forward(fc.fresh(x), **kwargs))
    tf.train.Checkpoint(flow=restored).read(path).assert_consumed()
    # The same weights and the same ops: bit for bit.
    np.testing.assert_array_equal(
        restored.forward(fc.fresh(x), **kwargs), flow.forward(fc.fresh(x), **kwargs)
    )
    np.testing.assert_array_equal(
        restored.inverse(fc.fresh(x), **kwargs), flow.inverse(fc.fresh(x), **kwargs)
    )


def test_the_conformance_selection_covers_the_registry():
    """Every kind with and without context, every order and update, both dtypes."""
    for name in KINDS:
        assert {c.context for c in CONFORMANCE if c.kind == name} == {False, True}, name
    for field in ("order", "update", "dtype"):
        shipped = {
            getattr(Config(k, o, u, False, d), field)
            for k, kind in KINDS.items()
            for o, u, d in itertools.product(kind.orders, kind.updates, DTYPES)
        }
        assert {getattr(c, field) for c in CONFORMANCE} == shipped, field
    for name, kind in KINDS.items():  # each of a kind's updates, and a conv kind's orders
        assert {c.update for c in CONFORMANCE if c.kind == name} >= set(CHECKLIST_UPDATES) & set(
            kind.updates
        ), name
        if name.startswith("conv"):
            assert {c.order for c in CONFORMANCE if c.kind == name} == set(kind.orders), name


# Cases the checklist's configurations do not reach, each a way a flow can fail.


def test_gated_conv_inverse_is_exact_where_feeding_back_unsolved_positions_overflows():
    """Passes that feed back every position, solved or not, overflow one to inf here, and
    0 x inf through a masked weight turns the solved positions into NaN; the inverse feeds back
    solved positions only."""
    net = tfp_iaf.ConvMADE((4, 4, 2), [8, 8], order="raster", dtype="float64")
    flow = tfp_iaf.InverseAutoregressiveFlow(net, gated=True)
    x = tf.constant(np.random.default_rng(0).standard_normal([3, 4, 4, 2]))
    flow.forward(x)
    rng = np.random.default_rng(1)
    for v in flow.trainable_variables:  # set, not perturbed: independent of the initializers
        v.assign(0.35 * rng.standard_normal(v.shape))
    _, log_gate = flow.shift_and_log_scale(x)
    assert tf.reduce_min(log_gate) > -4.0  # well conditioned at the solution
    y = flow.forward(fc.fresh(x))
    naive = tf.zeros_like(y)  # passes that feed back every position, solved or not
    for _ in range(net.num_inverse_passes):
        shift, log_scale = flow._scale(net(naive))
        naive = (y - shift) * tf.exp(-log_scale)
    assert not np.all(np.isfinite(naive))
    np.testing.assert_allclose(flow.inverse(fc.fresh(y)), x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "network",
    [
        lambda: tfp_iaf.ConvMADE((2, 2, 2), [4], order="raster_reversed", fast_inverse=False),
        lambda: tfp_iaf.ConvMADE((2, 2, 3), [6], order="channel", fast_inverse=False),
    ],
    ids=["conv_raster_reversed", "conv_channel"],
)
def test_sequential_solve_never_feeds_back_an_unsolved_position(network, monkeypatch):
    """The network sees, at pass k, the solved positions (degree among the k lowest) and zeros."""
    net = network()
    flow = tfp_iaf.InverseAutoregressiveFlow(net, gated=True)
    y = tf.random.normal([2, *net.event_shape], seed=1)
    flow.forward(y)
    seen = []
    call = net.call
    monkeypatch.setattr(net, "call", lambda x, context=None: seen.append(x) or call(x, context))
    flow.inverse(fc.fresh(y))
    levels = np.unique(net.degrees)
    assert len(seen) == len(levels)
    for k, x in enumerate(seen):
        unsolved = net.degrees >= levels[k]  # not exact before pass k
        assert np.all(x.numpy()[:, unsolved] == 0.0), f"pass {k}"


@pytest.mark.parametrize(
    "update", [{}, {"gated": True}, {"scaled_shift": True}], ids=["affine", "gated", "scaled"]
)
def test_linear_inverse_is_one_triangular_solve_equal_to_the_sequential_solve(update, monkeypatch):
    """`LinearAutoregressive` inverts with no network pass, and agrees with the generic
    pass-by-pass solve, in a permuted order and with a context batch that broadcasts."""
    net = tfp_iaf.LinearAutoregressive(5, context_size=3, order=[3, 1, 4, 0, 2], dtype="float64")
    flow = tfp_iaf.InverseAutoregressiveFlow(net, **update)
    h = tf.random.stateless_normal([2, 1, 3], (1, 2), dtype=tf.float64)
    y = tf.random.stateless_normal([4, 5], (3, 4), dtype=tf.float64)
    flow.forward(y, context=h)
    fc.perturb(net.trainable_variables, scale=0.3)
    calls = []
    call = net.call
    monkeypatch.setattr(net, "call", lambda x, context=None: calls.append(x) or call(x, context))
    x = flow.inverse(fc.fresh(y), context=h)
    assert calls == [] and x.shape == [2, 4, 5]
    generic = functools.partial(tfp_iaf.AutoregressiveNetwork.sequential_solve, net)
    monkeypatch.setattr(net, "sequential_solve", generic)
    np.testing.assert_allclose(flow.inverse(fc.fresh(y), context=h), x, rtol=1e-10, atol=1e-10)
    y_again = flow.forward(fc.fresh(x), context=h)
    np.testing.assert_allclose(y_again, tf.broadcast_to(y, x.shape), atol=1e-10)


def _h5_model(holder: str):
    tf_keras = tfp_iaf.tf_keras

    class FlowLayer(tf_keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.flow = tfp_iaf.dense_iaf_stack(4, 2, [8], context_size=3)

        def call(self, x, h):
            return self.flow.forward(x, context=h)

    class Posterior(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder = tf_keras.layers.Dense(3)
            if holder == "layer":
                self.flow_layer = FlowLayer()
            else:
                self.flow = tfp_iaf.dense_iaf_stack(4, 2, [8], context_size=3)

        def call(self, x):
            h = self.encoder(x)
            return self.flow_layer(x, h) if holder == "layer" else self.flow.forward(x, context=h)

    return Posterior()


@pytest.mark.parametrize("holder", ["layer", "model"])
def test_h5_weights_round_trip(holder, tmp_path):
    """`save_weights("w.h5")` stores layers' weights, and a bijector is no layer: a flow held by a
    tf_keras Model itself is saved through its networks (the model's layers), and inside a layer
    the networks' sublayers give their variables distinct names (not `made_0/kernel_1` twice)."""
    x = tf.random.normal([2, 4], seed=3)
    model = _h5_model(holder)
    model(x)
    fc.perturb(model.trainable_variables)
    names = [v.name for v in model.variables]
    assert len(set(names)) == len(names) == 2 + 12  # encoder; 2 MADEs x 3 layers x 2
    if holder == "model":  # the flow's networks are the model's layers: summary() shows them
        assert [layer.name for layer in model.layers[1:]] == ["made_0", "made_1"]
        assert len(model.trainable_variables) == 14  # not counted twice
    model.save_weights(str(tmp_path / "w.h5"))
    restored = _h5_model(holder)
    restored(x)
    assert not np.allclose(restored(x), model(x))
    restored.load_weights(str(tmp_path / "w.h5"))
    np.testing.assert_array_equal(restored(x), model(x))
