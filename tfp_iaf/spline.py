"""The monotone rational-quadratic spline transform of Neural Spline Flows, per unit.

`K` bins split `[-B, B]` in `x` and in `y`; inside, each bin maps by a ratio of two quadratics
(Gregory & Delbourgo 1982) fixed by the bin's corners and the derivatives at its two knots;
outside, the map is the identity. With the bin `k` holding `x`, its corners `(x_k, y_k)`,
width `w`, height `h`, slope `s = h / w`, knot derivatives `d_0, d_1`, `xi = (x - x_k) / w`
and `g = xi (1 - xi)`:

- forward: `y = y_k + h (s xi^2 + d_0 g) / (s + (d_0 + d_1 - 2 s) g)`;
- log-derivative: `log(s^2 (d_1 xi^2 + 2 s g + d_0 (1 - xi)^2)) - 2 log(s + (d_0 + d_1 - 2 s) g)`;
- inverse: with `eta = (y - y_k) / h`, `xi` is the root in `[0, 1]` of `a xi^2 + b xi + c`,
  `a = h (s - d_0) + (y - y_k) (d_0 + d_1 - 2 s)`, `b = h d_0 - (y - y_k)(d_0 + d_1 - 2 s)`,
  `c = -s (y - y_k)`, taken as `2 c / (-b - sqrt(b^2 - 4 a c))` where `b >= 0` and as
  `(-b + sqrt(b^2 - 4 a c)) / (2 a)` where `b < 0` (then `a > 0`): neither subtracts nearly
  equal numbers;
- tails: `y = x`, log-derivative 0, outside `[-B, B]`; the boundary knots' derivatives are 1,
  so the map and its derivative are continuous at `±B`;
- all-zero parameters give equal bins and unit slopes: exactly the identity, in floating point
  too, so a step whose network's output layer starts at zero starts at the identity.

Shapes: `x: [...]`, `params: [..., 3 K - 1]` -> `y`, `log |dy/dx|`: `[...]`, per unit. The
widths, heights and derivatives come from `params` as `RationalQuadraticSpline` documents.

References:
  Durkan, Bekasov, Murray & Papamakarios (2019), Neural Spline Flows,
  https://arxiv.org/abs/1906.04032 (appendix A: forward, derivative, inverse).
  Gregory & Delbourgo (1982), Piecewise rational quadratic interpolation to monotonic data,
  IMA Journal of Numerical Analysis 2(2).
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from tfp_iaf import _checks
from tfp_iaf.transforms import TRANSFORMS, Transform

__all__ = ["RationalQuadraticSpline"]

# The least minimum width, height and derivative: float32's spacing near B is at most B 1.2e-7,
# so a bin of width 2 B 1e-6 still holds about 16 points, and the ratios of knot derivatives to
# bin slopes stay below 1e12, so the inverse's quadratic (terms up to their square) stays finite.
_LEAST_MINIMUM = 1e-6


class RationalQuadraticSpline(Transform):
    """A monotone rational-quadratic spline of each unit: `K` bins on `[-B, B]`, identity tails.

    The network gives `3 K - 1` raw parameters a unit: `K` for the bin widths, `K` for the bin
    heights, `K - 1` for the derivatives at the interior knots.

    - widths `2 B (m_w + (1 - K m_w) softmax(raw_w))`, heights the same with `m_h`: each bin at
      least `2 B m_w` wide and `2 B m_h` high, summing to `2 B`;
    - interior knot derivatives `min(m_d + softplus(raw_d + c), 1 / m_d)`, with
      `c = log(expm1(1 - m_d))` so that `raw_d = 0` gives 1; near 0 it is evaluated as
      `1 + log1p((1 - exp(m_d - 1)) expm1(raw_d))`, the same function, which gives 1 exactly.
      The cap `1 / m_d` bounds every ratio the formulas divide by, so any finite parameters
      give finite values and gradients (a sequential solve feeds arbitrary parameters to the
      units it has not reached yet);
    - boundary knot derivatives 1, matching the identity tails;
    - forward, inverse and log-derivative as in the module docstring, written as the identity
      plus terms that vanish when `h = w` and `d_0 = d_1 = s`, so all-zero parameters give
      `y == x` and a log-derivative of exactly 0;
    - the inverse's log-derivative is the forward one at the solution.

    Shapes: `x: [...]`, `params: [..., 3 K - 1]` (leading shapes broadcast) -> `y`,
    `log |dy/dx|`: the broadcast leading shape.

    Examples:
      >>> spline = RationalQuadraticSpline(num_bins=4, bound=3.0)
      >>> spline.num_params
      11
      >>> x = tf.constant([-4.0, -1.0, 0.5, 2.0])
      >>> y, log_det = spline.forward(x, tf.zeros([4, 11]))  # zero parameters: the identity
      >>> bool(tf.reduce_all(y == x)), float(tf.reduce_max(tf.abs(log_det)))
      (True, 0.0)
      >>> params = tf.random.stateless_normal([4, 11], seed=[1, 2])
      >>> y, log_det = spline.forward(x, params)
      >>> x_back, log_det_back = spline.inverse(y, params)
      >>> bool(tf.reduce_all(tf.abs(x_back - x) < 1e-5))
      True

    Args:
      num_bins: `K`, an integer >= 2 (one bin with unit boundary slopes is always the identity).
      bound: `B`, a finite positive number: the spline acts on `[-B, B]`.
      min_bin_width: `m_w`, the least bin width as a fraction of `2 B`: at least 1e-6 (float32
        holds about 16 points of such a bin; narrower ones collapse), and `K m_w < 1`.
      min_bin_height: `m_h`, the same for heights.
      min_derivative: `m_d` in `[1e-6, 1)`, the least interior knot derivative (`1 / m_d` is
        the largest); below 1 so that zero parameters give derivative 1.

    Raises:
      TypeError: `num_bins` not an integer, or another argument not a number.
      ValueError: `num_bins < 2`; `bound` not finite and positive; a minimum not finite or
        below 1e-6; `num_bins * min_bin_width >= 1` (or height); `min_derivative >= 1`.

    Inputs and parameters are assumed finite (any finite values); nothing checks it here.

    References:
      Durkan, Bekasov, Murray & Papamakarios (2019), Neural Spline Flows,
      https://arxiv.org/abs/1906.04032.
    """

    kind = "spline"
    step_name = "spline_iaf"

    def __init__(
        self,
        num_bins: int = 8,
        bound: float = 3.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ):
        if not _checks.is_int(num_bins):
            raise TypeError(
                f"`num_bins` must be an integer >= 2; got {num_bins!r} ({type(num_bins).__name__})"
            )
        if num_bins < 2:
            raise ValueError(
                "`num_bins` must be an integer >= 2 (one bin with unit boundary slopes is the "
                f"identity for all parameters); got {num_bins!r}"
            )
        self.num_bins = int(num_bins)
        self.bound = _checks.finite_float("bound", bound, positive=True)
        for name, value in (
            ("min_bin_width", min_bin_width),
            ("min_bin_height", min_bin_height),
            ("min_derivative", min_derivative),
        ):
            value = _checks.finite_float(name, value, positive=True)
            if value < _LEAST_MINIMUM:
                raise ValueError(
                    f"`{name}` must be at least {_LEAST_MINIMUM!r} (float32 cannot resolve "
                    f"narrower bins or a wider range of slopes); got {value!r}"
                )
            setattr(self, name, value)
        for name in ("min_bin_width", "min_bin_height"):
            value = getattr(self, name)
            if self.num_bins * value >= 1:
                raise ValueError(
                    f"`num_bins` * `{name}` must be < 1 (the bins must fit in [-bound, bound]); "
                    f"got {self.num_bins} * {value!r} = {self.num_bins * value!r}"
                )
        if self.min_derivative >= 1:
            raise ValueError(
                "`min_derivative` must be < 1 (zero parameters give knot derivatives of 1); "
                f"got {self.min_derivative!r}"
            )
        self.num_params = 3 * self.num_bins - 1

    def forward(self, x, params):
        x = tf.convert_to_tensor(x)
        bound = tf.constant(self.bound, x.dtype)
        inside = (x > -bound) & (x < bound)
        x_in = tf.clip_by_value(x, -bound, bound)  # the tails never reach the spline's maths
        x_k, w, y_k, h, d0, d1 = self._bin(x_in, params, by_y=False)
        s = h / w
        xi = tf.clip_by_value((x_in - x_k) / w, 0.0, 1.0)
        r0, r1 = d0 / s, d1 / s  # the knot derivatives relative to the bin's slope
        bend, log_det = _within_bin(xi, s, r0, r1)
        # y_k + h (xi + bend), written as x plus terms that are 0 where h = w and y_k = x_k.
        y = x_in + (y_k - x_k) + (s - 1.0) * (x_in - x_k) + h * bend
        return tf.where(inside, y, x), tf.where(inside, log_det, tf.zeros_like(log_det))

    def inverse(self, y, params):
        y = tf.convert_to_tensor(y)
        bound = tf.constant(self.bound, y.dtype)
        inside = (y > -bound) & (y < bound)
        y_in = tf.clip_by_value(y, -bound, bound)
        x_k, w, y_k, h, d0, d1 = self._bin(y_in, params, by_y=True)
        s = h / w
        eta = tf.clip_by_value((y_in - y_k) / h, 0.0, 1.0)
        r0, r1 = d0 / s, d1 / s
        # The module docstring's a, b, c divided by h s: a + b = 1, so b < 0 only where a > 1.
        a = (1.0 - r0) + eta * (r0 + r1 - 2.0)
        b = r0 - eta * (r0 + r1 - 2.0)
        root = tf.sqrt(tf.maximum(b * b + 4.0 * a * eta, 0.0))
        b_pos = b >= 0.0
        one = tf.ones_like(b)
        xi = tf.where(
            b_pos,
            2.0 * eta / tf.where(b_pos, b + root, one),
            (root - b) / tf.where(b_pos, one, 2.0 * a),
        )
        xi = tf.clip_by_value(xi, 0.0, 1.0)
        # x_k + w xi as y plus terms that are 0 where h = w, x_k = y_k and xi = eta.
        x = y_in + (x_k - y_k) + (w / h - 1.0) * (y_in - y_k) + w * (xi - eta)
        _, log_det = _within_bin(xi, s, r0, r1)
        return tf.where(inside, x, y), tf.where(inside, log_det, tf.zeros_like(log_det))

    def _bin(self, v, params, by_y: bool):
        """`(x_k, w, y_k, h, d_0, d_1)` of the bin holding `v` (in `y` where `by_y`), `[...]`."""
        params = tf.convert_to_tensor(params, dtype=v.dtype)
        rank = params.shape.rank
        if rank is not None and (rank == 0 or params.shape[-1] not in (None, self.num_params)):
            raise ValueError(
                f"`params` must have a last axis of num_params={self.num_params} "
                f"(3 * num_bins - 1, num_bins={self.num_bins}); got shape {tuple(params.shape)}"
            )
        k = self.num_bins
        knots_x = _knots(params[..., :k], self.bound, self.min_bin_width)
        knots_y = _knots(params[..., k : 2 * k], self.bound, self.min_bin_height)
        derivs = self._derivatives(params[..., 2 * k :])
        knots = knots_y if by_y else knots_x
        # The bin index counts the interior knots at or below v: a comparison, not a search,
        # so it runs under XLA and gives each unit its own bin.
        index = tf.reduce_sum(tf.cast(v[..., None] >= knots[..., 1:-1], tf.int32), axis=-1)
        one_hot = tf.equal(index[..., None], tf.range(k))
        table = tf.stack(
            [knots_x[..., :-1], knots_x[..., 1:], knots_y[..., :-1], knots_y[..., 1:],
             derivs[..., :-1], derivs[..., 1:]],
            axis=-2,
        )  # fmt: skip
        picked = tf.where(one_hot[..., None, :], table, tf.zeros([], v.dtype))
        x_k, x_k1, y_k, y_k1, d0, d1 = tf.unstack(tf.reduce_sum(picked, axis=-1), axis=-1)
        return x_k, x_k1 - x_k, y_k, y_k1 - y_k, d0, d1

    def _derivatives(self, raw: tf.Tensor) -> tf.Tensor:
        """The knot derivatives `[..., K + 1]`: `[1, interior from raw, 1]`."""
        m = self.min_derivative
        c = math.log(math.expm1(1.0 - m))  # softplus(c) = 1 - m
        near = tf.abs(raw) <= 1.0
        raw_near = tf.where(near, raw, tf.zeros_like(raw))  # both branches finite: no NaN grads
        # m + softplus(r + c) = 1 + log1p(sigmoid(c) expm1(r)), and sigmoid(c) = 1 - exp(m - 1).
        exact = 1.0 + tf.math.log1p(-math.expm1(m - 1.0) * tf.math.expm1(raw_near))
        d = tf.where(near, exact, m + tf.math.softplus(raw + c))
        d = tf.minimum(d, tf.constant(1.0 / m, raw.dtype))
        ones = tf.ones_like(raw[..., :1])
        return tf.concat([ones, d, ones], axis=-1)

    def fingerprint(self) -> dict[str, Any]:
        return {"transform": self.kind, **self._settings()}

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.kind, **self._settings()}

    def _settings(self) -> dict[str, Any]:
        return {
            "num_bins": self.num_bins,
            "bound": self.bound,
            "min_bin_width": self.min_bin_width,
            "min_bin_height": self.min_bin_height,
            "min_derivative": self.min_derivative,
        }


def _knots(raw: tf.Tensor, bound: float, min_size: float) -> tf.Tensor:
    """`[-B, ..., B]`, `[..., K + 1]`: `[-B, B]` cut into bins of at least `2 B min_size`."""
    k = raw.shape[-1]
    # m + (1 - K m) softmax, centred on 1/K: equal raw sizes give sizes 1/K whatever m is, so
    # zero parameters give the same knots in x and y even where m_w != m_h.
    sizes = 1.0 / k + (1.0 - k * min_size) * (tf.math.softmax(raw, axis=-1) - 1.0 / k)
    interior = -bound + (2.0 * bound) * tf.cumsum(sizes[..., :-1], axis=-1)
    ends = tf.ones_like(raw[..., :1]) * bound  # the last knot is B exactly, whatever the sum
    return tf.concat([-ends, interior, ends], axis=-1)


def _within_bin(xi, s, r0, r1):
    """`(bend, log dy/dx)` at `xi` in a bin of slope `s` and knot derivatives `r0 s`, `r1 s`.

    With `g = xi (1 - xi)` and `den = 1 + (r0 + r1 - 2) g`, at least 1/2 (its terms cancel by
    at most half):

    - `bend = g ((r0 - 1)(1 - xi) - (r1 - 1) xi) / den`, so that `y = y_k + h (xi + bend)`;
    - `log dy/dx = log s + log(r1 xi^2 + 2 g + r0 (1 - xi)^2) - 2 log(den)`. The middle term
      is `log1p((r1 - 1) xi^2 + (r0 - 1)(1 - xi)^2)` where both `r >= 1/2` (no cancellation,
      and exactly 0 at `r0 = r1 = 1`), the log of the positive sum elsewhere.
    """
    xi_c = 1.0 - xi
    g = xi * xi_c
    v = (r0 + r1 - 2.0) * g
    bend = g * ((r0 - 1.0) * xi_c - (r1 - 1.0) * xi) / (1.0 + v)
    near = (r0 >= 0.5) & (r1 >= 0.5)
    u = tf.where(near, (r1 - 1.0) * xi * xi + (r0 - 1.0) * xi_c * xi_c, tf.zeros_like(g))
    log_num = tf.where(
        near, tf.math.log1p(u), tf.math.log(r1 * xi * xi + 2.0 * g + r0 * xi_c * xi_c)
    )
    return bend, tf.math.log(s) + log_num - 2.0 * tf.math.log1p(v)


# The builders, the VI surrogate and the Keras 3 layer take it by its kind, "spline".
TRANSFORMS[RationalQuadraticSpline.kind] = RationalQuadraticSpline
