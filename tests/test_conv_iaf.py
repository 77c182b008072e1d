"""Tests for MaskedConv2D, ConvMADE, conv IAF steps and conv_iaf_stack: properties via autodiff."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests import flow_checks as fc
from tests.test_conv_masks import mask_reach
from tfp_iaf import conv_layers, conv_masks, conv_networks
from tfp_iaf.conv_layers import MaskedConv2D
from tfp_iaf.conv_networks import ConvMADE, conv_iaf_stack
from tfp_iaf.iaf import InverseAutoregressiveFlow

tfd = tfp.distributions

ORDERS = conv_masks.CONV_ORDERS
SHAPES = [(4, 4, 3), (3, 5, 2)]
CONTEXT_CHANNELS = 2


def filters_for(event_shape):
    return [2 * event_shape[2], 2 * event_shape[2]]


def make_context(event_shape, batch_shape, dtype, seed=1):
    shape = (*batch_shape, *event_shape[:2], CONTEXT_CHANNELS)
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def make_iaf(event_shape, order, context, dtype="float64", gated=False, **kwargs):
    net = ConvMADE(
        event_shape,
        filters_for(event_shape),
        context_channels=CONTEXT_CHANNELS if context else None,
        order=order,
        dtype=dtype,
        **kwargs,
    )
    iaf = InverseAutoregressiveFlow(net, gated=gated)
    h = make_context(event_shape, (), dtype) if context else None
    net(tf.zeros(event_shape, dtype), context=h)  # build
    fc.perturb(net.trainable_variables)
    return iaf, net, h


def flat_jacobian(fn, x):
    """`d fn(x) / d x` per batch element, both flattened: `[B, out_size, in_size]`."""
    return fc.event_jacobian(fn, fc.fresh(x), event_ndims=3)


def allowed_pattern(degrees):
    """`allowed[o, i]`: output position `o` may depend on input position `i` (degree below)."""
    d = degrees.reshape(-1)
    return d[:, None] > d[None, :]


@pytest.mark.parametrize("context", [False, True], ids=["no_ctx", "ctx"])
@pytest.mark.parametrize("event_shape", SHAPES, ids=str)
@pytest.mark.parametrize("order", ORDERS)
def test_network_jacobian_zero_where_order_forbids(order, event_shape, context):
    _, net, h = make_iaf(event_shape, order, context)
    x = tf.random.stateless_normal([2, *event_shape], seed=[1, 2], dtype=tf.float64)
    jac = flat_jacobian(lambda v: net(v, context=h), x)  # [B, N * P, N]
    n = np.prod(event_shape)
    jac = jac.reshape(2, n, net.num_params, n)
    forbidden = ~allowed_pattern(net.degrees)
    assert np.all(jac[:, forbidden[:, None, :].repeat(net.num_params, 1)] == 0.0)
    # Non-zero exactly where some path of open taps connects output and input.
    masks = [layer.mask for layer in net.masked_layers]
    reach = mask_reach(masks, event_shape).reshape(n, net.num_params, n)
    np.testing.assert_array_equal(np.abs(jac).max(axis=0) > 0, reach)


def test_network_jacobian_residual_and_weight_norm():
    event_shape = (3, 5, 2)
    _, net, h = make_iaf(event_shape, "raster", True, residual=True, weight_norm=True)
    x = tf.random.stateless_normal([2, *event_shape], seed=[3, 4], dtype=tf.float64)
    jac = flat_jacobian(lambda v: net(v, context=h), x).reshape(2, 30, 2, 30)
    masks = [layer.mask for layer in net.masked_layers]
    reach = mask_reach(masks, event_shape, residual=True).reshape(30, 2, 30)
    np.testing.assert_array_equal(np.abs(jac).max(axis=0) > 0, reach)
    assert not np.any(reach & ~allowed_pattern(net.degrees)[:, None, :])


@pytest.mark.parametrize("order", ["raster", "channel"])
def test_receptive_field_reaches_allowed_neighbours(order):
    event_shape = (4, 4, 3)
    _, net, _ = make_iaf(event_shape, order, False)
    x = tf.random.stateless_normal([1, *event_shape], seed=[5, 6], dtype=tf.float64)
    jac = flat_jacobian(net, x).reshape(*event_shape, 2, *event_shape)
    i, j = 2, 1
    if order == "raster":
        for di, dj in [(-1, -1), (-1, 0), (-1, 1), (0, -1)]:  # the first kernel's open taps
            assert np.all(jac[i, j, :, :, i + di, j + dj, :] != 0), (di, dj)
        assert np.all(jac[i, j, 2, :, i, j, :2] != 0)  # earlier channels, same position
        assert np.all(jac[i, j, :, :, i + 1, j, :] == 0)  # the row below
    else:
        for di, dj in itertools.product([-1, 0, 1], repeat=2):  # every tap, channel c' < c
            assert np.all(jac[i, j, 2, :, i + di, j + dj, :2] != 0), (di, dj)
            assert np.all(jac[i, j, 1, :, i + di, j + dj, 0] != 0), (di, dj)
        assert np.all(jac[i, j, 0] == 0) and np.all(jac[i, j, 1, :, :, :, 1:] == 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("gated", [False, True], ids=["affine", "gated"])
@pytest.mark.parametrize("order", ORDERS)
def test_iaf_jacobian_triangular_and_logdet_is_slogdet(order, gated, dtype):
    event_shape = (3, 5, 2) if order.endswith("reversed") else (4, 4, 3)
    iaf, net, h = make_iaf(event_shape, order, context=gated, dtype=dtype, gated=gated)
    x = tf.random.stateless_normal([3, *event_shape], seed=[7, 8], dtype=dtype)
    jac = flat_jacobian(lambda v: iaf.forward(v, context=h), x)
    n = jac.shape[-1]
    allowed = allowed_pattern(net.degrees) | np.eye(n, dtype=bool)
    assert np.all(jac[:, ~allowed] == 0.0)
    # Sorted by degree (channel-major for "channel"), the Jacobian is lower triangular.
    perm = np.argsort(net.degrees.reshape(-1), kind="stable")
    assert np.all(np.triu(jac[:, perm][:, :, perm], k=1) == 0.0)
    sign, logdet = np.linalg.slogdet(jac)
    fldj = iaf.forward_log_det_jacobian(tf.identity(x), context=h).numpy()
    assert np.all(sign == 1.0)
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(fldj, logdet, rtol=tol, atol=tol)
    assert np.max(np.abs(fldj)) > 0.1  # the perturbed weights make it non-trivial


COMBOS = list(itertools.product([False, True], [False, True], ["float32", "float64"]))


def _cases(shapes, orders, batch_shapes, cycle_batch):
    """Shape x order (x batch shape unless `cycle_batch`), with gated, context, dtype (and the
    batch shape, if `cycle_batch`) cycling so that every value and every combo appears."""
    cases = []
    if cycle_batch:
        grid = [
            (s, o, batch_shapes[k % 3])
            for k, (s, o) in enumerate(itertools.product(shapes, orders))
        ]
    else:
        grid = list(itertools.product(shapes, orders, batch_shapes))
    for k, (shape, order, batch) in enumerate(grid):
        gated, context, dtype = COMBOS[k % len(COMBOS)]
        name = f"{shape}-{order}-{batch}-{'gated' if gated else 'affine'}-{context}-{dtype}"
        cases.append(pytest.param(shape, order, batch, gated, context, dtype, id=name))
    return cases


def _check_round_trips(event_shape, order, batch_shape, gated, context, dtype):
    iaf, _, _ = make_iaf(event_shape, order, context, dtype=dtype, gated=gated)
    # The context's batch shape is the trailing part of x's, to exercise broadcasting.
    h = make_context(event_shape, batch_shape[1:], dtype) if context else None
    x = tf.random.stateless_normal([*batch_shape, *event_shape], seed=[9, 10], dtype=dtype)
    y = iaf.forward(x, context=h)
    assert y.shape == x.shape and y.dtype == x.dtype
    y_fresh = fc.fresh(y)  # one inverse serves x_back and the ildj (cached with this tensor)
    x_back = iaf.inverse(y_fresh, context=h)
    y_back = iaf.forward(iaf.inverse(fc.fresh(x), context=h), context=h)
    tol = 2e-4 if dtype == "float32" else 1e-10
    for value in (y, x_back, y_back):
        assert np.all(np.isfinite(value.numpy()))
    np.testing.assert_allclose(x_back, x, atol=tol)
    np.testing.assert_allclose(y_back, x, atol=tol)
    fldj = iaf.forward_log_det_jacobian(x, context=h)
    ildj = iaf.inverse_log_det_jacobian(y_fresh, context=h)
    assert fldj.shape == batch_shape and fldj.dtype == x.dtype
    np.testing.assert_allclose(fldj, -ildj, atol=tol)
    assert np.max(np.abs(fldj)) > 0.1
    assert iaf.forward_min_event_ndims == 3


ROUND_TRIP_ARGS = "event_shape,order,batch_shape,gated,context,dtype"


@pytest.mark.parametrize(ROUND_TRIP_ARGS, _cases(SHAPES, ORDERS, [(), (3,), (2, 3)], True))
def test_round_trips_and_log_dets(event_shape, order, batch_shape, gated, context, dtype):
    _check_round_trips(event_shape, order, batch_shape, gated, context, dtype)


@pytest.mark.slow
@pytest.mark.parametrize(ROUND_TRIP_ARGS, _cases(SHAPES, ORDERS, [(), (3,), (2, 3)], False))
def test_round_trips_every_batch_shape(event_shape, order, batch_shape, gated, context, dtype):
    _check_round_trips(event_shape, order, batch_shape, gated, context, dtype)


@pytest.mark.parametrize(
    "order,gated,context", [("raster", True, True), ("channel_reversed", False, False)]
)
def test_eager_function_and_xla_agree(order, gated, context):
    iaf, _, h = make_iaf((2, 3, 2), order, context, dtype="float32", gated=gated)
    x = tf.random.stateless_normal([2, 2, 3, 2], seed=[11, 12])

    def run(v):
        y = iaf.forward(v, context=h)
        return (
            y,
            iaf.inverse(tf.identity(y), context=h),
            iaf.inverse_log_det_jacobian(tf.identity(y), context=h),
        )

    eager = run(x)
    for fn in (tf.function(run), tf.function(run, jit_compile=True)):
        for a, b in zip(eager, fn(x), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", ["raster", "channel"])
def test_stack_alternates_and_stays_invertible_with_weights_set_directly(order):
    event_shape = (2, 3, 2)
    stack = conv_iaf_stack(
        event_shape,
        3,
        [4],
        context_channels=CONTEXT_CHANNELS,
        order=order,
        gated=True,
        dtype="float64",
    )
    reverse = conv_masks.reversed_order(order)
    assert [s.network.order for s in stack.steps] == [order, reverse, order]
    h = make_context(event_shape, (), "float64")
    x = tf.random.stateless_normal([4, *event_shape], seed=[13, 14], dtype=tf.float64)
    stack.forward(x, context=h)
    # Weights set directly (not by an optimizer), masked entries included. (Much larger noise
    # makes the map so ill-conditioned that float64 round trips lose digits, masks or not.)
    fc.perturb(stack.trainable_variables, scale=0.3, seed=3)
    y = stack.forward(tf.identity(x), context=h)
    np.testing.assert_allclose(stack.inverse(tf.identity(y), context=h), x, atol=1e-8)
    jac = flat_jacobian(lambda v: stack.forward(v, context=h), x)
    _, logdet = np.linalg.slogdet(jac)
    fldj = stack.forward_log_det_jacobian(tf.identity(x), context=h)
    np.testing.assert_allclose(fldj, logdet, atol=1e-9)
    assert np.max(np.abs(np.triu(jac, k=1))) > 0  # the reversed step mixes both ways


def test_untrained_step_is_near_identity_and_every_variable_gets_a_gradient():
    event_shape = (3, 5, 2)
    stack = conv_iaf_stack(
        event_shape, 2, [4, 4], context_channels=CONTEXT_CHANNELS, weight_norm=True
    )
    h = make_context(event_shape, (3,), "float32")
    x = tf.random.stateless_normal([3, *event_shape], seed=[15, 16])
    # Output layers start at about 1e-2 of unit scale (with or without weight normalisation).
    np.testing.assert_allclose(stack.forward(x, context=h), x, atol=0.1)
    dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0.0, 1.0), event_shape), stack)
    with tf.GradientTape() as tape:
        z = dist.sample(3, seed=[1, 2], bijector_kwargs={"context": h})
        loss = -tf.reduce_mean(dist.log_prob(z, bijector_kwargs={"context": h}))
    variables = stack.trainable_variables
    grads = tape.gradient(loss, variables)
    assert len(variables) == 2 * (3 * 3 + 1)  # per step: 3 convs x (kernel, g, bias) + context
    for v, g in zip(variables, grads, strict=True):
        assert g is not None and np.all(np.isfinite(g)), v.name
        assert np.any(g.numpy() != 0), v.name


def test_weight_norm_is_exact_per_output_channel():
    mask = conv_masks.conv_kernel_mask(3, [0, 1], [0, 0, 1, 1], "channel", exclusive=True)
    layer = MaskedConv2D(mask, weight_norm=True, dtype="float64")
    layer.build((None, 4, 4, 2))
    fc.perturb(layer.trainable_variables)
    kernel = layer.masked_kernel().numpy()
    norms = np.sqrt(np.sum(kernel**2, axis=(0, 1, 2)))
    # Group-0 channels see nothing (channel order, exclusive): they stay exactly zero.
    np.testing.assert_array_equal(norms[:2], 0.0)
    np.testing.assert_allclose(norms[2:], np.abs(layer.scale.numpy()[2:]), rtol=1e-12)
    assert np.all(kernel[mask == 0] == 0)
    with tf.GradientTape() as tape:
        y = layer(tf.ones([2, 4, 4, 2], tf.float64))
    grads = tape.gradient(y, layer.trainable_variables)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_masked_conv_handles_batch_shapes():
    mask = conv_masks.conv_kernel_mask(3, [0, 1], [0, 1, 1], "raster")
    layer = MaskedConv2D(mask)
    x = tf.random.normal([2, 3, 4, 5, 2])
    y = layer(x)
    assert y.shape == (2, 3, 4, 5, 3)
    np.testing.assert_allclose(y[1, 2], layer(x[1, 2]), atol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    iaf, net, h = make_iaf((3, 5, 2), "channel", True)
    x = tf.random.stateless_normal([2, 3, 5, 2], seed=[17, 18], dtype=tf.float64)
    path = tf.train.Checkpoint(net=net).save(str(tmp_path / "ckpt"))
    before = iaf.forward(x, context=h).numpy()
    other, other_net, _ = make_iaf((3, 5, 2), "channel", True)
    tf.train.Checkpoint(net=other_net).restore(path).assert_consumed()
    np.testing.assert_array_equal(other.forward(tf.identity(x), context=h), before)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kernel_size=4), r"`kernel_size`.*got 4"),
        (dict(event_shape=(4, 4)), r"`event_shape`.*\(4, 4\)"),
        (dict(event_shape=(4, 4, 3, 1)), r"`event_shape`.*\(4, 4, 3, 1\)"),
        (dict(filters=[6, 5]), r"`filters`.*multiples.*C=3.*\[6, 5\]"),
        (dict(filters=[]), r"`filters`.*non-empty.*\[\]"),
        (dict(order="diagonal"), r"`order`.*'diagonal'"),
        (dict(residual=True, filters=[6, 3]), r"`residual=True`.*\[6, 3\]"),
        (dict(context_channels=0), r"`context_channels`.*got 0"),
        (dict(num_params=0), r"`num_params`.*got 0"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    args = dict(event_shape=(4, 4, 3), filters=[6, 6]) | kwargs
    with pytest.raises(ValueError, match=match):
        ConvMADE(**args)


@pytest.mark.parametrize(
    "context_shape,match",
    [
        ((2, 4, 4, 5), r"`context`.*\(4, 4, 2\).*\(2, 4, 4, 5\)"),
        ((2, 3, 4, 2), r"`context`.*\(4, 4, 2\).*\(2, 3, 4, 2\)"),
    ],
    ids=["channels", "spatial"],
)
def test_bad_context_raises(context_shape, match):
    net = ConvMADE((4, 4, 3), [6], context_channels=2)
    with pytest.raises(ValueError, match=match):
        net(tf.zeros([2, 4, 4, 3]), context=tf.zeros(context_shape))
    iaf = InverseAutoregressiveFlow(net)
    with pytest.raises(ValueError, match=match):
        iaf.inverse(tf.zeros([2, 4, 4, 3]), context=tf.zeros(context_shape))


def test_bad_calls_raise():
    net = ConvMADE((4, 4, 3), [6])
    with pytest.raises(ValueError, match=r"`x` must have event shape \(4, 4, 3\).*\(2, 4, 3, 3\)"):
        net(tf.zeros([2, 4, 3, 3]))
    with pytest.raises(ValueError, match=r"`x` must have event shape \(1, 4, 3\).*\(4, 3\)"):
        ConvMADE((1, 4, 3), [6])(tf.zeros([4, 3]))
    with pytest.raises(ValueError, match=r"`num_steps`.*got 0"):
        conv_iaf_stack((4, 4, 3), 0, [6])
    with pytest.raises(ValueError, match=r"`mask`.*odd k.*\(2, 2, 1, 1\)"):
        MaskedConv2D(np.ones((2, 2, 1, 1)))
    layer = MaskedConv2D(np.ones((3, 3, 2, 1)), name="mc")
    with pytest.raises(ValueError, match=r"`mc` expects 2 input channels.*\(1, 4, 4, 3\)"):
        layer(tf.zeros([1, 4, 4, 3]))
    with pytest.raises(ValueError, match=r"MaskedConv2D `mc2` needs input .*\(4, 3\)"):
        MaskedConv2D(np.ones((3, 3, 3, 1)), name="mc2")(tf.zeros([4, 3]))


@pytest.mark.parametrize("module", [conv_masks, conv_layers, conv_networks])
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"np": np, "tf": tf})
    assert result.attempted > 0 and result.failed == 0
