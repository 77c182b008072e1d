"""Bad input gets a clear error naming the argument and the value.

Every `pytest.raises(..., match=...)` test of tfp_iaf's core errors (networks, masks, layers,
bijectors, stacks) lives here; the VAE helpers' and the examples' errors stay with their tests.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf
from tfp_iaf import masks


def made(**kwargs):
    return tfp_iaf.MADE(**{"event_size": 4, "hidden_units": [8], **kwargs})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_units": []}, r"`hidden_units` must be a non-empty list .*got \[\]"),
        ({"hidden_units": [8, -1]}, r"`hidden_units` .*got \[8, -1\]"),
        (
            {"hidden_units": [8, 2]},
            r"`hidden_units` = \[8, 2\] is too small to connect every "
            r"output for event_size=4: .* at least 3 units",
        ),
        ({"event_size": 0}, "`event_size` must be a positive integer; got 0"),
        ({"context_size": 0}, "`context_size` must be a positive integer or None; got 0"),
        ({"num_params": 0}, "`num_params` must be a positive integer; got 0"),
        ({"kernel_blocks": 0}, "`kernel_blocks` must be a positive integer; got 0"),
        ({"packed": True}, r"`packed=True` needs `kernel_blocks=1`; got 4"),
        (
            {"order": [0, 1, 1, 2]},
            r"`order` must be a permutation of range\(4\); got \[0, 1, 1, 2\]",
        ),
        ({"order": "diagonal"}, "`order` must be .*got 'diagonal'"),
        ({"hidden_degrees": "even"}, "`hidden_degrees` must be 'equal' or 'random'; got 'even'"),
        ({"hidden_units": [8, 9], "residual": True}, r"`residual=True` needs equal hidden widths"),
        (
            {"hidden_units": [8, 8], "residual": True, "hidden_degrees": "random"},
            "`residual=True` needs hidden_degrees='equal'",
        ),
    ],
)
def test_bad_made_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        made(**kwargs)


def test_bad_linear_configuration():
    with pytest.raises(ValueError, match="`event_size` must be a positive integer; got -2"):
        tfp_iaf.LinearAutoregressive(-2)
    with pytest.raises(
        ValueError, match="`context_size` must be a positive integer or None; got 0"
    ):
        tfp_iaf.LinearAutoregressive(3, context_size=0)


def test_wrong_event_size():
    with pytest.raises(
        ValueError, match=r"`x` must have event shape \(4,\) .*got input shape \(2, 3\)"
    ):
        made()(tf.zeros([2, 3]))
    iaf = tfp_iaf.InverseAutoregressiveFlow(made())
    with pytest.raises(ValueError, match=r"`y` must have event shape \(4,\) \(bijector `iaf`\)"):
        iaf.inverse(tf.zeros([2, 5]))


def test_context_errors():
    with pytest.raises(
        ValueError, match=r"`context` was given \(shape \(2, 3\)\) but network .* built without"
    ):
        made()(tf.zeros([2, 4]), context=tf.zeros([2, 3]))
    with pytest.raises(ValueError, match=r"`context` is required: .*context shape \(3,\)"):
        made(context_size=3)(tf.zeros([2, 4]))
    with pytest.raises(
        ValueError, match=r"`context` must have trailing shape \(3,\) .*got shape \(2, 5\)"
    ):
        made(context_size=3)(tf.zeros([2, 4]), context=tf.zeros([2, 5]))
    iaf = tfp_iaf.InverseAutoregressiveFlow(made(context_size=3))
    with pytest.raises(ValueError, match="`context` is required"):
        iaf.inverse(tf.zeros([2, 4]))


def test_mismatched_dtypes():
    with pytest.raises(TypeError, match="`x` has dtype float64 but network .* is float32"):
        made()(tf.zeros([2, 4], tf.float64))
    with pytest.raises(TypeError, match="`context` has dtype float64 but network .* is float32"):
        made(context_size=3)(tf.zeros([2, 4]), context=tf.zeros([2, 3], tf.float64))
    iaf = tfp_iaf.InverseAutoregressiveFlow(made())  # TFP's own dtype check names the argument
    with pytest.raises(ValueError, match="x: Tensor conversion requested dtype float32 .*float64"):
        iaf.forward(tf.zeros([2, 4], tf.float64))


def test_non_finite_input_with_validate_args():
    iaf = tfp_iaf.InverseAutoregressiveFlow(made(), validate_args=True)
    bad = tf.constant([[0.0, np.nan, 1.0, 2.0]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="`x` must be finite"):
        iaf.forward(bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`y` must be finite"):
        iaf.inverse(tf.constant([[0.0, np.inf, 1.0, 2.0]]))


def test_bad_bijector_arguments():
    with pytest.raises(
        TypeError, match="`network` must be a tfp_iaf AutoregressiveNetwork .*got Dense"
    ):
        tfp_iaf.InverseAutoregressiveFlow(tf.keras.layers.Dense(3))
    with pytest.raises(ValueError, match="`network` must output num_params=2 .*got 3"):
        tfp_iaf.InverseAutoregressiveFlow(made(num_params=3))
    with pytest.raises(
        ValueError, match="`log_scale_bound` must be a finite positive number; got 0.0"
    ):
        tfp_iaf.InverseAutoregressiveFlow(made(), log_scale_bound=0.0)


def test_bad_stack_arguments():
    with pytest.raises(ValueError, match=r"`steps` must contain at least one .*got \[\]"):
        tfp_iaf.IAFStack([])
    with pytest.raises(TypeError, match="`steps` must be InverseAutoregressiveFlow .*got Exp"):
        tfp_iaf.IAFStack([tfp_iaf.InverseAutoregressiveFlow(made()), tfp.bijectors.Exp()])
    steps = [
        tfp_iaf.InverseAutoregressiveFlow(made()),
        tfp_iaf.InverseAutoregressiveFlow(made(event_size=5)),
    ]
    with pytest.raises(ValueError, match=r"`steps` must share one event shape .*\(4,\), \(5,\)"):
        tfp_iaf.IAFStack(steps)
    with pytest.raises(ValueError, match="`num_steps` must be a positive integer; got 0"):
        tfp_iaf.dense_iaf_stack(4, 0, [8])


def test_bad_masked_dense():
    with pytest.raises(
        ValueError, match=r"`mask` must be a \[fan_in, fan_out\] matrix; got shape \(3,\)"
    ):
        tfp_iaf.MaskedDense(np.ones(3))
    with pytest.raises(ValueError, match=r"expects 3 input features .*got input shape \(2, 4\)"):
        tfp_iaf.MaskedDense(np.ones([3, 2]))(tf.zeros([2, 4]))
    for kwargs, got in (
        ({}, "num_blocks=4, use_bias=True"),
        ({"num_blocks": 1, "use_bias": False}, "num_blocks=1, use_bias=False"),
    ):
        with pytest.raises(
            ValueError, match=rf"`packed=True` needs `num_blocks=1` and `use_bias=True`; got {got}"
        ):
            tfp_iaf.MaskedDense(np.ones([3, 2]), packed=True, **kwargs)


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
def test_bad_conv_made_configuration(kwargs, match):
    args = dict(event_shape=(4, 4, 3), filters=[6, 6]) | kwargs
    with pytest.raises(ValueError, match=match):
        tfp_iaf.ConvMADE(**args)


@pytest.mark.parametrize(
    "context_shape,match",
    [
        ((2, 4, 4, 5), r"`context`.*\(4, 4, 2\).*\(2, 4, 4, 5\)"),
        ((2, 3, 4, 2), r"`context`.*\(4, 4, 2\).*\(2, 3, 4, 2\)"),
    ],
    ids=["channels", "spatial"],
)
def test_bad_conv_context(context_shape, match):
    net = tfp_iaf.ConvMADE((4, 4, 3), [6], context_channels=2)
    with pytest.raises(ValueError, match=match):
        net(tf.zeros([2, 4, 4, 3]), context=tf.zeros(context_shape))
    iaf = tfp_iaf.InverseAutoregressiveFlow(net)
    with pytest.raises(ValueError, match=match):
        iaf.inverse(tf.zeros([2, 4, 4, 3]), context=tf.zeros(context_shape))


def test_wrong_conv_event_shape():
    net = tfp_iaf.ConvMADE((4, 4, 3), [6])
    with pytest.raises(ValueError, match=r"`x` must have event shape \(4, 4, 3\).*\(2, 4, 3, 3\)"):
        net(tf.zeros([2, 4, 3, 3]))
    with pytest.raises(ValueError, match=r"`x` must have event shape \(1, 4, 3\).*\(4, 3\)"):
        tfp_iaf.ConvMADE((1, 4, 3), [6])(tf.zeros([4, 3]))
    with pytest.raises(ValueError, match=r"`num_steps`.*got 0"):
        tfp_iaf.conv_iaf_stack((4, 4, 3), 0, [6])


def test_bad_masked_conv2d():
    with pytest.raises(ValueError, match=r"`mask`.*odd k.*\(2, 2, 1, 1\)"):
        tfp_iaf.MaskedConv2D(np.ones((2, 2, 1, 1)))
    layer = tfp_iaf.MaskedConv2D(np.ones((3, 3, 2, 1)), name="mc")
    with pytest.raises(ValueError, match=r"`mc` expects 2 input channels.*\(1, 4, 4, 3\)"):
        layer(tf.zeros([1, 4, 4, 3]))
    with pytest.raises(ValueError, match=r"MaskedConv2D `mc2` needs input .*\(4, 3\)"):
        tfp_iaf.MaskedConv2D(np.ones((3, 3, 3, 1)), name="mc2")(tf.zeros([4, 3]))


@pytest.mark.parametrize(
    "order,match",
    [
        ("zigzag", "`order` must be"),
        ([0, 0, 1], "permutation of range"),
        ([0, 1], "permutation of range"),
        ([0.0, 1.0, 2.0], "permutation of range"),
    ],
)
def test_bad_dense_order(order, match):
    with pytest.raises(ValueError, match=match):
        masks.resolve_order(3, order)


def test_bad_hidden_degrees_method():
    with pytest.raises(ValueError, match="`hidden_degrees` must be 'equal' or 'random'; got 'x'"):
        masks.hidden_degrees(4, 3, method="x")


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: masks.conv_input_degrees((4, 4), "raster"), r"`event_shape`.*\(4, 4\)"),
        (lambda: masks.conv_input_degrees((4, 0, 2), "raster"), r"`event_shape`.*\(4, 0, 2\)"),
        (lambda: masks.conv_input_degrees((4, 4, 2), "zigzag"), r"`order`.*'zigzag'"),
        (lambda: masks.conv_kernel_mask(4, [0], [0]), r"`kernel_size`.*got 4"),
        (lambda: masks.conv_made_masks((4, 4, 2), [5], 3), r"`filters`.*multiples.*got \[5\]"),
        (lambda: masks.conv_made_masks((4, 4, 2), [], 3), r"`filters`.*non-empty.*\[\]"),
        (lambda: masks.reversed_order("backwards"), r"`order`.*'backwards'"),
    ],
)
def test_bad_conv_mask_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (
            {"log_scale_bound": float("inf")},
            ValueError,
            "`log_scale_bound` must be a finite positive number; got inf",
        ),
        (
            {"log_scale_bound": "5"},
            TypeError,
            r"`log_scale_bound` must be a finite positive number; got '5' \(str\)",
        ),
        (
            {"forget_bias": float("nan")},
            ValueError,
            "`forget_bias` must be a finite number; got nan",
        ),
        (
            {"forget_bias": True},
            TypeError,
            r"`forget_bias` must be a finite number; got True \(bool\)",
        ),
        ({"gated": 1}, TypeError, r"`gated` must be a bool; got 1 \(int\)"),
        ({"scaled_shift": "yes"}, TypeError, r"`scaled_shift` must be a bool; got 'yes' \(str\)"),
        (
            {"gated": True, "scaled_shift": True},
            ValueError,
            r"`scaled_shift=True` is a form of the affine update; got gated=True",
        ),
    ],
)
def test_bad_update_parameters(kwargs, error, match):
    """Non-finite bounds and biases are refused: `log_scale_bound=inf` or `forget_bias=nan` would
    make every output NaN."""
    with pytest.raises(error, match=match):
        tfp_iaf.InverseAutoregressiveFlow(made(), **kwargs)


@pytest.mark.parametrize(
    "build,error,match",
    [
        (
            lambda: made(event_size=True),
            TypeError,
            r"`event_size` must be a positive integer; got True \(bool\)",
        ),
        (lambda: made(event_size=4.0), TypeError, r"`event_size` .*got 4.0 \(float\)"),
        (
            lambda: made(hidden_units=8),
            TypeError,
            r"`hidden_units` must be a non-empty list .*got 8 \(int\)",
        ),
        (lambda: made(hidden_units=None), TypeError, r"`hidden_units` .*got None \(NoneType\)"),
        (lambda: made(hidden_units=[8, True]), TypeError, r"`hidden_units` .*got \[8, True\]"),
        (
            lambda: made(context_size=False),
            TypeError,
            r"`context_size` .*or None; got False \(bool\)",
        ),
        (lambda: made(num_params=2.0), TypeError, r"`num_params` .*got 2.0 \(float\)"),
        (
            lambda: tfp_iaf.dense_iaf_stack(4, True, [8]),
            TypeError,
            r"`num_steps` .*got True \(bool\)",
        ),
        (lambda: tfp_iaf.dense_iaf_stack(4, 2, 8), TypeError, r"`hidden_units` .*got 8 \(int\)"),
        (
            lambda: tfp_iaf.LinearAutoregressive(True),
            TypeError,
            r"`event_size` .*got True \(bool\)",
        ),
        (lambda: tfp_iaf.ConvMADE((4, 4, 2), 8), TypeError, r"`filters` .*got 8 \(int\)"),
        (
            lambda: tfp_iaf.ConvMADE((2, 2, 2), [4], fast_inverse=1),
            TypeError,
            r"`fast_inverse` must be a bool; got 1 \(int\)",
        ),
        (
            lambda: tfp_iaf.ConvMADE((4, 4, 2), [4], context_channels=True),
            TypeError,
            r"`context_channels` .*got True",
        ),
        (
            lambda: tfp_iaf.conv_iaf_stack((4, 4, 2), 2.0, [4]),
            TypeError,
            r"`num_steps` .*got 2.0 \(float\)",
        ),
    ],
)
def test_bad_sizes_are_rejected_consistently(build, error, match):
    """Every builder checks sizes alike: a bool is no size, and an int or None where a list is
    expected is named, not left to `TypeError: 'int' object is not iterable`."""
    with pytest.raises(error, match=match):
        build()


def test_steps_of_a_stack_share_one_context_shape():
    steps = [
        tfp_iaf.InverseAutoregressiveFlow(made(context_size=3)),
        tfp_iaf.InverseAutoregressiveFlow(made(context_size=2)),
    ]
    with pytest.raises(ValueError, match=r"`steps` must share one context shape .*\(3,\), \(2,\)"):
        tfp_iaf.IAFStack(steps)


DENSE_CTX = lambda: tfp_iaf.InverseAutoregressiveFlow(made(context_size=3))  # noqa: E731
CONTEXT_MISMATCH = [
    (DENSE_CTX, [3, 4], [5, 3]),
    (
        lambda: tfp_iaf.InverseAutoregressiveFlow(tfp_iaf.LinearAutoregressive(4, context_size=3)),
        [3, 4],
        [5, 3],
    ),
    (
        lambda: tfp_iaf.conv_iaf_stack((2, 2, 2), 2, [4], context_channels=1),
        [3, 2, 2, 2],
        [5, 2, 2, 1],
    ),
]


@pytest.mark.parametrize(
    "build,x_shape,context_shape", CONTEXT_MISMATCH, ids=["made", "linear", "conv"]
)
def test_context_batch_that_does_not_broadcast(build, x_shape, context_shape):
    """Named in terms of the flow's arguments, not TensorFlow's ops (`Incompatible shapes
    [Op:AddV2]`, `BroadcastArgs`, `BatchMatMulV2`)."""
    flow = build()
    match = r"`context` batch shape \(5,\) does not broadcast against the batch shape \(3,\) of "
    for method, arg in ((flow.forward, "x"), (flow.inverse, "y")):
        with pytest.raises(ValueError, match=f"{match}`{arg}`"):
            method(tf.zeros(x_shape), context=tf.zeros(context_shape))


def test_sample_n_of_an_unbatched_base_with_a_batched_context():
    q = tfp.distributions.TransformedDistribution(
        tfp.distributions.MultivariateNormalDiag(tf.zeros(4)),
        tfp_iaf.dense_iaf_stack(4, 2, [8], context_size=3),
    )
    with pytest.raises(ValueError, match=r"`context` batch shape \(5,\) .*\(7,\) of `x`.*base"):
        q.sample(7, bijector_kwargs={"context": tf.zeros([5, 3])})


def test_validate_args_checks_the_context():
    """A NaN context is an error naming `context` and the flow called (a stack, not its step 2),
    not a NaN output."""
    nan_context = tf.fill([2, 3], np.nan)
    step = tfp_iaf.InverseAutoregressiveFlow(made(context_size=3), validate_args=True)
    stack = tfp_iaf.dense_iaf_stack(4, 2, [8], context_size=3, validate_args=True)
    for flow in (step, stack):
        for method in (flow.forward, flow.inverse):
            with pytest.raises(
                tf.errors.InvalidArgumentError,
                match=f"`context` must be finite \\(bijector `{flow.name}`\\)",
            ):
                method(tf.zeros([2, 4]), context=nan_context)


def test_validate_args_checks_context_broadcasting_at_run_time():
    """Shapes unknown until run time: the check runs inside the graph under `validate_args`."""
    stack = tfp_iaf.dense_iaf_stack(4, 2, [8], context_size=3, validate_args=True)
    spec = [tf.TensorSpec([None, 4]), tf.TensorSpec([None, 3])]
    forward = tf.function(lambda x, c: stack.forward(x, context=c), input_signature=spec)
    assert forward(tf.zeros([3, 4]), tf.zeros([1, 3])).shape == (3, 4)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="`context` batch shape does not broadcast"
    ):
        forward(tf.zeros([3, 4]), tf.zeros([5, 3]))


def test_numpy_inputs_take_the_flow_dtype_and_tensors_must_match():
    """TFP's convention, on both paths: a NumPy (or Python) value is converted to the flow's dtype
    like a Python float, by the bijector and by the network alike; a tensor of another dtype is an
    error naming the argument.
    """
    flow = tfp_iaf.InverseAutoregressiveFlow(made(context_size=3))
    x = np.random.default_rng(0).standard_normal([2, 4])
    h = np.ones([2, 3])
    expected = flow.forward(tf.constant(x, tf.float32), context=tf.ones([2, 3]))
    np.testing.assert_allclose(flow.forward(x, context=h), expected, rtol=1e-6)
    np.testing.assert_allclose(
        flow.inverse(flow.forward(x, context=h), context=h), x, rtol=1e-4, atol=1e-5
    )
    net_out = flow.network(tf.constant(x, tf.float32), context=tf.ones([2, 3]))
    np.testing.assert_allclose(flow.network(x, context=h), net_out, rtol=1e-6)
    assert flow.network(x.tolist(), context=h).dtype == tf.float32
    with pytest.raises(ValueError, match="x: Tensor conversion requested dtype float32 .*float64"):
        flow.forward(tf.constant(x))
    with pytest.raises(TypeError, match="`x` has dtype float64 but network .* is float32"):
        flow.network(tf.constant(x), context=h)
    with pytest.raises(
        TypeError, match="`context` has dtype float64 but bijector `iaf` is float32"
    ):
        flow.forward(x, context=tf.constant(h))
