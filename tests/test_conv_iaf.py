"""Conv-specific tests of MaskedConv2D, ConvMADE and conv_iaf_stack: exact reach of the masks,
receptive fields, weight norm, stacks. The properties every network kind shares (round trips,
log-dets, triangular Jacobians, gradients) are test_iaf.py's checklist; argument errors are in
test_errors.py; TFP conformance (XLA, SavedModel, checkpoints) is test_conformance.py's."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests import flow_checks as fc
from tests.test_conv_masks import mask_reach
from tfp_iaf import conv_made, layers, stacks
from tfp_iaf import masks as conv_masks
from tfp_iaf.conv_made import ConvMADE
from tfp_iaf.layers import MaskedConv2D
from tfp_iaf.stacks import conv_iaf_stack

tfd = tfp.distributions

ORDERS = conv_masks.CONV_ORDERS
SHAPES = [(4, 4, 3), (3, 5, 2)]
CONTEXT_CHANNELS = 2


def make_context(event_shape, batch_shape, dtype, seed=1):
    shape = (*batch_shape, *event_shape[:2], CONTEXT_CHANNELS)
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def make_network(event_shape, order, context, **kwargs):
    """A built float64 ConvMADE with perturbed weights, and the keyword arguments of its call."""
    net = ConvMADE(
        event_shape,
        [2 * event_shape[2]] * 2,
        context_channels=CONTEXT_CHANNELS if context else None,
        order=order,
        dtype="float64",
        **kwargs,
    )
    call_kwargs = {"context": make_context(event_shape, (), "float64")} if context else {}
    net(tf.zeros(event_shape, tf.float64), **call_kwargs)  # build
    fc.perturb(net.trainable_variables)
    return net, call_kwargs


@pytest.mark.parametrize("context", [False, True], ids=["no_ctx", "ctx"])
@pytest.mark.parametrize("event_shape", SHAPES, ids=str)
@pytest.mark.parametrize("order", ORDERS)
def test_network_jacobian_zero_where_order_forbids(order, event_shape, context):
    net, kwargs = make_network(event_shape, order, context)
    x = tf.random.stateless_normal([2, *event_shape], seed=[1, 2], dtype=tf.float64)
    # Non-zero exactly where some path of open taps connects output and input.
    n = np.prod(event_shape)
    reach = mask_reach([layer.mask for layer in net.masked_layers], event_shape)
    fc.assert_autoregressive(net, x, kwargs, reach.reshape(n, net.num_params, n))


def test_network_jacobian_residual_and_weight_norm():
    event_shape = (3, 5, 2)
    net, kwargs = make_network(event_shape, "raster", True, residual=True, weight_norm=True)
    x = tf.random.stateless_normal([2, *event_shape], seed=[3, 4], dtype=tf.float64)
    masks = [layer.mask for layer in net.masked_layers]
    reach = mask_reach(masks, event_shape, residual=True).reshape(30, 2, 30)
    fc.assert_autoregressive(net, x, kwargs, reach)


@pytest.mark.parametrize("order", ["raster", "channel"])
def test_receptive_field_reaches_allowed_neighbours(order):
    event_shape = (4, 4, 3)
    net, _ = make_network(event_shape, order, False)
    x = tf.random.stateless_normal([1, *event_shape], seed=[5, 6], dtype=tf.float64)
    jac = fc.event_jacobian(net, x, event_ndims=3).reshape(*event_shape, 2, *event_shape)
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
    stack.forward(fc.fresh(x), context=h)  # builds (a fresh tensor: the bijector caches x)
    # Weights set directly (not by an optimizer), masked entries included. (Much larger noise
    # makes the map so ill-conditioned that float64 round trips lose digits, masks or not.)
    fc.perturb(stack.trainable_variables, scale=0.3, seed=3)
    jac = fc.assert_flow_properties(stack, x, {"context": h}, fc.strict_tolerance(tf.float64))
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
    assert len(variables) == 2 * (3 * 3 + 1)  # per step: 3 convs x (kernel, g, bias) + context
    fc.assert_every_variable_gets_a_gradient(tape, loss, variables, "log_prob of a sample")


def test_weight_norm_is_exact_per_output_channel():
    mask = conv_masks.conv_kernel_mask(3, [1, 2], [0, 0, 1, 1], "channel")
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


@pytest.mark.parametrize("module", [conv_masks, layers, conv_made, stacks])
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"np": np, "tf": tf})
    assert result.attempted > 0 and result.failed == 0
