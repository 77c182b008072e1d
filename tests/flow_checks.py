"""Shared property checks for autoregressive networks and IAF bijectors (dense and conv).

Every helper takes the bijector's keyword arguments as a dict (`{}` or `{"context": h}`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def tolerance(dtype) -> dict:
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == tf.float32 else {"rtol": 1e-9, "atol": 1e-9}


def strict_tolerance(dtype) -> dict:
    """The property checklist's: no looser than any test it merged. In float32 those used
    `rtol=atol=1e-4` (dense; conv log-dets) or `atol=2e-4, rtol=1e-7` (conv round trips): the
    bound `1e-4 + 1e-6 |v|` is below both for `|v| < 100` (the values checked, conv log-dets
    included, are tens at most). In float64 they used 1e-9 or 1e-10."""
    return {"rtol": 1e-6, "atol": 1e-4} if dtype == tf.float32 else {"rtol": 1e-10, "atol": 1e-10}


def sequential_tolerance(dtype) -> dict:
    """For a float32 conv inverse: each of its passes feeds the last one's rounding back through a
    gate, and round trips measured 2e-6 to 5e-4 over weight seeds on small events (the merged
    conv tests used `atol=2e-4` and failed on some seeds). float64 stays at `strict_tolerance`."""
    return {"rtol": 1e-6, "atol": 1e-3} if dtype == tf.float32 else strict_tolerance(dtype)


def perturb(variables, scale: float = 0.3, seed: int = 0) -> None:
    """Adds noise to every variable, so checks do not pass on near-identity initial weights."""
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(v + tf.constant(scale * rng.standard_normal(v.shape), dtype=v.dtype))


def fresh(t):
    """A new tensor with the same value: bypasses the bijector cache (keyed by tensor identity)."""
    return tf.identity(t)


def event_jacobian(fn, x, event_ndims: int):
    """Jacobian of `fn` w.r.t. `x` over the flattened event: `[N, E_out, E_in]`.

    Reverse mode, in one forward and one backward pass over `E_out` copies of `x`, copy `i`
    with the cotangent `e_i` on its output: row `i` of every batch member's Jacobian, the same
    exact Jacobian as `tape.batch_jacobian` (exact zeros included), without the `pfor` trace
    that costs `batch_jacobian` about half a second a call. (Forward mode, a
    `ForwardAccumulator` over `E_in` copies, gives the same matrix but traces a JVP function
    per op for every new flow: 0.3-2.8 s a call against 0.02-0.15 s, on the property
    checklist's flows.) `fn` must accept the extra leading axis (batch shapes broadcast, as
    every bijector and network here does).
    """
    rank = x.shape.rank
    batch = x.shape[: rank - event_ndims]
    n = int(np.prod(batch))
    e_out = int(np.prod(fn(x[None]).shape[1 + len(batch) :]))  # one pass for the output's size
    copies = tf.broadcast_to(x, [e_out, *x.shape])
    with tf.GradientTape() as tape:
        tape.watch(copies)
        out = tf.reshape(fn(copies), [e_out, n, e_out])
    cotangents = tf.broadcast_to(tf.eye(e_out, dtype=out.dtype)[:, None, :], out.shape)
    rows = tape.gradient(out, copies, output_gradients=cotangents)
    return tf.transpose(tf.reshape(rows, [e_out, n, -1]), [1, 0, 2]).numpy()  # [N, E_out, E_in]


def forward_jacobian(bijector, x, kwargs):
    """`d forward(x) / d x` over the flattened event: `[N, E, E]`."""
    return event_jacobian(
        lambda v: bijector.forward(v, **kwargs), fresh(x), bijector.forward_min_event_ndims
    )


def assert_finite(**values):
    for name, value in values.items():
        assert np.all(np.isfinite(value)), f"{name} is not finite"


def assert_every_variable_gets_a_gradient(tape, loss, variables, direction: str):
    grads = tape.gradient(loss, variables)
    assert variables, "no variables"
    for v, g in zip(variables, grads, strict=True):
        assert g is not None, f"{direction}: no gradient for {v.name}"
        assert np.all(np.isfinite(g)), f"{direction}: non-finite gradient for {v.name}"
        assert np.any(g.numpy() != 0), f"{direction}: zero gradient for {v.name}"


def assert_flow_properties(flow, x, kwargs, tol, degrees=None):
    """The property checklist (numbered as in STYLE.md's), for one flow at one batch `x`:

    1. round trip: `forward(inverse(y)) == y`, and `inverse(forward(x)) == x` up to what rounding
       carried back through the Jacobian can move it (`rounding_error_in_x`), all finite;
    2. `fldj(x) == -ildj(forward(x))`, shaped like the batch (up to what `x`'s own rounding moves
       the log-det);
    3. `fldj` equals `slogdet` of the autodiff Jacobian, whose sign is +1 (neither trivial);
    4. with `degrees` (a single step), the Jacobian is triangular in the network's order;
    6. shapes and dtype preserved;
    7. every variable gets a (finite, non-zero) gradient, through the forward pass and through
       the sequential inverse.

    One sequential inverse serves the round trip, the ildj and the inverse's gradients (the ildj
    comes from the cache of the tensor that was inverted). Returns the Jacobian `[N, E, E]`.
    """
    n = flow.forward_min_event_ndims
    batch = x.shape[: x.shape.rank - n]
    variables = flow.trainable_variables
    x_fresh = fresh(x)  # a value cached by an earlier call would not see the current weights
    with tf.GradientTape() as tape:
        y = flow.forward(x_fresh, **kwargs)
        fldj = flow.forward_log_det_jacobian(x_fresh, n, **kwargs)  # cached: no second pass
        loss = tf.reduce_sum(y) + tf.reduce_sum(fldj)
    assert_every_variable_gets_a_gradient(tape, loss, variables, "forward")
    assert y.shape == x.shape and y.dtype == x.dtype
    assert fldj.shape == batch and fldj.dtype == x.dtype
    with tf.GradientTape() as tape:
        y_fresh = fresh(y)
        x_back = flow.inverse(y_fresh, **kwargs)
        ildj = flow.inverse_log_det_jacobian(y_fresh, n, **kwargs)
        loss = tf.reduce_sum(x_back) + tf.reduce_sum(ildj)
    assert_every_variable_gets_a_gradient(tape, loss, variables, "inverse")
    y_back = flow.forward(fresh(x_back), **kwargs)
    assert_finite(y=y, fldj=fldj, x_back=x_back, ildj=ildj, y_back=y_back)
    np.testing.assert_allclose(y_back, y, **tol, err_msg="forward(inverse(y))")
    jac = forward_jacobian(flow, x, kwargs)
    assert_close_within_conditioning(x_back, x, rounding_error_in_x(jac, y), tol)
    # ildj(y) is -fldj at the solved x_back: it may differ from fldj(x) by what x_back's own
    # error moves it, to first order (twice that allowed).
    with tf.GradientTape() as tape:
        x_watched = fresh(x)
        tape.watch(x_watched)
        fldj_again = flow.forward_log_det_jacobian(x_watched, n, **kwargs)
    moved = np.abs(tape.gradient(fldj_again, x_watched).numpy() * (x_back - x).numpy())
    slack = 2 * np.sum(np.reshape(moved, [*fldj.shape, -1]), axis=-1)
    assert_close_within_conditioning(-ildj, fldj, slack, tol, "fldj(x) == -ildj(forward(x))")
    assert_log_det_is_slogdet(jac, fldj, tol)
    if degrees is not None:
        assert_triangular_in_order(jac, degrees)
    # Not vacuous: the perturbed weights move some diagonal entry far from 1. (A bound on the
    # summed log-det would not hold for every seed: an event's terms can cancel.)
    assert np.max(np.abs(np.log(np.abs(np.diagonal(jac, axis1=1, axis2=2))))) > 0.1
    return jac


def rounding_error_in_x(jac, y, factor: float = 32.0):
    """What rounding alone can move a solved `x` by, per unit: `factor * eps * |J^-1| (|y| + 1)`.

    The sequential inverse is backward stable (`forward(inverse(y)) == y` to rounding, checked
    strictly), so its error in `x` is the rounding of `y` carried back through `J^-1`: the
    condition number times `eps`. That is far below the strict tolerance for the affine and
    gated steps at the checklist's noise (conditions of tens), and what lets a spline whose
    noisy bins reach slopes of 1e-6 (conditions of 1e8) be held to rounding rather than to a
    fixed bound. `factor`: the measured error was at most 7 times the bound's `eps` term over
    the checklist's spline cases."""
    eps = np.finfo(y.dtype.as_numpy_dtype).eps
    n = jac.shape[0]
    size = np.abs(np.reshape(y.numpy(), [n, -1])) + 1.0
    carried = np.einsum("nij,nj->ni", np.abs(np.linalg.inv(jac)), size)
    return np.reshape(factor * eps * carried, y.shape)


def assert_close_within_conditioning(actual, desired, slack, tol, err_msg="inverse(forward(x))"):
    """`|actual - desired| <= atol + rtol |desired| + slack`, elementwise."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    allowed = tol["atol"] + tol["rtol"] * np.abs(desired) + slack
    excess = np.abs(actual - desired) - allowed
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else ()
    assert not excess.size or excess[worst] <= 0, (
        f"{err_msg}: |{actual[worst]} - {desired[worst]}| exceeds the {allowed[worst]:.3g} "
        f"allowed at {worst} (tolerance {tol}, conditioning slack {np.asarray(slack)[worst]:.3g})"
    )


def assert_log_det_is_slogdet(jac, fldj, tol):
    """`fldj` (batch-shaped) equals `log |det jac|` (`[N, E, E]`), and the determinant is > 0."""
    sign, logdet = np.linalg.slogdet(jac)
    assert np.all(sign == 1.0), "the Jacobian's determinant must be positive"
    np.testing.assert_allclose(logdet, np.reshape(fldj, [-1]), **tol, err_msg="slogdet")


def assert_triangular_in_order(jac, degrees):
    """An IAF Jacobian (`[N, E, E]`), sorted by degree, is lower triangular: exact zeros above
    the diagonal and between distinct positions of equal degree."""
    degrees = np.reshape(degrees, [-1])
    perm = np.argsort(degrees, kind="stable")
    ordered = jac[:, perm][:, :, perm]
    upper = np.triu(np.ones(ordered.shape[1:], dtype=bool), k=1)
    same_degree = degrees[perm][:, None] == degrees[perm][None, :]
    forbidden = upper | (same_degree & ~np.eye(len(degrees), dtype=bool))
    assert np.all(ordered[:, forbidden] == 0.0), "a dependency the order forbids"


def assert_autoregressive(network, x, kwargs, expected_reach=None):
    """Params at degree d depend on inputs of degree < d only: the Jacobian of every parameter
    w.r.t. the input is exactly zero where the order forbids a dependency. With
    `expected_reach` (bool `[E_out, E_in]`, or `[E_out, num_params, E_in]` per parameter), also
    non-zero exactly there, for some batch member.
    """
    degrees = network.degrees.reshape(-1)
    allowed = degrees[None, :] < degrees[:, None]  # [out position, in position]
    for p in range(network.num_params):
        jac = event_jacobian(lambda v, p=p: network(v, **kwargs)[..., p], x, network.event_ndims)
        assert np.all(jac[:, ~allowed] == 0.0), f"param {p}: a dependency the order forbids"
        if expected_reach is not None:
            reach = expected_reach if expected_reach.ndim == 2 else expected_reach[:, p]
            reached = np.any(jac != 0.0, axis=0)
            np.testing.assert_array_equal(reached, reach, err_msg=f"param {p} reach")


def assert_bijective_and_finite(bijector, x, y, kwargs, event_ndims: int, dtype, tol=None):
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
    assert_finite(**values)
    tol = tol or tolerance(dtype)
    np.testing.assert_allclose(values["inverse(forward(x))"], x, **tol)
    np.testing.assert_allclose(values["forward(inverse(y))"], y, **tol)
    np.testing.assert_allclose(-values["ildj(f(x))"], values["fldj(x)"], **tol)
    np.testing.assert_allclose(-values["ildj(y)"], values["fldj(g(y))"], **tol)
