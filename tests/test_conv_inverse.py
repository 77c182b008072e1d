"""The fast conv inverses (`tfp_iaf.conv_inverse`) equal the naive one, pass for pass.

The naive inverse, `AutoregressiveNetwork.sequential_solve` (`ConvMADE(fast_inverse=False)`),
runs the whole network once per degree; the fast ones compute each unit once. Properties, over
orders x context / residual / weight norm / kernel size x update x dtype x batch shape:
fast == naive, round trips within 1e-5 (float32) / 1e-10 (float64), finite values, and the
fast path is what `InverseAutoregressiveFlow` runs by default. XLA, gradients and the rest of
TFP's contract for conv flows are test_conformance.py's.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfp_iaf
from tests import flow_checks as fc
from tfp_iaf.autoregressive import AutoregressiveNetwork

ORDERS = tfp_iaf.masks.CONV_ORDERS
# (event_shape, filters, network options): context, residual + weight norm, other kernels.
NETWORKS = {
    "ctx": ((2, 3, 2), [4, 4], {"context_channels": 2}),
    "residual-wn": ((2, 2, 3), [6, 6], {"residual": True, "weight_norm": True}),
    "k1-ctx": ((2, 2, 2), [4], {"kernel_size": 1, "context_channels": 1}),
    "k5-c1": ((3, 3, 1), [2, 3], {"kernel_size": 5}),
}
ROUND_TRIP = {tf.float32: 1e-5, tf.float64: 1e-10}


def make_flow(name, order, dtype, gated, fast_inverse=True):
    event_shape, filters, options = NETWORKS[name]
    tfp_iaf.tf_keras.utils.set_random_seed(7)  # tf_keras keeps its own seed generator
    net = tfp_iaf.ConvMADE(
        event_shape, filters, order=order, dtype=dtype.name, fast_inverse=fast_inverse, **options
    )
    flow = tfp_iaf.InverseAutoregressiveFlow(net, gated=gated)
    context = None
    if net.context_shape is not None:
        rng = np.random.default_rng(3)
        context = tf.constant(rng.standard_normal((3, *net.context_shape)), dtype)
    x = tf.zeros([3, *event_shape], dtype)
    flow.forward(x, context=context)
    fc.perturb(flow.trainable_variables, scale=0.3, seed=1)  # random weights, masked ones too
    return flow, context


def solve_fn(flow):
    def solve(y, params):
        shift, log_scale = flow._scale(params)
        return (y - shift) * tf.exp(-log_scale), log_scale

    return solve


UPDATES = [(False, tf.float32), (True, tf.float64), (True, tf.float32), (False, tf.float64)]
# Every order and every network meets each (update, dtype) once: a Latin square, 16 cases.
CASES = [
    (order, name, *UPDATES[(i + j) % len(UPDATES)])
    for i, order in enumerate(ORDERS)
    for j, name in enumerate(NETWORKS)
]


@pytest.mark.parametrize(
    ("order", "name", "gated", "dtype"),
    CASES,
    ids=[f"{o}-{n}-{'gated' if g else 'affine'}-{d.name}" for o, n, g, d in CASES],
)
def test_fast_inverse_equals_naive_and_round_trips(order, name, gated, dtype):
    flow, context = make_flow(name, order, dtype, gated)
    net = flow.network
    rng = np.random.default_rng(5)
    x = tf.constant(rng.standard_normal((3, *net.event_shape)), dtype)
    y = flow.forward(x, context=context)
    solve = solve_fn(flow)
    fast = net.sequential_solve(y, context, solve)
    naive = AutoregressiveNetwork.sequential_solve(net, y, context, solve)
    fc.assert_finite(x_fast=fast[0], log_scale_fast=fast[1])
    tol = fc.strict_tolerance(dtype)
    for a, b, what in zip(fast, naive, ("x", "log_scale"), strict=True):
        np.testing.assert_allclose(a, b, **tol, err_msg=f"fast {what} == naive {what}")
    bound = ROUND_TRIP[dtype]
    np.testing.assert_allclose(fast[0], x, rtol=bound, atol=bound, err_msg="x -> y -> x")
    y_back = flow.forward(fast[0], context=context)
    np.testing.assert_allclose(y_back, y, rtol=bound, atol=bound, err_msg="y -> x -> y")
    _, log_scale = flow.shift_and_log_scale(x, context)
    np.testing.assert_allclose(fast[1], log_scale, **tol, err_msg="log-scales at the solution")


@pytest.mark.parametrize("batch", [(), (3,), (2, 3), (0,), (2, 0)], ids=str)
@pytest.mark.parametrize("order", ["raster", "channel_reversed"])
def test_fast_inverse_batch_shapes_and_broadcast_context(order, batch):
    """`y` of any batch shape; the context `[3, ...]` broadcasts against it (or is broadcast)."""
    flow, context = make_flow("ctx", order, tf.float64, gated=True)
    net = flow.network
    y = tf.constant(np.random.default_rng(2).standard_normal((*batch, *net.event_shape)))
    if batch in [(), (0,)]:
        context = context[0]  # unbatched: broadcasts against y
    elif batch == (2, 0):
        context = context[:1]
    solve = solve_fn(flow)
    fast = net.sequential_solve(y, context, solve)
    naive = AutoregressiveNetwork.sequential_solve(net, y, context, solve)
    expected = tf.broadcast_static_shape(y.shape[: len(batch)], context.shape[:-3])
    for a, b in zip(fast, naive, strict=True):
        assert a.shape == expected.concatenate(net.event_shape) and a.dtype == y.dtype
        np.testing.assert_allclose(a, b, **fc.strict_tolerance(tf.float64))


@pytest.mark.parametrize("order", ORDERS)
def test_the_bijector_runs_the_fast_inverse_by_default(order, monkeypatch):
    """No full network pass: the fast inverse never calls the network; `fast_inverse=False`
    runs one per degree, with the same result."""
    flow, context = make_flow("ctx", order, tf.float64, gated=False)
    naive_flow, _ = make_flow("ctx", order, tf.float64, gated=False, fast_inverse=False)
    y = tf.constant(np.random.default_rng(4).standard_normal((3, *flow.network.event_shape)))
    calls = []
    for net in (flow.network, naive_flow.network):
        call = net.call
        monkeypatch.setattr(
            net,
            "call",
            lambda x, context=None, net=net, call=call: calls.append(net) or call(x, context),
        )
    fast = flow.inverse(fc.fresh(y), context=context)
    assert calls == []
    naive = naive_flow.inverse(fc.fresh(y), context=context)
    assert len(calls) == naive_flow.network.num_inverse_passes
    np.testing.assert_allclose(fast, naive, **fc.strict_tolerance(tf.float64))
