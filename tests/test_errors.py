"""Bad input gets a clear error naming the argument and the value."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_iaf


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
        ({"context_size": 0}, "`context_size` must be a positive integer; got 0"),
        ({"num_params": 0}, "`num_params` must be a positive integer; got 0"),
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
    with pytest.raises(ValueError, match="`context_size` must be a positive integer; got 0"):
        tfp_iaf.LinearAutoregressive(3, context_size=0)


def test_wrong_event_size():
    with pytest.raises(
        ValueError, match=r"`x` must have event shape \(4,\) .*got input shape \(2, 3\)"
    ):
        made()(tf.zeros([2, 3]))
    iaf = tfp_iaf.InverseAutoregressiveFlow(made())
    with pytest.raises(ValueError, match="`x` must have event shape"):
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
    with pytest.raises(ValueError, match="`log_scale_bound` must be positive; got 0.0"):
        tfp_iaf.InverseAutoregressiveFlow(made(), log_scale_bound=0.0)


def test_bad_stack_arguments():
    with pytest.raises(ValueError, match=r"`steps` must contain at least one .*got \[\]"):
        tfp_iaf.IAFStack([])
    with pytest.raises(TypeError, match="`steps` must be InverseAutoregressiveFlow .*got Exp"):
        tfp_iaf.IAFStack([tfp_iaf.InverseAutoregressiveFlow(made()), tfp_iaf.iaf.tfb.Exp()])
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
