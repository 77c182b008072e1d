"""MADE(allow_narrow=True): hidden layers narrower than `D - 1`, still autoregressive."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_iaf
from tests.flow_checks import assert_autoregressive, assert_flow_properties, perturb


def expected_reach(made) -> np.ndarray:
    """`[out, in]`: the output of degree `d` sees exactly the inputs of degree `<= m_1`, with
    `m_L` the last hidden layer's largest degree below `d` and each `m_l` the largest degree of
    layer `l` not above `m_{l+1}` (MADE's docstring)."""
    degrees = made.degrees
    reach = np.zeros([degrees.size, degrees.size], bool)
    for out, d in enumerate(degrees):
        m = d - 1  # strictly below the output's degree
        for layer in reversed(made.layer_degrees):
            below = layer[layer <= m]
            m = below.max() if below.size else 0
        reach[out] = degrees <= m
    return reach


@pytest.mark.parametrize(
    "hidden_units,order,method",
    [
        ([4, 4], "left-to-right", "equal"),
        ([5, 3], "right-to-left", "equal"),
        ([3, 6], [3, 0, 7, 1, 10, 4, 2, 11, 9, 5, 8, 6], "equal"),
        ([4, 4], "left-to-right", "random"),
    ],
)
def test_narrow_layers_stay_autoregressive_and_lose_only_what_the_docstring_says(
    hidden_units, order, method
):
    made = tfp_iaf.MADE(
        12, hidden_units, order=order, hidden_degrees=method, allow_narrow=True, seed=3
    )
    x = tf.random.stateless_normal([3, 12], (1, 2))
    made(x)
    perturb(made.trainable_variables, scale=0.5)
    reach = expected_reach(made)
    assert 0 < reach.sum() < (made.degrees[:, None] > made.degrees[None, :]).sum()
    assert_autoregressive(made, x, {}, expected_reach=reach)


def test_with_equal_widths_an_output_loses_at_most_ceil_d_over_h_minus_one_inputs():
    made = tfp_iaf.MADE(100, [16, 16], allow_narrow=True)
    reach = expected_reach(made)
    allowed = made.degrees[:, None] > made.degrees[None, :]
    assert np.max(np.sum(allowed & ~reach, axis=1)) == int(np.ceil(99 / 16)) - 1


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
def test_an_iaf_on_a_narrow_made_passes_the_property_checklist(dtype):
    """Round trips (the sequential inverse skips degrees no unit has), log-dets, triangular."""
    made = tfp_iaf.MADE(
        9, [3, 3], order="right-to-left", allow_narrow=True, dtype=dtype.name, seed=0
    )
    iaf = tfp_iaf.InverseAutoregressiveFlow(made)
    x = tf.random.stateless_normal([4, 9], (5, 6), dtype=dtype)
    iaf.forward(x)
    perturb(iaf.trainable_variables, scale=0.3)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == tf.float32 else {"rtol": 1e-10, "atol": 1e-10}
    assert_flow_properties(iaf, x, {}, tol, degrees=made.degrees)


def test_the_fingerprint_names_allow_narrow_only_where_a_layer_is_narrow():
    wide = tfp_iaf.MADE(5, [8, 8])
    assert tfp_iaf.MADE(5, [8, 8], allow_narrow=True)._fingerprint() == wide._fingerprint()
    assert "allow_narrow" not in wide._fingerprint()
    narrow = tfp_iaf.MADE(5, [3, 3], allow_narrow=True)._fingerprint()
    assert narrow["allow_narrow"] is True


def test_allow_narrow_must_be_a_bool():
    with pytest.raises(TypeError, match=r"`allow_narrow` must be a bool; got 1"):
        tfp_iaf.MADE(5, [3], allow_narrow=1)
    with pytest.raises(ValueError, match=r"at least 4 units \(event_size - 1\), or `allow_narrow"):
        tfp_iaf.MADE(5, [3])
