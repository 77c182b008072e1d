"""The seam between an IAF step's network and its update: `tfp_iaf.transforms`.

A step applies its transform and nothing else knows which: `gated=True` is the `Gated`
transform, the stack builders size their networks by `transform.num_params`, and a transform
defined outside the package (here `Shift`, one parameter a unit) runs through the step, the
stack, both builders, the VI surrogate and the Keras 3 layer unchanged.
"""

import inspect

import numpy as np
import pytest
import tensorflow as tf

import tfp_iaf
from tests import flow_checks as fc
from tfp_iaf import transforms
from tfp_iaf.keras3 import FlowLayer
from tfp_iaf.spline import RationalQuadraticSpline
from tfp_iaf.transforms import Affine, Composed, Gated, Transform, as_transform

X = tf.constant(np.random.default_rng(0).standard_normal((4, 3)), tf.float32)
H = tf.constant(np.random.default_rng(1).standard_normal((4, 2)), tf.float32)


class Shift(Transform):
    """`y = x + a`: a volume-preserving transform of one parameter a unit (NICE's update)."""

    num_params = 1
    kind = "shift"

    def forward(self, x, params):
        return x + params[..., 0], tf.zeros_like(x)

    def inverse(self, y, params):
        return y - params[..., 0], tf.zeros_like(y)

    def fingerprint(self):
        return {"transform": "shift"}

    def get_config(self):
        return {"kind": self.kind}


@pytest.fixture
def shift_registered(monkeypatch):
    monkeypatch.setitem(transforms.TRANSFORMS, "shift", Shift)


def made(num_params=2, seed=0):
    return tfp_iaf.MADE(3, [8], num_params=num_params, context_size=2, seed=seed)


@pytest.mark.parametrize(
    "settings, transform",
    [({}, Affine()), ({"gated": True}, Gated()), ({"scaled_shift": True}, Affine(5.0, True))],
    ids=["affine", "gated", "scaled_shift"],
)
def test_the_update_flags_are_their_transforms(settings, transform):
    by_flags = tfp_iaf.InverseAutoregressiveFlow(made(), **settings)
    by_transform = tfp_iaf.InverseAutoregressiveFlow(made(), transform=transform)
    assert by_flags.transform == transform and by_flags.name == by_transform.name
    assert by_flags._fingerprint() == by_transform._fingerprint()
    np.testing.assert_array_equal(
        by_flags.forward(X, context=H), by_transform.forward(X, context=H)
    )


SPLINE_IN_AFFINE = Composed([RationalQuadraticSpline(4), Affine(None, True)])


@pytest.mark.parametrize(
    "transform",
    [Affine(), Gated(0.5), Affine(None, True), SPLINE_IN_AFFINE, Composed(["gated", "affine"])],
    ids=repr,
)
def test_a_transforms_directions_invert_each_other_with_the_autodiff_log_det(transform):
    rng = np.random.default_rng(2)
    params = tf.constant(rng.standard_normal((5, transform.num_params)), tf.float64)
    x = tf.constant(np.random.default_rng(3).standard_normal(5), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y, log_det = transform.forward(x, params)
    np.testing.assert_allclose(np.log(np.abs(tape.gradient(y, x))), log_det, atol=1e-12)
    x_back, log_det_back = transform.inverse(y, params)
    np.testing.assert_allclose(x_back, x, atol=1e-12)
    np.testing.assert_allclose(log_det_back, log_det, atol=1e-12)


def test_a_transform_rebuilds_from_its_kind_and_config():
    for transform in (
        Affine(), Affine(2.0, True), Affine(None), Gated(), Gated(-1.0), SPLINE_IN_AFFINE
    ):  # fmt: skip
        assert as_transform(transform.get_config()) == transform
        assert hash(as_transform(transform.get_config())) == hash(transform)
        assert as_transform(transform) is transform
    assert as_transform("gated") == Gated() and as_transform("affine") == Affine()
    assert repr(Gated(1.5)) == "Gated(forget_bias=1.5)" and hash(Gated()) == hash(Gated(2.0))


@pytest.mark.parametrize(
    "value, error, match",
    [
        (
            "spiral",
            ValueError,
            r"`transform` kind must be one of \[.*'gated'.*\]; got 'spiral'",
        ),
        ({"forget_bias": 1.0}, ValueError, r"`transform` kind must be one of .*; got None"),
        (3, TypeError, r"`transform` must be a tfp_iaf.transforms.Transform, one of .*; got 3"),
        ({"kind": "gated", "forget_bias": "x"}, TypeError, r"`forget_bias` must be a finite"),
        ({"kind": "affine", "log_scale_bound": -1}, ValueError, r"`log_scale_bound` must be a"),
        (
            {"kind": "affine", "scaled_shift": 1},
            TypeError,
            r"`scaled_shift` must be a bool; got 1",
        ),
        ({"kind": "composed", "parts": ["spline"]}, ValueError, r"`parts` must hold two or"),
        ({"kind": "composed", "parts": "spline"}, TypeError, r"`parts` must be a list .*'spline'"),
        ({"kind": "composed", "parts": ["spline", 3]}, TypeError, r"`transform` must be a"),
    ],
)
def test_a_bad_transform_is_refused_naming_it(value, error, match):
    with pytest.raises(error, match=match):
        as_transform(value)


def test_a_step_refuses_a_transform_beside_update_settings_or_a_network_of_other_width():
    with pytest.raises(ValueError, match=r"with `transform` given, `gated`, .* got transform="):
        tfp_iaf.InverseAutoregressiveFlow(made(), gated=True, transform=Gated())
    with pytest.raises(ValueError, match=r"must output num_params=1 \(.*Shift\(\).*\); got 2"):
        tfp_iaf.InverseAutoregressiveFlow(made(), transform=Shift())
    step = tfp_iaf.InverseAutoregressiveFlow(made(num_params=1), transform=Shift())
    with pytest.raises(TypeError, match=r"`shift_and_log_scale` needs a transform of affine"):
        step.shift_and_log_scale(X, context=H)


def test_a_transform_from_outside_runs_through_the_step_and_the_stack():
    steps = [
        tfp_iaf.InverseAutoregressiveFlow(made(1, seed=t), transform=Shift(), name=f"s{t}")
        for t in range(2)
    ]
    stack = tfp_iaf.IAFStack([steps[0], tfp_iaf.IAFStack([steps[1]], name="inner")])
    y = stack.forward(X, context=H)
    np.testing.assert_allclose(stack.inverse(tf.identity(y), context=H), X, atol=1e-6)
    assert float(tf.reduce_max(tf.abs(stack.forward_log_det_jacobian(X, 1, context=H)))) == 0
    assert stack.networks == [s.network for s in steps]
    assert stack._fingerprint()["steps"][1]["steps"][0]["transform"] == "shift"


@pytest.mark.parametrize("builder", ["dense", "conv"])
def test_the_builders_size_their_networks_by_the_transform(builder, shift_registered):
    if builder == "dense":
        stack = tfp_iaf.dense_iaf_stack(3, 2, [8], transform="shift", seed=0)
        x = X
    else:
        stack = tfp_iaf.conv_iaf_stack((2, 2, 2), 2, [4], transform=Shift(), seed=0)
        x = tf.reshape(tf.range(16, dtype=tf.float32) / 16, [2, 2, 2, 2])
    assert [n.num_params for n in stack.networks] == [1, 1]
    assert all(step.transform == Shift() for step in stack.steps)
    np.testing.assert_allclose(stack.inverse(tf.identity(stack.forward(x))), x, atol=1e-5)


def test_the_stack_builders_take_the_same_keywords_where_they_mean_the_same():
    dense = inspect.signature(tfp_iaf.dense_iaf_stack).parameters
    conv = inspect.signature(tfp_iaf.conv_iaf_stack).parameters
    shared = {
        "num_steps", "order", "transform", "gated", "forget_bias", "log_scale_bound",
        "scaled_shift", "activation", "residual", "network_kwargs", "dtype", "seed",
        "validate_args", "name",
    }  # fmt: skip
    assert shared <= dense.keys() & conv.keys()
    for name in shared - {"name", "num_steps", "order"}:
        assert dense[name].default == conv[name].default, name
    only = (dense.keys() ^ conv.keys()) - {"event_size", "event_shape"}
    assert only == {"hidden_units", "filters", "context_size", "context_channels", "kernel_size",
                    "weight_norm"}  # fmt: skip


def test_a_seeded_conv_stack_is_reproducible_and_the_seed_changes_it():
    def weights(seed):
        stack = tfp_iaf.conv_iaf_stack((2, 2, 2), 2, [4], context_channels=1, seed=seed)
        stack.forward(tf.ones([1, 2, 2, 2]), context=tf.ones([1, 2, 2, 1]))  # builds it
        return [v.numpy() for v in stack.variables]

    first, again, other = weights(1), weights(1), weights(2)
    assert len(first) == 10  # per step: 2 masked convolutions (kernel, bias), the context kernel
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other, strict=True) if a.any())


def test_the_vi_surrogate_builds_its_steps_with_the_stack_builder(shift_registered):
    q = tfp_iaf.vi.build_iaf_surrogate_posterior([3], transform="gated", seed=0)
    gated = tfp_iaf.vi.build_iaf_surrogate_posterior([3], gated=True, seed=0)
    np.testing.assert_array_equal(q.sample(4, seed=(1, 2)), gated.sample(4, seed=(1, 2)))
    q = tfp_iaf.vi.build_iaf_surrogate_posterior([3], transform=Shift(), num_steps=2, seed=0)
    z = q.sample(4, seed=1)
    assert np.all(np.isfinite(q.log_prob(z)))
    with pytest.raises(
        ValueError, match=r"`gated` and `log_scale_bound` must keep their defaults"
    ):
        tfp_iaf.vi.build_iaf_surrogate_posterior([3], transform="gated", log_scale_bound=2.0)


def test_a_keras3_flow_layer_keeps_its_transform_in_its_config(shift_registered):
    layer = FlowLayer("dense_iaf_stack", event_size=3, num_steps=1, hidden_units=[4],
                      transform=Shift())  # fmt: skip
    config = layer.get_config()
    assert config["transform"] == {"kind": "shift"}
    rebuilt = FlowLayer.from_config(config)
    assert rebuilt.flow.steps[0].transform == Shift()


def test_a_network_with_a_closed_form_solve_refuses_a_transform_it_cannot_invert():
    class Cubic(Shift):
        num_params = 2  # as wide as the affine update, but not affine in its first parameter

    net = tfp_iaf.LinearAutoregressive(3)
    with pytest.raises(ValueError, match=r"LinearAutoregressive solves its inverse in closed"):
        tfp_iaf.InverseAutoregressiveFlow(net, transform=Cubic())


def test_a_composed_transform_is_its_parts_in_turn_and_starts_at_the_identity():
    params = tf.constant(np.random.default_rng(4).standard_normal((5, 13)), tf.float64)
    x = tf.constant(np.random.default_rng(5).standard_normal(5), tf.float64)
    spline, affine = SPLINE_IN_AFFINE.parts
    middle, first = spline.forward(x, params[..., :11])
    expected, second = affine.forward(middle, params[..., 11:])
    y, log_det = SPLINE_IN_AFFINE.forward(x, params)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(log_det, first + second)
    y, log_det = SPLINE_IN_AFFINE.forward(x, tf.zeros_like(params))
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(log_det, tf.zeros_like(x))
    assert SPLINE_IN_AFFINE.num_params == 13


def test_a_step_of_a_composed_transform_keeps_the_flow_properties_and_its_fingerprint():
    step = tfp_iaf.InverseAutoregressiveFlow(
        made(SPLINE_IN_AFFINE.num_params), transform=SPLINE_IN_AFFINE
    )
    step.forward(X, context=H)
    fc.perturb(step.trainable_variables, scale=0.2)
    fc.assert_flow_properties(step, X, {"context": H}, fc.strict_tolerance(tf.float32))
    parts = step._fingerprint()["parts"]
    assert parts == [part.fingerprint() for part in SPLINE_IN_AFFINE.parts]
    assert parts[0]["transform"] == "spline"
    wider = Composed([RationalQuadraticSpline(8), Affine(None, True)])
    other = tfp_iaf.InverseAutoregressiveFlow(made(wider.num_params), transform=wider)
    assert other._fingerprint() != step._fingerprint()
