"""The authors' reference behaviour as options: their Adamax, their loss units, their IAF init.

`make_optimizer(kind="reference")`, `ResNetVAE(loss_units="nats_sum")` and
`ResNetVAE(iaf_init="reference")` against openai/iaf (`tf_utils/adamax.py`, `tf_train.py`,
`tf_utils/layers.py`); the defaults unchanged.
"""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
import vae_harness as harness
from tests import flow_checks as fc
from tfp_iaf import tf_keras
from tfp_iaf.vae import ResNetVAE

tfd = tfp.distributions

LR, B1, B2 = 0.002, 0.9, 0.999
# Gradients of very different sizes, one below both optimizers' eps.
GRADS = [np.array([1e-9, 0.5, -3.0], np.float32), np.array([2e-9, -0.1, 1.0], np.float32)]


def _path(opt, grads, init=0.0) -> list[np.ndarray]:
    var = tf.Variable(np.full(len(grads[0]), init, np.float32))
    path = []
    for g in grads:
        opt.apply_gradients([(tf.constant(g), var)])
        path.append(var.numpy().copy())
    return path


def test_reference_adamax_first_update_has_no_bias_correction():
    """First step `-lr (1 - b1) g / max(|g|, eps)`, eps = 1e-8 inside the running maximum
    (`u <- max(b2 u + eps, |g|)`, as openai/iaf's Adamax): a tenth of Keras's first step."""
    first = _path(harness.make_optimizer(LR, None, kind="reference"), GRADS[:1])[0]
    g = GRADS[0].astype(np.float64)
    np.testing.assert_allclose(first, -LR * (1 - B1) * g / np.maximum(np.abs(g), 1e-8), rtol=1e-5)
    np.testing.assert_allclose(first[1:], -LR * 0.1 * np.sign(g[1:]), rtol=1e-5)


def test_adamax_is_keras_adamax():
    ours = _path(harness.make_optimizer(LR, None, kind="adamax"), GRADS)
    keras = _path(tf_keras.optimizers.Adamax(LR, epsilon=1e-7), GRADS)
    np.testing.assert_allclose(ours, keras, rtol=1e-6)
    # Bias-corrected: the first step is `lr g / (|g| + 1e-7)`.
    g = GRADS[0].astype(np.float64)
    np.testing.assert_allclose(ours[0], -LR * g / (np.abs(g) + 1e-7), rtol=1e-5)


def test_clipping_and_debiased_averaging_work_for_both_kinds():
    big, small = np.array([3.0, 4.0], np.float32), np.array([0.3, 0.4], np.float32)
    # Reference: the first gradient is clipped to norm 1 before it enters `m` and `u`.
    path = _path(harness.make_optimizer(LR, None, clip_norm=1.0, kind="reference"), [big, small])
    m, u, w = np.zeros(2), np.zeros(2), np.zeros(2)
    for g in (big / 5.0, small):
        m = B1 * m + (1 - B1) * g
        u = np.maximum(B2 * u + 1e-8, np.abs(g))
        w = w - LR * m / u
    np.testing.assert_allclose(path[-1], w, rtol=1e-5)
    keras = _path(tf_keras.optimizers.Adamax(LR, epsilon=1e-7, global_clipnorm=1.0), [big, small])
    ours = _path(harness.make_optimizer(LR, None, clip_norm=1.0, kind="adamax"), [big, small])
    np.testing.assert_allclose(ours, keras, rtol=1e-6)
    for kind in ("adamax", "reference"):
        # The average's first update uses decay min(d, 1/10): 0.1 * init + 0.9 * w_1.
        opt = harness.make_optimizer(LR, ema_momentum=0.998, kind=kind)
        var = tf.Variable(np.ones(2, np.float32))
        opt.apply_gradients([(tf.constant(big), var)])
        w1 = var.numpy().copy()
        opt.finalize_variable_values([var])
        np.testing.assert_allclose(var.numpy(), 0.1 * 1.0 + 0.9 * w1, rtol=1e-6)


def test_unknown_optimizer_kind_is_an_error():
    with pytest.raises(ValueError, match=r"`kind` must be one of .*; got 'adam'"):
        harness.make_optimizer(0.01, kind="adam")


def _tiny(**kwargs) -> ResNetVAE:
    tf_keras.utils.set_random_seed(1)
    return ResNetVAE((8, 8, 3), hidden_size=4, z_size=2, depth=1, num_blocks=1, **kwargs)


def _pixels(batch: int = 16, seed: int = 0) -> tf.Tensor:
    return tf.random.stateless_uniform([batch, 8, 8, 3], [seed, 0], maxval=256, dtype=tf.int32)


def test_loss_units_only_rescale_the_gradient():
    """`nats_sum` is the batch's sum in nats: `batch * dims * log 2` times the bits/dim mean."""
    x, seed = _pixels(batch=6), tf.constant([4, 5])
    grads, values = {}, {}
    for units in ("bits_per_dim", "nats_sum"):
        model = _tiny(loss_units=units)
        model.initialize(x)
        with tf.GradientTape() as tape:
            loss, values[units] = model._step(x, seed)
        grads[units] = tape.gradient(loss, model.trainable_variables)
    factor = 6 * 8 * 8 * 3 * math.log(2.0)
    np.testing.assert_allclose(values["nats_sum"]["loss"], values["bits_per_dim"]["loss"] * factor)
    for name in ("bits_per_dim", "elbo", "kl"):  # the reported metrics do not change
        np.testing.assert_allclose(values["nats_sum"][name], values["bits_per_dim"][name])
    for g_nats, g_bits in zip(grads["nats_sum"], grads["bits_per_dim"], strict=True):
        expected = g_bits * factor  # float32 sums: rounding relative to the largest entry
        np.testing.assert_allclose(g_nats, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_unknown_loss_units_is_an_error():
    with pytest.raises(ValueError, match=r"`loss_units` must be one of .*; got 'bits'"):
        ResNetVAE(loss_units="bits")


@pytest.mark.parametrize("value", ["openai", None])
def test_unknown_iaf_init_is_an_error(value):
    with pytest.raises(
        ValueError, match=rf"`iaf_init` must be one of \('default', 'reference'\); got {value!r}"
    ):
        _tiny(iaf_init=value)


def _first_layer_inputs(model: ResNetVAE, x: tf.Tensor):
    """The first layer's flow input `z0` (its base sample), context and output `z` on the pass
    that `initialize` ran (the `call` seed)."""
    seed = tf.constant([model.seed, 0])
    _, _, outputs = model.forward(x, seed)
    out = outputs[0]
    base = tfd.Independent(tfd.Normal(out.posterior_loc, tf.exp(out.posterior_log_scale)), 3)
    z0 = base.sample(seed=model._seeds(seed)[0])
    return z0, out.posterior_context, out.z


def test_reference_init_scales_and_normalises_the_ar_network():
    model = _tiny(iaf_init="reference", iaf_gated=False)
    x = _pixels()
    model.initialize(x)
    flow = model.blocks[0].flow
    z0, context, z = _first_layer_inputs(model, x)
    np.testing.assert_array_equal(flow.forward(z0, context=context), z)  # the pass we rebuilt
    step = flow.steps[0]
    net = step.network
    assert net.context_layer is None and all(layer.weight_norm for layer in net.masked_layers)
    # The data-dependent init: the first masked conv's pre-activations have mean 0 and standard
    # deviation 1 per channel on the init batch, and so does the output conv's.
    first = net.masked_layers[0](z0)
    mean, var = tf.nn.moments(first, axes=[0, 1, 2])
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(tf.sqrt(var), 1.0, rtol=1e-3)
    # The context is added as it is, and the AR outputs are the output conv's times 0.1.
    hidden = tf.nn.elu(net.masked_layers[1](tf.nn.elu(first + context)))
    raw = net.masked_layers[2](hidden)
    mean, var = tf.nn.moments(raw, axes=[0, 1, 2])
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(tf.sqrt(var), 1.0, rtol=1e-3)
    params = net(z0, context=context)
    np.testing.assert_allclose(params, 0.1 * tf.reshape(raw, params.shape), rtol=1e-6, atol=1e-7)
    # Affine steps without the tanh bound: the log-scale is the network's output itself.
    shift, log_scale = step.shift_and_log_scale(z0, context)
    np.testing.assert_array_equal(shift, params[..., 0])
    np.testing.assert_array_equal(log_scale, params[..., 1])


def test_reference_flow_is_invertible_with_a_triangular_jacobian():
    model = _tiny(iaf_init="reference", iaf_gated=False)
    x = _pixels(batch=3)
    model.initialize(x)
    flow = model.blocks[0].flow
    z0, context, _ = _first_layer_inputs(model, x)
    fc.perturb(flow.trainable_variables, scale=0.3, seed=2)
    fc.assert_flow_properties(
        flow,
        z0,
        {"context": context},
        fc.sequential_tolerance(tf.float32),
        degrees=flow.steps[0].network.degrees,
    )


def test_default_init_is_unchanged():
    x = _pixels(batch=4)
    model = _tiny(iaf_steps=2, iaf_gated=False)
    model.initialize(x)  # builds: the weights are drawn here, after `_tiny`'s seeding
    same = _tiny(iaf_steps=2, iaf_gated=False, iaf_init="default")
    same.initialize(x)
    np.testing.assert_array_equal(model(x), same(x))
    for step in model.blocks[0].flow.steps:
        net = step.network
        assert net.context_layer is not None and net.output_scale == 1.0
        assert not any(layer.weight_norm for layer in net.masked_layers)
        b = tf.constant([-20.0, 0.0, 20.0])
        _, log_scale = step._scale(tf.stack([tf.zeros(3), b], axis=-1))  # affine: bounded
        np.testing.assert_allclose(log_scale, 5.0 * np.tanh(b / 5.0), rtol=1e-6, atol=1e-7)


def test_weight_normed_iaf_networks_are_initialised_by_initialize():
    """`initialize` reaches the masked convs of `iaf_weight_norm=True` networks too (the
    network holding them is not itself a layer to initialise)."""
    model = _tiny(iaf_weight_norm=True)
    model.initialize(_pixels(batch=4))
    net = model.blocks[0].flow.steps[0].network
    assert not any(layer.initializing for layer in net.masked_layers)
    assert not np.allclose(net.masked_layers[0].scale, 1.0)  # set from the data


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"output_scale": 0.0}, ValueError, "`output_scale` must be a finite positive number"),
        ({"output_scale": "0.1"}, TypeError, "`output_scale` must be a finite positive number"),
        (
            {"output_init_scale": -1.0, "weight_norm": True},
            ValueError,
            "`output_init_scale` must be a finite positive number; got -1.0",
        ),
        (
            {"output_init_scale": 1.0},
            ValueError,
            "`output_init_scale` needs `weight_norm=True`; got output_init_scale=1.0",
        ),
        (
            {"project_context": False, "context_channels": 3},
            ValueError,
            r"`context_channels` must equal filters\[0\]=4; got 3",
        ),
    ],
)
def test_conv_made_reference_options_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        tfp_iaf.ConvMADE((4, 4, 2), [4, 4], **kwargs)


def test_conv_made_output_scale_and_unprojected_context():
    kwargs = {"context_channels": 4, "weight_norm": True}
    x = tf.random.stateless_normal([2, 4, 4, 2], seed=[1, 2])
    c = tf.random.stateless_normal([2, 4, 4, 4], seed=[3, 4])
    outputs = []
    for output_scale in (1.0, 0.1):
        tf_keras.utils.set_random_seed(3)  # the weights are drawn at the first call
        net = tfp_iaf.ConvMADE(
            (4, 4, 2), [4, 4], output_init_scale=1.0, output_scale=output_scale, **kwargs
        )
        outputs.append(net(x, context=c))
    np.testing.assert_allclose(outputs[1], 0.1 * outputs[0], rtol=1e-5, atol=1e-7)
    direct = tfp_iaf.ConvMADE((4, 4, 2), [4, 4], project_context=False, **kwargs)
    assert direct.context_layer is None
    first = direct.masked_layers[0]
    direct(x, context=c)
    expected = first(x) + c  # no projection: the context joins the first layer as it is
    hidden = direct.masked_layers[1](direct.activation(expected))
    out = direct.masked_layers[2](direct.activation(hidden))
    np.testing.assert_allclose(direct(x, context=c), tf.reshape(out, [2, 4, 4, 2, 2]), rtol=1e-6)
    # The inverse (both solvers, both orders) undoes a forward step through the scaled outputs.
    for fast, order in itertools.product((True, False), ("raster", "channel")):
        tf_keras.utils.set_random_seed(5)
        net = tfp_iaf.ConvMADE(
            (4, 4, 2),
            [4, 4],
            order=order,
            output_scale=0.1,
            fast_inverse=fast,
            project_context=False,
            **kwargs,
        )
        net(x, context=c)  # builds the weights, so that they can be perturbed
        fc.perturb(net.trainable_variables, seed=1)
        step = tfp_iaf.InverseAutoregressiveFlow(net, log_scale_bound=None)
        y = step.forward(x, context=c)
        np.testing.assert_allclose(step.inverse(fc.fresh(y), context=c), x, atol=1e-4)
