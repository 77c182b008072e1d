"""What every public constructor settles before anything runs: the dtype, random orders, and
the context a `with_context` bijector fixes.

A non-floating dtype is refused by each network and builder at construction, naming `dtype` and
the value (not at the first call, from inside a Keras initializer). A `"random"` order without a
`seed` is drawn from TensorFlow's global seed when one is set, so `tf.random.set_seed` (or
`tf.keras.utils.set_random_seed`) makes it reproducible like any other TF randomness.
`flow.with_context(None)`, or `with_context` of a flow that takes no context, is a ValueError
naming `context`, not TensorFlow's conversion error of None.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfp_iaf

BUILDERS = {
    "MADE": lambda dtype: tfp_iaf.MADE(3, [4], dtype=dtype),
    "ConvMADE": lambda dtype: tfp_iaf.ConvMADE((2, 2, 1), [2], dtype=dtype),
    "LinearAutoregressive": lambda dtype: tfp_iaf.LinearAutoregressive(3, 2, dtype=dtype),
    "dense_iaf_stack": lambda dtype: tfp_iaf.dense_iaf_stack(3, 2, [4], dtype=dtype),
    "conv_iaf_stack": lambda dtype: tfp_iaf.conv_iaf_stack((2, 2, 1), 2, [2], dtype=dtype),
    "PlanarFlow": lambda dtype: tfp_iaf.PlanarFlow(3, dtype=dtype),
}


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
@pytest.mark.parametrize(
    "dtype,shown",
    [("int32", "'int32'"), ("bool", "'bool'"), (tf.int64, r"tf\.int64"), ("junk", "'junk'")],
)
def test_a_dtype_that_is_not_floating_is_refused_at_construction(build, dtype, shown):
    with pytest.raises(TypeError, match=rf"`dtype` must be a floating-point dtype .*got {shown}"):
        build(dtype)


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
@pytest.mark.parametrize("dtype", ["float64", tf.float64, np.float64])
def test_float_dtypes_in_every_spelling_are_accepted(build, dtype):
    assert tf.as_dtype(build(dtype).dtype) == tf.float64


def test_networks_accept_a_mixed_precision_policy_but_not_an_integer_one():
    made = tfp_iaf.MADE(3, [4], dtype="mixed_float16")
    assert (made.compute_dtype, made.variable_dtype) == ("float16", "float32")
    policy = tfp_iaf.tf_keras.mixed_precision.Policy("int32")
    with pytest.raises(TypeError, match=r"`dtype` must be a floating-point dtype .*got <Policy"):
        tfp_iaf.MADE(3, [4], dtype=policy)


RANDOM_STRUCTURES = {
    "MADE_order": lambda: tfp_iaf.MADE(8, [16], order="random").degrees,
    "MADE_hidden_degrees": lambda: tfp_iaf.MADE(8, [16], hidden_degrees="random").layer_degrees[0],
    "LinearAutoregressive": lambda: tfp_iaf.LinearAutoregressive(8, order="random").degrees,
}


@pytest.mark.parametrize("draw", RANDOM_STRUCTURES.values(), ids=RANDOM_STRUCTURES.keys())
@pytest.mark.parametrize(
    "set_seed", [tf.random.set_seed, tf.keras.utils.set_random_seed], ids=["tf", "keras"]
)
def test_a_random_structure_without_a_seed_follows_the_global_seed(draw, set_seed):
    draws = {}
    for global_seed in (1, 1, 2):
        set_seed(global_seed)
        draws.setdefault(global_seed, []).append(draw().tolist())
    assert draws[1][0] == draws[1][1]  # the same global seed, the same structure
    assert draws[2][0] != draws[1][0]  # 8! orders: another seed gives another


def test_an_explicit_seed_wins_and_without_any_seed_draws_are_fresh():
    explicit = []
    for global_seed in (1, 2):
        tf.random.set_seed(global_seed)
        explicit.append(tfp_iaf.MADE(8, [16], order="random", seed=5).degrees.tolist())
    assert explicit[0] == explicit[1]
    tf.random.set_seed(None)  # no global seed
    fresh = {tuple(tfp_iaf.MADE(8, [16], order="random").degrees) for _ in range(5)}
    assert len(fresh) > 1


FLOWS_WITH_CONTEXT = {
    "iaf": lambda ctx: tfp_iaf.InverseAutoregressiveFlow(tfp_iaf.MADE(3, [4], context_size=ctx)),
    "dense_iaf_stack": lambda ctx: tfp_iaf.dense_iaf_stack(3, 2, [4], context_size=ctx),
    "conv_iaf_stack": lambda ctx: tfp_iaf.conv_iaf_stack((2, 2, 1), 2, [2], context_channels=ctx),
    "PlanarFlow": lambda ctx: tfp_iaf.PlanarFlow(3, context_size=ctx),
}


@pytest.mark.parametrize("build", FLOWS_WITH_CONTEXT.values(), ids=FLOWS_WITH_CONTEXT.keys())
def test_with_context_needs_a_context_and_a_flow_that_takes_one(build):
    with pytest.raises(ValueError, match=r"`context` must be a tensor of trailing shape .*None"):
        build(2).with_context(None)
    for context in (None, tf.zeros([2, 2])):
        with pytest.raises(ValueError, match=r"takes no `context` .*use the flow itself; got"):
            build(None).with_context(context)


def test_kernel_blocks_changes_the_storage_not_the_function():
    """`MADE(kernel_blocks=1)` keeps every kernel one block (one matmul a layer); with the same
    seed it computes what the default blocked layout does."""
    x = tf.random.stateless_normal([5, 120], (1, 2))
    blocked = tfp_iaf.MADE(120, [240, 240], seed=3)
    whole = tfp_iaf.MADE(120, [240, 240], kernel_blocks=1, seed=3)
    blocked(x), whole(x)
    assert max(len(layer.blocks) for layer in blocked.masked_layers) > 1
    assert all(len(layer.blocks) == 1 for layer in whole.masked_layers)
    np.testing.assert_allclose(whole(x), blocked(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("context_size", [None, 3])
def test_packed_changes_the_storage_not_the_function(context_size):
    """`MADE(packed=True)` holds each layer's kernel and bias in one variable, the bias its last
    row. With the same seed it starts as the unpacked MADE; with the unpacked MADE's weights
    written in (and noise in every masked entry, which the mask must hide) it computes the same
    outputs and the same sequential inverse."""
    kwargs = dict(context_size=context_size, kernel_blocks=1, seed=3, dtype="float64")
    plain, packed = (
        tfp_iaf.MADE(4, [6, 6], **kwargs),
        tfp_iaf.MADE(4, [6, 6], packed=True, **kwargs),
    )
    x = tf.random.stateless_normal([2, 3, 4], (1, 2), dtype=tf.float64)
    c = (
        None
        if context_size is None
        else tf.random.stateless_normal([3, 3], (3, 4), dtype=tf.float64)
    )
    np.testing.assert_array_equal(plain(x, c), packed(x, c))
    assert [v.name.split("/")[-1] for v in packed.masked_layers[0].weights] == [
        "kernel_and_bias:0"
    ]
    for i, (a, b) in enumerate(zip(plain.masked_layers, packed.masked_layers, strict=True)):
        a.bias.assign(tf.random.stateless_normal(a.bias.shape, (5, i), dtype=tf.float64))
        noise = tf.random.stateless_normal(a.kernels[0].shape, (6, i), dtype=tf.float64) * (
            1 - a.mask
        )
        b.kernel_and_bias.assign(tf.concat([a.kernels[0] + noise, a.bias[None]], axis=0))
    np.testing.assert_allclose(packed(x, c), plain(x, c), rtol=1e-12, atol=1e-12)
    for made in (plain, packed):
        assert made.masked_layers[0].bias_term().shape == [6]

    def solve(net):  # x from y = x + shift(x): the generic sequential solve, through each network
        return net.sequential_solve(x, c, lambda y_i, params: (y_i - params[:, 0], params[:, 1]))

    np.testing.assert_allclose(solve(packed)[0], solve(plain)[0], rtol=1e-12, atol=1e-12)
