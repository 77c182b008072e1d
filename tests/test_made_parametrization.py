"""MADE(parametrization="ntk"): the same function at initialisation, smaller steps per weight."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_iaf
from tests.flow_checks import assert_flow_properties, perturb

LAYOUTS = [
    {"packed": True, "kernel_blocks": 1},
    {"packed": False, "kernel_blocks": 1},
    {"packed": False, "kernel_blocks": 4},
]
IDS = ["packed", "one-block", "four-blocks"]


def pair(layout, **kwargs):
    """A standard and an ntk MADE with the same seed, both built on the same input."""
    nets = [
        tfp_iaf.MADE(7, [12, 10], parametrization=p, seed=4, **layout, **kwargs)
        for p in ("standard", "ntk")
    ]
    x = tf.random.stateless_normal([5, 7], (3, 4))
    for net in nets:
        net(x)
    return nets, x


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_ntk_computes_the_same_function_at_initialisation(layout):
    (standard, ntk), x = pair(layout)
    np.testing.assert_allclose(ntk(x), standard(x), rtol=1e-5, atol=1e-6)
    for a, b in zip(standard.masked_layers, ntk.masked_layers, strict=True):
        fan_in = a.mask.shape[0]
        assert b.multiplier == pytest.approx(1 / np.sqrt(fan_in))
        np.testing.assert_allclose(b.masked_kernel(), a.masked_kernel(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_a_stored_kernel_s_gradient_is_the_multiplier_times_the_standard_one(layout):
    """So one Adam step (about the rate on every stored weight) moves a pre-activation
    `sqrt(fan_in)` times less than in the standard parametrisation."""
    (standard, ntk), x = pair(layout)
    grads = {}
    for net in (standard, ntk):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(net(x)))
        variables = net.trainable_variables
        grads.update(
            zip((v.ref() for v in variables), tape.gradient(loss, variables), strict=True)
        )
    for a, b in zip(standard.masked_layers, ntk.masked_layers, strict=True):
        c = b.multiplier
        for va, vb in zip(a.trainable_variables, b.trainable_variables, strict=True):
            g_std, g_ntk = grads[va.ref()], grads[vb.ref()]
            if "kernel_and_bias" in vb.name:  # packed: the bias row is not multiplied
                np.testing.assert_allclose(g_ntk[:-1], c * g_std[:-1], rtol=1e-4, atol=1e-7)
                np.testing.assert_allclose(g_ntk[-1], g_std[-1], rtol=1e-4, atol=1e-7)
            elif "kernel" in vb.name:
                np.testing.assert_allclose(g_ntk, c * g_std, rtol=1e-4, atol=1e-7)
            else:
                np.testing.assert_allclose(g_ntk, g_std, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
def test_an_iaf_on_an_ntk_made_passes_the_property_checklist(dtype):
    """Round trips (the sequential inverse reads the multiplied kernels), log-dets, triangular."""
    made = tfp_iaf.MADE(
        6, [10, 10], order="right-to-left", parametrization="ntk", dtype=dtype.name, seed=0
    )
    iaf = tfp_iaf.InverseAutoregressiveFlow(made)
    x = tf.random.stateless_normal([4, 6], (5, 6), dtype=dtype)
    iaf.forward(x)
    perturb(iaf.trainable_variables, scale=0.3)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == tf.float32 else {"rtol": 1e-10, "atol": 1e-10}
    assert_flow_properties(iaf, x, {}, tol, degrees=made.degrees)


def test_the_fingerprint_names_the_parametrization_only_when_ntk():
    """A standard MADE's fingerprint is the one today's checkpoints were written with."""
    default = tfp_iaf.MADE(5, [8, 8])._fingerprint()
    assert tfp_iaf.MADE(5, [8, 8], parametrization="standard")._fingerprint() == default
    assert "parametrization" not in default
    assert (
        tfp_iaf.MADE(5, [8, 8], parametrization="ntk")._fingerprint()["parametrization"] == "ntk"
    )


def test_a_surrogate_s_default_is_ntk_and_standard_stays_available():
    q = tfp_iaf.vi.build_iaf_surrogate_posterior([4], seed=0)
    q.sample(seed=(1, 2))
    mades = [m for m in q.submodules if isinstance(m, tfp_iaf.MADE)]
    assert mades and all(m.parametrization == "ntk" for m in mades)
    q = tfp_iaf.vi.build_iaf_surrogate_posterior([4], parametrization="standard", seed=0)
    assert all(
        m.parametrization == "standard" for m in q.submodules if isinstance(m, tfp_iaf.MADE)
    )


def test_a_bad_parametrization_names_the_argument_and_the_value():
    with pytest.raises(ValueError, match=r"`parametrization` must be one of .*got 'mup'"):
        tfp_iaf.MADE(5, [8], parametrization="mup")
    with pytest.raises(ValueError, match=r"`parametrization` must be one of .*got 'mup'"):
        tfp_iaf.vi.build_iaf_surrogate_posterior([4], parametrization="mup")


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_masked_dense_refuses_a_multiplier_that_is_not_positive_and_finite(value):
    with pytest.raises(ValueError, match=r"`multiplier` must be a finite positive number"):
        tfp_iaf.layers.MaskedDense(np.ones([3, 2]), multiplier=value)
