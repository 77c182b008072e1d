"""Shared property checks for autoregressive networks and IAF bijectors (dense and conv)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def tolerance(dtype) -> dict:
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == tf.float32 else {"rtol": 1e-9, "atol": 1e-9}


def perturb(variables, scale: float = 0.3, seed: int = 0) -> None:
    """Adds noise to every variable, so checks do not pass on near-identity initial weights."""
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(v + tf.constant(scale * rng.standard_normal(v.shape), dtype=v.dtype))


def fresh(t):
    """A new tensor with the same value: bypasses the bijector cache (keyed by tensor identity)."""
    return tf.identity(t)


def event_jacobian(fn, x, event_ndims: int):
    """Jacobian of `fn` w.r.t. `x` over the flattened event: `[N, E_out, E_in]`."""
    shape = tf.shape(x)
    batch = x.shape[: x.shape.rank - event_ndims]
    n = int(np.prod(batch)) if batch.rank else 1
    e = int(np.prod(x.shape[x.shape.rank - event_ndims :]))
    xf = tf.reshape(x, [n, e])
    with tf.GradientTape() as tape:
        tape.watch(xf)
        out = fn(tf.reshape(xf, shape))
        of = tf.reshape(out, [n, -1])
    return tape.batch_jacobian(of, xf).numpy()


def assert_round_trips(bijector, x, context, dtype):
    kwargs = {} if context is None else {"context": context}
    y = bijector.forward(fresh(x), **kwargs)
    x_back = bijector.inverse(fresh(y), **kwargs)
    y_back = bijector.forward(fresh(x_back), **kwargs)
    assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(x_back.numpy()))
    np.testing.assert_allclose(x_back, x, **tolerance(dtype))
    np.testing.assert_allclose(y_back, y, **tolerance(dtype))


def assert_log_dets_consistent(bijector, x, context, dtype):
    kwargs = {} if context is None else {"context": context}
    event_ndims = bijector.forward_min_event_ndims
    fldj = bijector.forward_log_det_jacobian(fresh(x), event_ndims, **kwargs)
    y = bijector.forward(fresh(x), **kwargs)
    ildj = bijector.inverse_log_det_jacobian(fresh(y), event_ndims, **kwargs)
    assert fldj.shape == x.shape[: x.shape.rank - event_ndims]
    np.testing.assert_allclose(fldj, -ildj, **tolerance(dtype))


def assert_log_det_matches_autodiff(bijector, x, context, dtype):
    kwargs = {} if context is None else {"context": context}
    event_ndims = bijector.forward_min_event_ndims
    jac = event_jacobian(lambda v: bijector.forward(v, **kwargs), fresh(x), event_ndims)
    _, logdet = np.linalg.slogdet(jac)
    fldj = bijector.forward_log_det_jacobian(fresh(x), event_ndims, **kwargs)
    np.testing.assert_allclose(logdet, np.reshape(fldj, [-1]), **tolerance(dtype))


def assert_autoregressive(network, x, context, expected_reach=None):
    """Params at degree d depend on inputs of degree < d only: the Jacobian of every parameter
    w.r.t. the input is exactly zero where the order forbids a dependency. With
    `expected_reach` (bool `[E_out, E_in]`), also non-zero exactly there, for some batch member.
    """
    degrees = network.degrees.reshape(-1)
    kwargs = {} if context is None else {"context": context}
    allowed = degrees[None, :] < degrees[:, None]  # [out position, in position]
    for p in range(network.num_params):
        jac = event_jacobian(lambda v, p=p: network(v, **kwargs)[..., p], x, network.event_ndims)
        assert np.all(jac[:, ~allowed] == 0.0), f"param {p}: a dependency the order forbids"
        if expected_reach is not None:
            reached = np.any(jac != 0.0, axis=0)
            np.testing.assert_array_equal(reached, expected_reach, err_msg=f"param {p} reach")


def assert_iaf_jacobian_triangular(bijector, x, context):
    """The IAF Jacobian, in the network's order, is lower triangular (exact zeros above)."""
    kwargs = {} if context is None else {"context": context}
    degrees = bijector.network.degrees.reshape(-1)
    jac = event_jacobian(
        lambda v: bijector.forward(v, **kwargs), fresh(x), bijector.forward_min_event_ndims
    )
    perm = np.argsort(degrees, kind="stable")
    ordered = jac[:, perm][:, :, perm]
    upper = np.triu(np.ones(ordered.shape[1:], dtype=bool), k=1)
    same_degree = degrees[perm][:, None] == degrees[perm][None, :]
    forbidden = upper | (same_degree & ~np.eye(len(degrees), dtype=bool))
    assert np.all(ordered[:, forbidden] == 0.0)


def assert_bijective_and_finite(bijector, x, y, kwargs, event_ndims: int, dtype):
    """TFP's `bijector_test_util.assert_bijective_and_finite` contract (a test-only module that
    TFP's wheel does not ship): both compositions are the identity, the log-dets of a pair are
    opposite, and everything is finite, for `x` in the domain and `y` in the range."""
    f_x = bijector.forward(fresh(x), **kwargs)
    g_y = bijector.inverse(fresh(y), **kwargs)
    values = {
        "inverse(forward(x))": bijector.inverse(fresh(f_x), **kwargs),
        "forward(inverse(y))": bijector.forward(fresh(g_y), **kwargs),
        "ildj(f(x))": bijector.inverse_log_det_jacobian(fresh(f_x), event_ndims, **kwargs),
        "fldj(x)": bijector.forward_log_det_jacobian(fresh(x), event_ndims, **kwargs),
        "ildj(y)": bijector.inverse_log_det_jacobian(fresh(y), event_ndims, **kwargs),
        "fldj(g(y))": bijector.forward_log_det_jacobian(fresh(g_y), event_ndims, **kwargs),
        "f(x)": f_x,
        "g(y)": g_y,
    }
    for name, value in values.items():
        assert np.all(np.isfinite(value)), f"{name} is not finite"
    tol = tolerance(dtype)
    np.testing.assert_allclose(values["inverse(forward(x))"], x, **tol)
    np.testing.assert_allclose(values["forward(inverse(y))"], y, **tol)
    np.testing.assert_allclose(-values["ildj(f(x))"], values["fldj(x)"], **tol)
    np.testing.assert_allclose(-values["ildj(y)"], values["fldj(g(y))"], **tol)
