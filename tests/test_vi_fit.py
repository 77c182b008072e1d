"""tfp_iaf.vi.fit_surrogate_posterior: no step that is not finite is applied, a divergence
raises `FitDiverged`, the estimators and options reach TFP's loss, and bad arguments are named."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import vi
from tfp_iaf._keras import tf_keras

tfd = tfp.distributions

OPTIMIZERS = {
    "keras3": lambda lr: tf.optimizers.Adam(lr),
    "tf_keras-schedule": lambda lr: tf_keras.optimizers.Adam(
        tf_keras.optimizers.schedules.CosineDecay(lr, 1000)
    ),
}
# The `xla` cases compile the whole fit's loop (10-30 s each on 2 cores): the `slow` tier
# (`make test-slow`, run by CI); the `eager-loop` cases check the same in `make test`.
JIT = pytest.mark.parametrize(
    "jit_compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager-loop", "xla"]
)


def small_surrogate(event_shape=(2,)):
    """Started at N(0, I), so a good part of its mass lies where `nan_above(1.5, ...)` is NaN."""
    return vi.build_iaf_surrogate_posterior(
        list(event_shape), seed=0, hidden_units=[8, 8], initial_scale=1.0
    )


def small_surrogate_at(initial_scale):
    return vi.build_iaf_surrogate_posterior(
        [2], seed=0, hidden_units=[8, 8], initial_scale=initial_scale
    )


def nan_above(threshold, loc):
    """log N(z; loc, I) of a 2-d z, NaN where any coordinate is above `threshold`."""

    def target(z):
        log_prob = tfd.MultivariateNormalDiag(tf.fill([2], loc), tf.ones(2)).log_prob(z)
        return tf.where(tf.reduce_any(z > threshold, -1), np.float32(np.nan), log_prob)

    return target


def trace_all(quantities):
    return quantities.loss, quantities.skipped, quantities.parameters


def assert_finite(variables):
    assert all(np.all(np.isfinite(v)) for v in variables)


@JIT
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_steps_where_the_target_is_nan_are_skipped_and_shown(kind, jit_compile):
    """The target is NaN on a quarter of the surrogate's mass: those steps leave the variables
    and the optimizer (its step count, hence the schedule) alone, the default trace is NaN
    there, and the fit ends finite."""
    q, optimizer = small_surrogate(), OPTIMIZERS[kind](0.05)
    losses = vi.fit_surrogate_posterior(
        nan_above(1.5, 0.0), q, optimizer, 40, sample_size=4, seed=(1, 2),
        jit_compile=jit_compile, check=False, backtrack_after=None,
    )  # fmt: skip
    skipped = np.isnan(losses)
    assert losses.shape == [40] and 0 < skipped.sum() < 40
    assert_finite(q.trainable_variables)
    assert int(optimizer.iterations) == np.sum(~skipped)


@pytest.mark.slow
def test_trace_fn_sees_which_steps_were_skipped_and_the_default_trace_marks_them():
    target = nan_above(1.5, 0.0)
    kwargs = dict(sample_size=4, seed=(1, 2), check=False, backtrack_after=None)
    losses = vi.fit_surrogate_posterior(
        target, small_surrogate(), tf.optimizers.Adam(0.05), 40, **kwargs
    )
    loss, skipped, parameters = vi.fit_surrogate_posterior(
        target, small_surrogate(), tf.optimizers.Adam(0.05), 40, trace_fn=trace_all, **kwargs
    )
    assert 0 < np.sum(skipped) < 40
    np.testing.assert_array_equal(np.isnan(losses), skipped)
    np.testing.assert_array_equal(losses[~skipped], loss[~skipped])
    after_skip = np.flatnonzero(skipped)[1:]
    for trace in parameters:  # a skipped step changes nothing
        np.testing.assert_array_equal(trace.numpy()[after_skip], trace.numpy()[after_skip - 1])


def cliff(z):
    """log N(z; 2, 0.3^2 I) of a 2-d z, NaN past 3 in any coordinate: one sd and a half past a
    mode that a fast optimizer overshoots."""
    log_prob = tfd.MultivariateNormalDiag([2.0, 2.0], [0.3, 0.3]).log_prob(z)
    return tf.where(tf.reduce_any(z > 3.0, -1), tf.constant(np.nan, z.dtype), log_prob)


@pytest.mark.slow
def test_backtracking_retakes_a_stretch_that_overshot_into_nan_with_smaller_steps():
    """Without backtracking the fit overshoots past the cliff and stops there; with it (the
    default) it goes back to the anchor, halves its steps and ends near the target."""
    # The last step's values: at the averaged ones the surrogate is closer to the target, whose
    # mass past the cliff (8.6e-4) its 2,000 samples below then reach.
    kwargs = dict(sample_size=8, seed=(1, 2), check=False, average_last=0.0)
    with pytest.raises(vi.FitDiverged):
        vi.fit_surrogate_posterior(
            cliff, small_surrogate_at(0.1), tf.optimizers.Adam(0.1), 300, backtrack_after=None,
            **kwargs,
        )  # fmt: skip
    q = small_surrogate_at(0.1)
    losses = vi.fit_surrogate_posterior(cliff, q, tf.optimizers.Adam(0.1), 300, **kwargs)
    assert np.isnan(losses).sum() >= 5  # it did walk into the cliff
    assert_finite(q.trainable_variables)
    _, log_w = vi.importance_weights(cliff, q, 2000, seed=(3, 4))
    assert np.all(np.isfinite(log_w)) and float(np.mean(log_w)) > -1.0  # KL(q || p) < 1 nat


@JIT
def test_backtracking_to_an_anchor_that_is_no_better_still_stops(jit_compile):
    """Every step from the start is NaN: each backtrack returns to the initial values, and
    `max_consecutive_skips` in a row (backtracks do not reset the count) raise."""
    q = small_surrogate()
    initial = [v.numpy() for v in q.trainable_variables]
    with pytest.raises(vi.FitDiverged) as info:
        vi.fit_surrogate_posterior(
            nan_above(-5.0, 0.0), q, tf.optimizers.Adam(0.1), 100, sample_size=4, seed=(1, 2),
            check=False, max_consecutive_skips=12, backtrack_after=3, jit_compile=jit_compile,
        )  # fmt: skip
    assert info.value.step == 0 and info.value.last_finite_loss is None
    for variable, value in zip(q.trainable_variables, initial, strict=True):
        np.testing.assert_array_equal(variable, value)


@JIT
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_a_fit_that_walks_into_nan_raises_fit_diverged_at_the_last_finite_values(
    kind, jit_compile
):
    """The target pulls the surrogate towards 10 but is NaN above 2: once every sample lands
    there, `max_consecutive_skips` steps in a row are skipped and the fit stops."""
    q, optimizer = small_surrogate(), OPTIMIZERS[kind](0.2)
    with pytest.raises(vi.FitDiverged) as info:
        vi.fit_surrogate_posterior(
            nan_above(2.0, 10.0), q, optimizer, 300, sample_size=4, seed=(1, 2),
            max_consecutive_skips=10, trace_fn=trace_all, jit_compile=jit_compile, check=False,
            backtrack_after=None,
        )  # fmt: skip
    error = info.value
    assert isinstance(error, FloatingPointError) and "FitDiverged" in vi.__all__
    loss, skipped, parameters = error.trace
    assert 0 < error.step and len(loss) == error.step + 10
    assert np.all(skipped[error.step :]) and not skipped[error.step - 1]
    assert error.last_finite_loss == loss[error.step - 1] and np.isfinite(error.last_finite_loss)
    assert int(optimizer.iterations) == np.sum(~skipped)
    assert_finite(q.trainable_variables)
    for variable, trace in zip(q.trainable_variables, parameters, strict=True):
        np.testing.assert_array_equal(variable, trace[error.step - 1])
    message = str(error)
    assert f"diverged at step {error.step} of 300" in message
    hints = ["last finite loss was", "learning rate", "`initial_scale`", "`bijector`", "float64"]
    assert all(hint in message for hint in hints)


@JIT
def test_an_update_that_overflows_is_undone(jit_compile):
    """Finite gradients, but SGD's huge step makes the variables infinite: every step is undone,
    and the fit stops with the initial values and no finite loss to report."""
    q = small_surrogate()
    initial = [v.numpy() for v in q.trainable_variables]
    target = tfd.MultivariateNormalDiag([100.0, 100.0], [1.0, 1.0]).log_prob
    with pytest.raises(
        vi.FitDiverged, match=r"diverged at step 0 of 20: .*no step was applied"
    ) as info:
        vi.fit_surrogate_posterior(
            target, q, tf.optimizers.SGD(1e38), 20, sample_size=2, seed=(1, 2),
            max_consecutive_skips=3, jit_compile=jit_compile,
        )  # fmt: skip
    assert info.value.last_finite_loss is None
    assert info.value.trace.shape == (3,) and np.all(np.isnan(info.value.trace))
    for variable, value in zip(q.trainable_variables, initial, strict=True):
        np.testing.assert_array_equal(variable, value)


@pytest.mark.slow
def test_a_finite_fit_is_tfps_fit():
    """Same seeds, same steps: the losses of `tfp.vi.fit_surrogate_posterior`, and its variables
    without the tail averaging."""
    target = tfd.MultivariateNormalDiag([1.0, -1.0], [0.5, 2.0]).log_prob
    ours, theirs = small_surrogate(), small_surrogate()
    losses = vi.fit_surrogate_posterior(
        target, ours, tf.optimizers.Adam(0.05), 20, sample_size=4, seed=(3, 4), average_last=0
    )
    expected = tfp.vi.fit_surrogate_posterior(
        target, theirs, tf.optimizers.Adam(0.05), 20, sample_size=4, seed=(3, 4)
    )
    np.testing.assert_array_equal(losses, expected)
    for a, b in zip(ours.trainable_variables, theirs.trainable_variables, strict=True):
        np.testing.assert_array_equal(a, b)


def trace_parameters(quantities):
    return quantities.parameters


@JIT
@pytest.mark.parametrize("average_last, averaged", [(0.25, 5), (0.0, 0), (1.0, 20), (0.01, 0)])
def test_the_variables_end_at_the_mean_of_the_last_steps_values(
    average_last, averaged, jit_compile
):
    """The variables end at the mean of their values after each of the last
    `round(average_last * num_steps)` steps (the last step's values when that is 0), and the
    optimizer's state is the last step's."""
    q, optimizer = small_surrogate(), tf.optimizers.Adam(0.05)
    target = tfd.MultivariateNormalDiag([1.0, -1.0], [0.5, 2.0]).log_prob
    trace = vi.fit_surrogate_posterior(
        target, q, optimizer, 20, sample_size=4, seed=(3, 4), trace_fn=trace_parameters,
        average_last=average_last, jit_compile=jit_compile,
    )  # fmt: skip
    for variable, values in zip(q.trainable_variables, trace, strict=True):
        values = values.numpy()
        expected = values[-averaged:].mean(0) if averaged else values[-1]
        np.testing.assert_allclose(variable, expected, rtol=1e-6, atol=1e-7)
        if averaged > 1:  # the mean is not one of the values
            assert not np.allclose(variable, values[-1], rtol=1e-6, atol=1e-7)
    assert int(optimizer.iterations) == 20


def test_a_backtrack_starts_the_mean_afresh():
    """The cliff makes the fit backtrack within the averaged tail: the variables end at the mean
    of the values from the last backtrack on (the anchor it went back to, then the steps after
    it), not of those before it, which walked into the cliff."""
    q = small_surrogate_at(0.1)
    losses, parameters = vi.fit_surrogate_posterior(
        cliff, q, tf.optimizers.Adam(0.1), 300, sample_size=8, seed=(1, 2), check=False,
        average_last=1.0, trace_fn=lambda t: (t.loss, t.parameters),
    )  # fmt: skip
    skipped = np.flatnonzero(np.isnan(losses))
    runs = np.split(skipped, np.flatnonzero(np.diff(skipped) != 1) + 1)
    # backtrack_after=5: the 5th, 10th, ... skip in a row goes back to the anchor, which that
    # step's values are.
    backtracks = [b for run in runs for b in run[4::5]]
    assert backtracks, "the fit was meant to backtrack"
    start = backtracks[-1]
    for variable, values in zip(q.trainable_variables, parameters, strict=True):
        np.testing.assert_allclose(variable, values.numpy()[start:].mean(0), rtol=1e-5, atol=1e-6)


def stl_gradients(jit_compile):
    """The gradients of one step with `stick_the_landing` and, eagerly, without, at q = p: the
    target is a copy of the surrogate."""
    q = vi.build_iaf_surrogate_posterior([2], num_steps=1, seed=0, hidden_units=[8])
    target = vi.build_iaf_surrogate_posterior([2], num_steps=1, seed=0, hidden_units=[8]).log_prob
    with tf.GradientTape() as tape:
        loss = tfp.vi.monte_carlo_variational_loss(target, q, 8, seed=(1, 2))
    reparameterization = tape.gradient(loss, q.trainable_variables)
    sticking = vi.fit_surrogate_posterior(
        target, q, tf.optimizers.SGD(0.0), 1, sample_size=8, seed=(1, 2),
        stick_the_landing=True, trace_fn=lambda t: t.gradients, jit_compile=jit_compile,
    )  # fmt: skip
    return reparameterization, sticking


def test_sticking_the_landing_has_no_gradient_at_the_exact_posterior():
    """STL's gradient is `d log(p/q)(z)/dz dz/dtheta`: zero for every sample when q = p, where
    the reparameterisation gradient is not. The surrogate's density is taken at a sample it
    drew, so this also shows the bijector's cache is not used there."""
    reparameterization, sticking = stl_gradients(jit_compile=False)
    assert max(np.max(np.abs(g)) for g in reparameterization) > 1e-2
    assert max(np.max(np.abs(g)) for g in sticking) < 1e-5


@pytest.mark.slow
def test_sticking_the_landing_under_xla():
    """As above, compiled (the gradient of the IAF's sequential inverse, in XLA)."""
    _, sticking = stl_gradients(jit_compile=True)
    assert max(np.max(np.abs(g)) for g in sticking) < 1e-5


@pytest.mark.slow
def test_sticking_the_landing_fits_a_gaussian():
    target = tfd.MultivariateNormalDiag([1.0, -1.0], [0.5, 2.0])
    q = small_surrogate()
    optimizer = tf.optimizers.Adam(tf.optimizers.schedules.CosineDecay(0.05, 150))
    losses = vi.fit_surrogate_posterior(
        target.log_prob, q, optimizer, 150, sample_size=8, seed=(1, 2), stick_the_landing=True
    )
    assert not np.any(np.isnan(losses))
    _, log_w = vi.importance_weights(target.log_prob, q, 2000, seed=(3, 4))
    assert float(np.mean(log_w)) > -0.05  # KL(q || p) of the normalised target
    np.testing.assert_allclose(np.mean(q.sample(4000, seed=(5, 6)), 0), [1.0, -1.0], atol=0.15)


@pytest.mark.parametrize(
    "event_shape,target,shape",
    [
        ([1], tfd.Normal(0.0, tf.ones(4)).log_prob, r"\[3, 4\]"),  # broadcasts against [3, 1]
        ([5], tfd.Normal(tf.zeros(5), 1.0).log_prob, r"\[3, 5\]"),  # a model of batch shape [5]
    ],
    ids=["broadcast", "batch-shape"],
)
def test_a_target_of_the_wrong_shape_is_named_before_fitting(event_shape, target, shape):
    with pytest.raises(
        ValueError, match=rf"log-densities of shape {shape} at 3 samples .*must return shape \[3\]"
    ):
        vi.fit_surrogate_posterior(
            target, small_surrogate(event_shape), tf.optimizers.Adam(0.1), 5, sample_size=3
        )


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"num_steps": 0}, ValueError, r"`num_steps` must be a positive integer; got 0"),
        ({"sample_size": 0}, ValueError, r"`sample_size` must be a positive integer; got 0"),
        ({"average_last": 1.5}, ValueError, r"`average_last` must be in \[0, 1\]; got 1.5"),
        ({"average_last": -0.1}, ValueError, r"`average_last` must be in \[0, 1\]; got -0.1"),
        ({"average_last": float("nan")}, ValueError, r"`average_last` must be a finite number"),
        ({"average_last": "all"}, TypeError, r"`average_last` must be a finite number; got 'all'"),
        ({"sample_size": 2.0}, TypeError, r"`sample_size` must be a positive integer; got 2.0"),
        ({"importance_sample_size": 0}, ValueError, r"`importance_sample_size` must be a"),
        ({"max_consecutive_skips": 0}, ValueError, r"`max_consecutive_skips` must be a .*got 0"),
        (
            {"backtrack_after": 0},
            ValueError,
            r"`backtrack_after` must be a positive integer; got 0",
        ),
        ({"backtrack_after": 2.5}, TypeError, r"`backtrack_after` must be a positive .*got 2.5"),
        ({"trainable_variables": []}, ValueError, r"`trainable_variables` must not be empty"),
        (
            {
                "stick_the_landing": True,
                "gradient_estimator": tfp.vi.GradientEstimators.SCORE_FUNCTION,
            },
            ValueError,
            r"`stick_the_landing=True` uses .*DOUBLY_REPARAMETERIZED.*got .*SCORE_FUNCTION",
        ),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    arguments = {"num_steps": 5, "sample_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        vi.fit_surrogate_posterior(
            tfd.Normal(0.0, 1.0).log_prob,
            small_surrogate([]),
            tf.optimizers.Adam(0.1),
            seed=(1, 2),
            **arguments,
        )
