"""What every public constructor settles before anything runs: the dtype, and random orders.

A non-floating dtype is refused by each network and builder at construction, naming `dtype` and
the value (not at the first call, from inside a Keras initializer). A `"random"` order without a
`seed` is drawn from TensorFlow's global seed when one is set, so `tf.random.set_seed` (or
`tf.keras.utils.set_random_seed`) makes it reproducible like any other TF randomness.
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
