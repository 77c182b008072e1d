"""The rational-quadratic spline transform: round trips, log-derivatives, identity at zero,
monotonicity, identity tails, TFP's bijector as a reference, XLA, extreme inputs, arguments.

Tolerances for values are backward-error bounds, `C eps B (1 + slope)`: a spline with bins of
width `2 B m_w` and knot derivatives down to `m_d` is flat or steep enough that the forward
error of an inverse is only bounded by the local slope (measured: both residuals below
`4 eps B (1 + slope)` for parameter scales from 0.3 to 1e4, float32 and float64).
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf.spline import RationalQuadraticSpline
from tfp_iaf.transforms import Transform

tfb = tfp.bijectors
DTYPES = [tf.float32, tf.float64]
SHAPES = [(), (7, 3), (2, 3, 2, 2)]
B = 3.0


def eps(dtype) -> float:
    return float(np.finfo(dtype.as_numpy_dtype).eps)


def close(dtype) -> dict:
    """For comparisons at parameter scale 1, where slopes stay within ~e^(+-9)."""
    return {"rtol": 1e-5, "atol": 1e-3} if dtype == tf.float32 else {"rtol": 1e-9, "atol": 1e-9}


def draw(shape, spline, dtype, scale=1.0, seed=0, x_range=1.5 * B):
    """`x: shape` uniform on `[-x_range, x_range]` (tails included), `params: [*shape, P]`."""
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.uniform(-x_range, x_range, shape), dtype)
    params = tf.constant(scale * rng.standard_normal((*shape, spline.num_params)), dtype)
    return x, params


def residual_bound(dtype, log_slope) -> np.ndarray:
    return 8 * eps(dtype) * B * (1 + np.exp(np.asarray(log_slope, np.float64)))


def reference(spline: RationalQuadraticSpline, params) -> tfb.RationalQuadraticSpline:
    """TFP's bijector from the documented parametrisation, written here in NumPy."""
    p = np.asarray(params, np.float64)
    k, m_w, m_h, m_d = (
        spline.num_bins, spline.min_bin_width, spline.min_bin_height, spline.min_derivative,
    )  # fmt: skip

    def softmax(a):
        e = np.exp(a - a.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    widths = 2 * B * (m_w + (1 - k * m_w) * softmax(p[..., :k]))
    heights = 2 * B * (m_h + (1 - k * m_h) * softmax(p[..., k : 2 * k]))
    c = np.log(np.expm1(1 - m_d))
    slopes = m_d + np.logaddexp(0.0, p[..., 2 * k :] + c)
    dtype = np.asarray(params).dtype
    return tfb.RationalQuadraticSpline(
        widths.astype(dtype), heights.astype(dtype), slopes.astype(dtype), range_min=-B
    )


def both_ways(spline, x, params):
    """Both directions, their log-derivatives, and the gradients of their sum: `x` is read as a
    point in `y` too."""
    with tf.GradientTape() as tape:
        tape.watch([x, params])
        y, log_det = spline.forward(x, params)
        x_solved, log_det_inverse = spline.inverse(x, params)
        total = sum(tf.reduce_sum(v) for v in (y, log_det, x_solved, log_det_inverse))
    return (y, log_det, x_solved, log_det_inverse, *tape.gradient(total, [x, params]))


# One spline and one input shape ([60]) for every compiled check: XLA compiles take seconds,
# so each dtype compiles once for the whole file. The three tests that call `XLA` (10-30 s for
# the first, that compiles) are the `slow` tier's (`make test-slow`, run by CI).
COMPILED = RationalQuadraticSpline(num_bins=3, min_bin_width=0.05, min_derivative=0.3)
GRAPH = tf.function(lambda x, params: both_ways(COMPILED, x, params))
XLA = tf.function(lambda x, params: both_ways(COMPILED, x, params), jit_compile=True)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_round_trips_both_ways(dtype, shape, scale):
    spline = RationalQuadraticSpline(num_bins=5)
    x, params = draw(shape, spline, dtype, scale)
    y, log_det = spline.forward(x, params)
    x_back, _ = spline.inverse(y, params)
    y_again, log_det_back = spline.forward(x_back, params)
    assert y.shape == log_det.shape == x_back.shape == shape and y.dtype == dtype
    # Backward stable at every scale: x_back maps to y up to y's own rounding.
    assert np.all(np.abs(y_again - y) <= residual_bound(dtype, log_det_back))
    if scale <= 1:  # forward error, bounded by the slope at x (plateaus at larger scales)
        assert np.all(np.abs(x_back - x) <= residual_bound(dtype, -log_det))
    y_start, _ = draw(shape, spline, dtype, scale, seed=1)
    x_solved, _ = spline.inverse(y_start, params)
    y_solved, log_det_solved = spline.forward(x_solved, params)
    assert np.all(np.abs(y_solved - y_start) <= residual_bound(dtype, log_det_solved))
    assert all(np.all(np.isfinite(v)) for v in (y, log_det, x_back, x_solved))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_log_derivatives_are_the_autodiff_ones_and_agree_at_the_solution(dtype):
    spline = RationalQuadraticSpline()
    x, params = draw((400,), spline, dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y, log_det = spline.forward(x, params)
        x_solved, log_det_inverse = spline.inverse(x, params)  # x read as a point in y
    # Elementwise maps: the gradient of the sum is each unit's own derivative.
    np.testing.assert_allclose(np.log(tape.gradient(y, x)), log_det, **close(dtype))
    np.testing.assert_allclose(
        -np.log(tape.gradient(x_solved, x)), log_det_inverse, **close(dtype)
    )
    _, log_det_at_solution = spline.forward(x_solved, params)
    np.testing.assert_allclose(log_det_inverse, log_det_at_solution, **close(dtype))
    assert np.all(log_det[np.abs(x) >= B] == 0) and np.any(log_det != 0)


def identity_inputs(dtype, num_bins: int) -> tf.Tensor:
    """Tails, knots, signed zeros, the smallest normals and a grid: 60 values."""
    tiny = float(np.finfo(dtype.as_numpy_dtype).tiny)
    knots = list(np.linspace(-B, B, num_bins + 1))
    values = [-1e6, -B - 1e-3, *knots, -0.0, tiny, -tiny, 1e-9, 0.1, 1.234567, B + 1e-3, 1e6]
    grid = np.linspace(-1.2 * B, 1.2 * B, 60 - len(values))
    return tf.constant(np.concatenate([values, grid]), dtype)


def assert_identity(outputs, x, params):
    y, log_det, x_solved, log_det_inverse, grad_x, grad_params = outputs
    for out in (y, x_solved):
        np.testing.assert_array_equal(out, x)
    for out in (log_det, log_det_inverse):
        np.testing.assert_array_equal(out, np.zeros(x.shape))
    np.testing.assert_array_equal(grad_x, np.full(x.shape, 2.0))
    # ...and the parameters move it: a step whose network starts at zero can learn.
    inside = np.abs(x.numpy()) < B
    assert np.all(np.any(grad_params[inside] != 0, axis=-1))
    assert np.all(grad_params[~inside] == 0)


@pytest.mark.parametrize("num_bins", [2, 3, 8])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_zero_params_are_exactly_the_identity(dtype, num_bins):
    spline = RationalQuadraticSpline(num_bins=num_bins, min_bin_width=0.05, min_derivative=0.3)
    x = identity_inputs(dtype, num_bins)
    params = tf.zeros([x.shape[0], spline.num_params], dtype)
    assert_identity(both_ways(spline, x, params), x, params)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_zero_params_are_exactly_the_identity_compiled(dtype):
    x = identity_inputs(dtype, COMPILED.num_bins)
    params = tf.zeros([x.shape[0], COMPILED.num_params], dtype)
    for compiled in (GRAPH, XLA):
        assert_identity(compiled(x, params), x, params)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_strictly_increasing_in_x_for_fixed_params(dtype):
    spline = RationalQuadraticSpline()
    units = 6  # params [6, P] broadcast against x [2001, 6]: one spline per column
    grid = np.linspace(-1.2 * B, 1.2 * B, 2001)
    x = tf.constant(np.repeat(grid[:, None], units, axis=1), dtype)
    params = tf.constant(np.random.default_rng(2).standard_normal((units, 23)), dtype)
    y, _ = spline.forward(x, params)
    x_solved, _ = spline.inverse(x, params)
    # Steps of 0.0036 in x and y, slopes above e^-9 at this scale: far above the rounding.
    assert np.all(np.diff(y, axis=0) > 0) and np.all(np.diff(x_solved, axis=0) > 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_identity_tails_and_continuity_at_the_bounds(dtype):
    spline = RationalQuadraticSpline(num_bins=4)
    outside = np.array([-1e30, -1e3, -B - 1e-5, -B, B, B + 1e-5, 7.0, 1e30])
    x = tf.constant(outside, dtype)
    params = tf.constant(3 * np.random.default_rng(3).standard_normal((8, 11)), dtype)
    for direction in (spline.forward, spline.inverse):
        y, log_det = direction(x, params)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(log_det, np.zeros(8))
    # Just inside, the spline meets the tails with unit slope: |y - x| = O(delta^2).
    delta = 1e-6
    x_in = tf.constant([-B + delta, B - delta] * 4, dtype)
    params = tf.constant(np.random.default_rng(4).standard_normal((8, 11)), dtype)
    y, log_det = spline.forward(x_in, params)
    assert np.all(np.abs(y - x_in) <= 1e-2 * delta + 4 * eps(dtype) * B)
    assert np.all(np.abs(log_det) <= 1e-3)


@pytest.mark.parametrize("num_bins", [2, 6])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_matches_tfps_rational_quadratic_spline(dtype, num_bins):
    spline = RationalQuadraticSpline(num_bins=num_bins, min_derivative=0.01)
    x, params = draw((500,), spline, dtype)
    ref = reference(spline, params.numpy())
    y, log_det = spline.forward(x, params)
    np.testing.assert_allclose(y, ref.forward(x), **close(dtype))
    np.testing.assert_allclose(log_det, ref.forward_log_det_jacobian(x, 0), **close(dtype))
    x_solved, log_det_inverse = spline.inverse(x, params)
    np.testing.assert_allclose(x_solved, ref.inverse(x), **close(dtype))
    np.testing.assert_allclose(
        -log_det_inverse, ref.inverse_log_det_jacobian(x, 0), **close(dtype)
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_eager_function_and_xla_agree(dtype):
    x, params = draw((60,), COMPILED, dtype, seed=5)
    eager = both_ways(COMPILED, x, params)
    for compiled in (GRAPH, XLA):
        for a, b in zip(eager, compiled(x, params), strict=True):
            np.testing.assert_allclose(b, a, **close(dtype))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_values_and_gradients_stay_finite_for_extreme_params_and_inputs(dtype):
    big = float(np.finfo(dtype.as_numpy_dtype).max)
    rng = np.random.default_rng(6)
    xs = [-1e30, -B, -B + 1e-7, -1e-30, 0.0, 1e-30, 1.0, B - 1e-7, B, 1e30]
    x = tf.constant(np.tile(xs, 6), dtype)
    shape = (15, COMPILED.num_params)
    params = [1e4 * rng.standard_normal(shape), big * rng.choice([-1.0, 0.0, 1.0], shape)]
    params += [rng.choice([-1e4, 1e4], shape), rng.choice([-big, 0.0, 1e-30], shape)]
    params = tf.constant(np.concatenate(params), dtype)
    for direction in (COMPILED.forward, COMPILED.inverse):
        with tf.GradientTape() as tape:
            tape.watch([x, params])
            y, log_det = direction(x, params)
            total = tf.reduce_sum(y) + tf.reduce_sum(log_det)
        for v in (y, log_det, *tape.gradient(total, [x, params])):
            assert np.all(np.isfinite(v)), direction.__name__
    for v in XLA(x, params):  # the gradient of a sum of all four: finite only if each is
        assert np.all(np.isfinite(v)) and v.shape[0] == 60


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_bins": 2.0}, TypeError, r"`num_bins` must be an integer >= 2; got 2.0 \(float\)"),
        ({"num_bins": True}, TypeError, r"`num_bins` must be an integer >= 2; got True"),
        ({"num_bins": 1}, ValueError, r"`num_bins` must be an integer >= 2 .*; got 1"),
        ({"bound": "3"}, TypeError, r"`bound` must be a finite positive number; got '3'"),
        ({"bound": 0.0}, ValueError, r"`bound` must be a finite positive number; got 0.0"),
        ({"bound": np.inf}, ValueError, r"`bound` must be a finite positive number; got inf"),
        ({"min_bin_width": -1e-3}, ValueError, r"`min_bin_width` must be a finite positive"),
        ({"min_bin_height": None}, TypeError, r"`min_bin_height` must be a finite positive"),
        (
            {"num_bins": 8, "min_bin_width": 0.125},
            ValueError,
            r"`num_bins` \* `min_bin_width` must be < 1 .*; got 8 \* 0.125 = 1.0",
        ),
        (
            {"num_bins": 4, "min_bin_height": 0.3},
            ValueError,
            r"`num_bins` \* `min_bin_height` must be < 1 .*; got 4 \* 0.3 = 1.2",
        ),
        ({"min_derivative": 0.0}, ValueError, r"`min_derivative` must be a finite positive"),
        ({"min_derivative": float("nan")}, ValueError, r"`min_derivative` must be a finite"),
        ({"min_derivative": 1.0}, ValueError, r"`min_derivative` must be < 1 .*; got 1.0"),
        ({"min_bin_width": 1e-7}, ValueError, r"`min_bin_width` must be at least 1e-06 .*1e-07"),
        ({"min_derivative": 5e-7}, ValueError, r"`min_derivative` must be at least 1e-06 .*"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        RationalQuadraticSpline(**kwargs)


def test_shapes_broadcast_scalars_and_empty_batches():
    spline = RationalQuadraticSpline(num_bins=4)
    cases = [((), (11,)), ((0, 2), (0, 2, 11)), ((5, 2), (2, 11)), ((5, 1), (3, 11))]
    for x_shape, params_shape in cases:
        params = tf.fill(params_shape, 0.5)
        batch = tf.broadcast_static_shape(tf.TensorShape(x_shape), params.shape[:-1])
        for direction in (spline.forward, spline.inverse):
            out, log_det = direction(tf.fill(x_shape, 0.25), params)
            assert out.shape == log_det.shape == batch and out.dtype == tf.float32


def test_params_of_the_wrong_width_are_refused():
    spline = RationalQuadraticSpline(num_bins=4)
    with pytest.raises(ValueError, match=r"`params` must have a last axis of num_params=11 .*"):
        spline.forward(tf.zeros([3]), tf.zeros([3, 12]))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        spline.inverse(tf.zeros([]), tf.zeros([]))


def test_config_fingerprint_and_equality():
    spline = RationalQuadraticSpline(5, 2.5, 1e-2, 2e-2, 0.1)
    assert isinstance(spline, Transform) and spline.num_params == 14
    assert (spline.kind, spline.step_name) == ("spline", "spline_iaf")
    config = json.loads(json.dumps(spline.get_config()))
    assert config["kind"] == "spline"
    rebuilt = RationalQuadraticSpline(**{k: v for k, v in config.items() if k != "kind"})
    assert rebuilt == spline and hash(rebuilt) == hash(spline)
    assert spline.fingerprint() == {
        "transform": "spline", "num_bins": 5, "bound": 2.5, "min_bin_width": 0.01,
        "min_bin_height": 0.02, "min_derivative": 0.1,
    }  # fmt: skip
    assert RationalQuadraticSpline() != spline and repr(spline) == (
        "RationalQuadraticSpline(num_bins=5, bound=2.5, min_bin_width=0.01, "
        "min_bin_height=0.02, min_derivative=0.1)"
    )
    assert RationalQuadraticSpline(bound=3) == RationalQuadraticSpline(bound=3.0)
    with tf.GradientTape() as tape:  # no variables: the parameters come from the network
        spline.forward(tf.ones([2]), tf.ones([2, 14]))
        spline.inverse(tf.ones([2]), tf.ones([2, 14]))
    assert tape.watched_variables() == ()


# The spline step through the package: by kind, in a stack, a VI surrogate and a Keras 3 layer.


def test_a_spline_stack_by_kind_starts_at_the_identity_and_round_trips(tmp_path):
    import keras

    import tfp_iaf
    from tfp_iaf.keras3 import FlowLayer

    stack = tfp_iaf.dense_iaf_stack(3, 2, [8], context_size=2, transform="spline", seed=0)
    assert [n.num_params for n in stack.networks] == [23, 23]
    x = tf.constant(np.random.default_rng(0).standard_normal((4, 3)), tf.float32)
    h = tf.ones([4, 2])
    y = stack.forward(x, context=h)  # output layers start near zero: near the identity
    np.testing.assert_allclose(y, x, atol=0.05)
    np.testing.assert_allclose(stack.inverse(tf.identity(y), context=h), x, atol=1e-5)
    q = tfp_iaf.vi.build_iaf_surrogate_posterior([3], transform="spline", seed=0)
    z = q.sample(5, seed=(1, 2))
    assert np.all(np.isfinite(q.log_prob(z)))
    layer = FlowLayer("dense_iaf_stack", event_size=3, num_steps=1, hidden_units=[8],
                      transform="spline", seed=0)  # fmt: skip
    inputs = keras.Input([3])
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "spline.keras")
    loaded = keras.models.load_model(tmp_path / "spline.keras")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
