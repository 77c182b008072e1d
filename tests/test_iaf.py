"""InverseAutoregressiveFlow: one property checklist over every network kind, then dense tests.

The checklist (zuko's tests/test_flows.py style) runs `flow_checks.assert_flow_properties` over
the registry's IAF steps (tests/configs.py: MADE, LinearAutoregressive, ConvMADE in raster and
channel orders) x update x context x batch shape x dtype. Conv-specific tests (masks, receptive
fields, weight norm) are in test_conv_iaf.py; what every TFP use needs (Chain,
TransformedDistribution, tf.function and XLA, SavedModel and checkpoints, empty batches) is in
test_conformance.py.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
from tests import flow_checks as fc
from tests.configs import CONTEXT, DENSE_ORDERS, EVENT, IAF_STEP_KINDS, Config, checklist_cases
from tfp_iaf.autoregressive import ContextProjection

tfb, tfd = tfp.bijectors, tfp.distributions


def case_id(config, batch, context):
    return "-".join(
        [config.id, *(["broadcast"] if context == "ctx_broadcast" else []), str(batch)]
    )


@pytest.mark.parametrize(
    "config,batch,context",
    [
        pytest.param(config, batch, context, id=case_id(config, batch, context))
        for config, batch, context in checklist_cases(IAF_STEP_KINDS)
    ],
)
def test_iaf_properties(config, batch, context):
    """Round trips, fldj == -ildj, slogdet, a triangular Jacobian, shapes, gradients."""
    tfp_iaf.tf_keras.utils.set_random_seed(1)
    iaf = config.build()
    network, dtype = iaf.network, config.dtype
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((*batch, *network.event_shape)), dtype)
    kwargs = {}
    if context:
        context_batch = batch[1:] if context == "ctx_broadcast" else batch
        h = rng.standard_normal((*context_batch, *network.context_shape))
        kwargs["context"] = tf.constant(h, dtype)
    network(x, **kwargs)  # builds the variables (not the bijector: it would cache x)
    fc.perturb(iaf.trainable_variables)
    assert iaf.forward_min_event_ndims == network.event_ndims
    tol = (
        fc.sequential_tolerance(dtype)
        if config.kind.startswith("conv")
        else fc.strict_tolerance(dtype)
    )
    fc.assert_flow_properties(iaf, x, kwargs, tol, network.degrees)


# Dense-specific tests.


def make_iaf(gated=False, context=True, dtype=tf.float32, order=DENSE_ORDERS[0]):
    tfp_iaf.tf_keras.utils.set_random_seed(1)
    iaf = Config("made", order, "gated" if gated else "affine", context, dtype).build()
    iaf.forward(tf.zeros([EVENT], dtype), **inputs((), dtype, context)[1])  # builds the variables
    fc.perturb(iaf.trainable_variables)
    return iaf


def inputs(batch, dtype, context, seed=0):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((*batch, EVENT)), dtype)
    kwargs = (
        {"context": tf.constant(rng.standard_normal((*batch, CONTEXT)), dtype)} if context else {}
    )
    return x, kwargs


@pytest.mark.parametrize("order", DENSE_ORDERS, ids=["l2r", "r2l", "perm"])
@pytest.mark.parametrize("context", [False, True])
def test_made_is_autoregressive_with_full_reach(order, context):
    iaf = make_iaf(context=context, order=order)
    x, kwargs = inputs((5,), tf.float32, context)
    degrees = iaf.network.degrees
    fc.assert_autoregressive(
        iaf.network, x, kwargs, expected_reach=degrees[None, :] < degrees[:, None]
    )


def test_made_stays_autoregressive_for_any_weights_unlike_tfp():
    """Noise added straight to the kernels: our masks hold, TFP's constraint-based ones do not."""
    made = tfp_iaf.MADE(EVENT, [8, 8])
    made(tf.zeros([1, EVENT]))
    fc.perturb(made.trainable_variables, scale=0.3)  # masked entries too
    x, _ = inputs((5,), tf.float32, False)
    fc.assert_autoregressive(made, x, {})
    iaf = tfp_iaf.InverseAutoregressiveFlow(made)
    fc.assert_flow_properties(iaf, x, {}, fc.tolerance(tf.float32), made.degrees)

    # The same check catches TFP's AutoregressiveNetwork, which masks through a constraint.
    tfp_made = tfb.AutoregressiveNetwork(params=2, event_shape=[EVENT], hidden_units=[8, 8])
    tfp_made(tf.zeros([1, EVENT]))
    fc.perturb(tfp_made.trainable_variables, scale=1.0)
    tfp_made.degrees = np.arange(1, EVENT + 1)
    tfp_made.num_params = 2
    tfp_made.event_ndims = 1
    with pytest.raises(AssertionError, match="forbids"):
        fc.assert_autoregressive(tfp_made, x, {})


def test_inverse_passes_equal_distinct_degrees():
    assert tfp_iaf.MADE(6, [8]).num_inverse_passes == 6
    assert tfp_iaf.LinearAutoregressive(3).num_inverse_passes == 3


@pytest.mark.slow
@pytest.mark.parametrize("gated", [False, True])
def test_log_prob_integrates_to_one(gated):
    """E_r[q(z) / r(z)] = 1 for a wide Gaussian proposal r: a Monte-Carlo normalisation check."""
    tfp_iaf.tf_keras.utils.set_random_seed(2)
    net = tfp_iaf.MADE(2, [16, 16], dtype="float64")
    iaf = tfp_iaf.InverseAutoregressiveFlow(net, gated=gated)
    iaf.forward(tf.zeros([2], tf.float64))
    fc.perturb(iaf.trainable_variables, scale=0.5)
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2, tf.float64)), iaf)
    proposal = tfd.MultivariateStudentTLinearOperator(
        df=tf.constant(3.0, tf.float64),
        loc=tf.zeros(2, tf.float64),
        scale=tf.linalg.LinearOperatorDiag(tf.constant([3.0, 3.0], tf.float64)),
    )
    z = proposal.sample(400_000, seed=5)
    weights = tf.exp(q.log_prob(z) - proposal.log_prob(z))
    mean = tf.reduce_mean(weights).numpy()
    stderr = tf.math.reduce_std(weights).numpy() / np.sqrt(z.shape[0])
    assert abs(mean - 1.0) < max(4 * stderr, 0.01), (mean, stderr)


@pytest.mark.parametrize("gated", [False, True])
def test_agrees_with_tfp_invert_maf(gated):
    """Given the same shift/log-scale function, our IAF equals Invert(MaskedAutoregressiveFlow)."""
    iaf = make_iaf(gated=gated, context=False, dtype=tf.float64)

    def maf_fn(x):
        # MAF's inverse is (x - s) * exp(-l); choose (s, l) so that it equals shift + exp(ls) * x.
        shift, log_scale = iaf.shift_and_log_scale(x)
        return -shift * tf.exp(-log_scale), -log_scale

    tfp_iaf_ = tfb.Invert(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=maf_fn))
    x, _ = inputs((5,), tf.float64, False)
    y = iaf.forward(fc.fresh(x))
    np.testing.assert_allclose(tfp_iaf_.forward(fc.fresh(x)), y, rtol=1e-10)
    np.testing.assert_allclose(tfp_iaf_.inverse(fc.fresh(y)), iaf.inverse(fc.fresh(y)), rtol=1e-9)
    np.testing.assert_allclose(
        tfp_iaf_.forward_log_det_jacobian(fc.fresh(x), 1),
        iaf.forward_log_det_jacobian(fc.fresh(x), 1),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        tfp_iaf_.inverse_log_det_jacobian(fc.fresh(y), 1),
        iaf.inverse_log_det_jacobian(fc.fresh(y), 1),
        rtol=1e-9,
    )


def test_log_scale_is_bounded():
    """Huge network outputs give finite values, |log sigma| < bound, and exact round trips."""
    iaf = make_iaf(dtype=tf.float64, context=False)
    for v in iaf.network.masked_layers[-1].trainable_variables:
        v.assign(v * 1e3)  # raw log-scales in the hundreds: exp would overflow without a bound
    x, _ = inputs((5,), tf.float64, False)
    shift, log_scale = iaf.shift_and_log_scale(x)
    assert np.all(np.abs(log_scale) <= 5.0) and np.all(np.isfinite(shift))
    assert np.max(np.abs(log_scale)) > 4.0  # the bound is active, not merely unreached
    y = iaf.forward(fc.fresh(x))
    assert np.all(np.isfinite(y))
    # Such a map is badly conditioned, so check the inverse's residual, not its forward error.
    x_back = iaf.inverse(fc.fresh(y))
    assert np.all(np.isfinite(x_back))
    np.testing.assert_allclose(iaf.forward(fc.fresh(x_back)), y, rtol=1e-9)
    np.testing.assert_allclose(iaf.forward_log_det_jacobian(x, 1), tf.reduce_sum(log_scale, -1))


def test_untrained_flow_is_near_identity():
    iaf = tfp_iaf.InverseAutoregressiveFlow(tfp_iaf.MADE(EVENT, [8, 8], context_size=CONTEXT))
    x, kwargs = inputs((5,), tf.float32, True)
    np.testing.assert_allclose(iaf.forward(x, **kwargs), x, atol=0.05)


def test_gated_update_matches_paper_formula():
    iaf = make_iaf(gated=True, context=False, dtype=tf.float64)
    x, _ = inputs((5,), tf.float64, False)
    m, s = tf.unstack(iaf.network(x), axis=-1)
    g = tf.sigmoid(s + 2.0)
    np.testing.assert_allclose(iaf.forward(fc.fresh(x)), g * x + (1 - g) * m, rtol=1e-12)
    np.testing.assert_allclose(
        iaf.forward_log_det_jacobian(fc.fresh(x), 1),
        tf.reduce_sum(tf.math.log_sigmoid(s + 2.0), -1),
        rtol=1e-12,
    )


def stack_and_inputs(**kwargs):
    tfp_iaf.tf_keras.utils.set_random_seed(4)
    stack = tfp_iaf.dense_iaf_stack(EVENT, 3, [8, 8], context_size=CONTEXT, **kwargs)
    x, ctx = inputs((5,), tf.float32, True)
    stack.forward(fc.fresh(x), **ctx)  # builds (a fresh tensor: the bijector caches x)
    return stack, x, ctx


@pytest.mark.parametrize("gated", [False, True])
def test_stack_properties(gated):
    stack, x, ctx = stack_and_inputs(gated=gated)
    fc.perturb(stack.trainable_variables, scale=0.2)
    fc.assert_flow_properties(stack, x, ctx, fc.strict_tolerance(tf.float32))
    orders = [tuple(step.network.degrees) for step in stack.steps]
    assert orders[0] == (1, 2, 3, 4) and orders[1] == (4, 3, 2, 1) and orders[2] == orders[0]
    # The single context reaches every step: changing it changes every step's output.
    h2 = {"context": ctx["context"] + 1.0}
    for step in stack.steps:
        assert not np.allclose(step.forward(fc.fresh(x), **ctx), step.forward(fc.fresh(x), **h2))
    # The stack equals its steps applied in order, with summed log-dets.
    y, ldj = fc.fresh(x), 0.0
    for step in stack.steps:
        ldj += step.forward_log_det_jacobian(y, 1, **ctx)
        y = step.forward(y, **ctx)
    np.testing.assert_allclose(stack.forward(fc.fresh(x), **ctx), y, rtol=1e-5)
    np.testing.assert_allclose(
        stack.forward_log_det_jacobian(fc.fresh(x), 1, **ctx), ldj, rtol=1e-5
    )


def test_every_variable_gets_a_gradient():
    stack, _, ctx = stack_and_inputs()
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(EVENT)), stack)
    with tf.GradientTape() as tape:
        z = q.sample(seed=1, bijector_kwargs=ctx)
        loss = tf.reduce_sum(q.log_prob(z, bijector_kwargs=ctx) + tf.reduce_sum(z**2, -1))
    layers = [
        layer
        for step in stack.steps
        for layer in step.network.submodules
        if isinstance(layer, tfp_iaf.MaskedDense | ContextProjection)
    ]
    variables = stack.trainable_variables
    assert len(variables) == sum(len(layer.trainable_variables) for layer in layers)
    fc.assert_every_variable_gets_a_gradient(tape, loss, variables, "log_prob of a sample")


def test_keras_model_owning_the_stack_trains_every_variable():
    class Posterior(tfp_iaf.tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder = tfp_iaf.tf_keras.layers.Dense(CONTEXT)
            self.flow = tfp_iaf.dense_iaf_stack(EVENT, 2, [8, 8], context_size=CONTEXT)

        def call(self, x):
            h = self.encoder(x)
            q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(EVENT)), self.flow)
            z = q.sample(seed=2, bijector_kwargs={"context": h})
            return q.log_prob(z, bijector_kwargs={"context": h}) + tf.reduce_sum(z**2, -1)

    model = Posterior()
    x = tf.random.normal([16, 5])
    model(x)
    assert len(model.trainable_variables) == 2 + len(model.flow.trainable_variables)
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer = tfp_iaf.tf_keras.optimizers.Adam(1e-2)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(x))
    optimizer.apply_gradients(
        zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True)
    )
    for b, v in zip(before, model.trainable_variables, strict=True):
        assert np.any(b != v.numpy()), v.name


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event_size": 5, "hidden_units": [9, 7]},
        {"event_size": 5, "hidden_units": [8, 8, 8], "residual": True, "order": "random"},
        {"event_size": 5, "hidden_units": [6, 11], "hidden_degrees": "random", "seed": 3},
        {"event_size": 1, "hidden_units": [4]},
    ],
    ids=["unequal-widths", "residual", "random-degrees", "event-size-1"],
)
@pytest.mark.parametrize("gated", [False, True])
def test_made_incremental_inverse_matches_full_passes(kwargs, gated):
    """MADE's one-pass-of-work inverse equals the generic loop of full network passes."""
    tfp_iaf.tf_keras.utils.set_random_seed(5)
    net = tfp_iaf.MADE(context_size=2, dtype="float64", **kwargs)
    iaf = tfp_iaf.InverseAutoregressiveFlow(net, gated=gated)
    d = kwargs["event_size"]
    rng = np.random.default_rng(0)
    y = tf.constant(rng.standard_normal((3, 4, d)), tf.float64)
    h = tf.constant(rng.standard_normal((4, 2)), tf.float64)  # broadcasts against y's batch
    net(y, context=h)
    fc.perturb(net.trainable_variables, scale=0.3)

    def solve(y, params):
        shift, log_scale = iaf._scale(params)
        return (y - shift) * tf.exp(-log_scale), log_scale

    fast = net.sequential_solve(y, h, solve)
    generic = tfp_iaf.AutoregressiveNetwork.sequential_solve(net, y, h, solve)
    for a, b in zip(fast, generic, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(iaf.forward(fast[0], context=h), y, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("order", ["left-to-right", "right-to-left", "random"])
def test_blocked_kernels_compute_the_masked_product(order):
    """The block-sparse kernel equals x @ (kernel * mask) with the assembled kernel. Kernels of
    `MIN_BLOCKED_SIZE` (2**13) entries or more are blocked, smaller ones stay whole."""
    net = tfp_iaf.MADE(9, [16, 128, 128], order=order, seed=0, dtype="float64")
    x = tf.constant(np.random.default_rng(1).standard_normal((5, 9)))
    net(x)
    fc.perturb(net.trainable_variables)
    h = x
    for layer in net.masked_layers:
        full = layer.masked_kernel().numpy()
        assert np.all(full[layer.mask == 0] == 0)
        np.testing.assert_allclose(
            layer(h), h.numpy() @ full + layer.bias.numpy(), rtol=1e-12, atol=1e-14
        )
        h = tf.nn.elu(layer(h))
    # Hidden degrees are sorted in every order: the zero triangle is not stored.
    assert [len(layer.blocks) > 1 for layer in net.masked_layers] == [False, False, True, False]
