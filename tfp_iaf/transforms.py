"""The per-unit transforms an autoregressive step applies: the seam between network and update.

An IAF step computes `params = network(x, context)`, `[..., *event_shape, num_params]`, and maps
every unit `x_i` by a monotone scalar function `y_i = t(x_i; params_i)`. The transform is that
function, and nothing else: it says how many parameters per unit it reads (`num_params`, which
the network must output), and gives both directions with the per-unit log-derivative
`log |dy_i / dx_i|`, elementwise. `InverseAutoregressiveFlow` runs it forward in one network
pass and inverts it unit by unit in the network's sequential solve; nothing outside this module
knows which transform it holds.

- `Affine`: `log_sigma = B tanh(b / B)` (`B = log_scale_bound`; None: `log_sigma = b`), then
  `y = a + exp(log_sigma) x`, or `y = exp(log_sigma) (x + a)` with `scaled_shift=True`;
  log-derivative `log_sigma`.
- `Gated` (IAF paper, section 4): `g = sigmoid(b + forget_bias)`, `y = g x + (1 - g) a`;
  log-derivative `log_sigmoid(b + forget_bias)`.
- `tfp_iaf.spline.RationalQuadraticSpline` (kind "spline"): a monotone rational-quadratic
  spline of `K` bins on `[-B, B]` with identity tails (Neural Spline Flows), `3 K - 1`
  parameters a unit, the identity at zero parameters; it registers itself in `TRANSFORMS`.
- `Composed`: transforms in turn, their parameters side by side (e.g. a spline inside the
  affine update, `y = sigma (s(x) + a)`: the spline's shape with an unbounded shift and scale).

A transform also gives its fingerprint fields (the settings that change its function, merged
into the step's fingerprint: today's keys, so checkpoints keep restoring), the default name of a
step, and `get_config` / `from_config` (a JSON dict, for `.keras` configs and `repr`).

How to add one: subclass `Transform`, set `num_params` and `kind`, implement `forward`,
`inverse` and `fingerprint`, and add it to `TRANSFORMS`; the stack builders, the VI surrogate
and the Keras 3 layer take it by object or by `kind`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks

__all__ = [
    "TRANSFORMS",
    "Affine",
    "Composed",
    "Gated",
    "Transform",
    "as_transform",
    "from_update",
]


class Transform:
    """A monotone map of each unit given its parameters: the update of one autoregressive step.

    Subclasses set `num_params` (parameters per unit) and `kind` (the name `as_transform` and
    configs use) and implement `forward`, `inverse` and `fingerprint`. Instances are immutable
    settings, with no variables: the parameters come from the step's network.
    """

    num_params: int
    kind: str
    step_name = "iaf"  # the default name of a step applying it
    # Whether `inverse(y, params)` is affine in `params[..., 0]` (`alpha + beta * a`): the
    # closed-form solve of `LinearAutoregressive` needs it.
    affine_in_shift = False

    def forward(self, x: tf.Tensor, params: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`(y, log |dy/dx|)` per unit, for `x: [...]`, `params: [..., num_params]`."""
        raise NotImplementedError

    def inverse(self, y: tf.Tensor, params: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`(x, log |dy/dx| at x)` per unit: the forward log-derivative at the solution."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change the function, as the step's fingerprint holds them."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """`{"kind": ..., <settings>}`: JSON, `as_transform(config)` rebuilds it."""
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.get_config().items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        config = self.get_config()
        config.pop("kind")
        settings = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{type(self).__name__}({settings})"


class _AffineForm(Transform):
    """A transform `y = shift + exp(log_scale) * x` whose `(shift, log_scale)` the subclass
    computes from the parameters (`shift_and_log_scale`), affine in the first parameter."""

    num_params = 2
    affine_in_shift = True

    def shift_and_log_scale(self, params: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`(shift, log_scale)` with `y = shift + exp(log_scale) * x`."""
        raise NotImplementedError

    def forward(self, x, params):
        shift, log_scale = self.shift_and_log_scale(params)
        return shift + tf.exp(log_scale) * x, log_scale

    def inverse(self, y, params):
        shift, log_scale = self.shift_and_log_scale(params)
        return (y - shift) * tf.exp(-log_scale), log_scale


class Affine(_AffineForm):
    """`y = a + exp(log_sigma) * x` (or `exp(log_sigma) * (x + a)`), `log_sigma` softly bounded.

    - `log_sigma = B * tanh(b / B)` with `B = log_scale_bound` (None: `log_sigma = b`, the IAF
      authors' form, which nothing keeps from overflowing);
    - `scaled_shift=True`: the shift in the units of `x` (TFP's `Invert(MaskedAutoregressiveFlow)`
      form), which trains better as a variational posterior on funnels;
    - log-derivative `log_sigma`; inverse `x = (y - a) exp(-log_sigma)` (or `y exp(-log_sigma)
      - a`).

    Args:
      log_scale_bound: `B`, a finite positive float, or None.
      scaled_shift: apply the shift before the scale.

    Raises:
      TypeError: `scaled_shift` not a bool, `log_scale_bound` not a number.
      ValueError: a `log_scale_bound` that is not finite and positive.
    """

    kind = "affine"

    def __init__(self, log_scale_bound: float | None = 5.0, scaled_shift: bool = False):
        if not isinstance(scaled_shift, bool):
            raise TypeError(
                f"`scaled_shift` must be a bool; got {scaled_shift!r} "
                f"({type(scaled_shift).__name__})"
            )
        if log_scale_bound is not None:
            log_scale_bound = _checks.finite_float(
                "log_scale_bound", log_scale_bound, positive=True
            )
        self.log_scale_bound, self.scaled_shift = log_scale_bound, scaled_shift

    def shift_and_log_scale(self, params: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`(shift, log_scale)` with `y = shift + exp(log_scale) * x`."""
        a, b = params[..., 0], params[..., 1]
        if self.log_scale_bound is not None:
            bound = tf.cast(self.log_scale_bound, b.dtype)
            b = bound * tf.math.tanh(b / bound)
        return (tf.exp(b) * a if self.scaled_shift else a), b

    def fingerprint(self):
        return {
            "gated": False,
            "log_scale_bound": self.log_scale_bound,
            "scaled_shift": self.scaled_shift,
        }

    def get_config(self):
        return {
            "kind": self.kind,
            "log_scale_bound": self.log_scale_bound,
            "scaled_shift": self.scaled_shift,
        }


class Gated(_AffineForm):
    """The gated (LSTM-style) update of the IAF paper: `y = g * x + (1 - g) * a`.

    - `g = sigmoid(b + forget_bias)`: a convex mix of the unit and the network's `a`, so the
      log-derivative `log_sigmoid(b + forget_bias)` is never positive and a deep stack cannot
      blow up; inverse `x = (y - (1 - g) a) / g`.

    Args:
      forget_bias: added to the gate logit; the default 2.0 starts `g` near 0.88.

    Raises:
      TypeError, ValueError: `forget_bias` is not a finite number.
    """

    kind = "gated"
    step_name = "gated_iaf"

    def __init__(self, forget_bias: float = 2.0):
        self.forget_bias = _checks.finite_float("forget_bias", forget_bias)

    def shift_and_log_scale(self, params: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`(shift, log_scale)` with `y = shift + exp(log_scale) * x`."""
        a, b = params[..., 0], params[..., 1]
        logit = b + tf.cast(self.forget_bias, b.dtype)
        return (1.0 - tf.math.sigmoid(logit)) * a, tf.math.log_sigmoid(logit)

    def fingerprint(self):
        return {"gated": True, "forget_bias": self.forget_bias}

    def get_config(self):
        return {"kind": self.kind, "forget_bias": self.forget_bias}


class Composed(Transform):
    """Transforms applied one after the other to each unit: `parts[0]` first.

    The parameters are the parts' side by side (`num_params` their sum), the log-derivative the
    sum of the parts' (each at its own input); the inverse undoes the parts in reverse order.
    E.g. `Composed(["spline", Affine(None, scaled_shift=True)])`: `y = sigma (s(x) + a)`, a
    spline's shape with the affine step's unbounded shift and scale around it (the spline's own
    range is fixed: `[-B, B]` onto `[-B, B]`). It starts at the identity when every part does.

    Args:
      parts: two or more transforms (objects, kinds or configs, as `as_transform` takes).

    Raises:
      TypeError: `parts` not a list or tuple, or a part `as_transform` refuses.
      ValueError: fewer than two parts, or a part `as_transform` refuses.
    """

    kind = "composed"
    step_name = "composed_iaf"

    def __init__(self, parts: Sequence[Transform | str | dict]):
        if not isinstance(parts, (list, tuple)):
            raise TypeError(
                f"`parts` must be a list of transforms; got {parts!r} ({type(parts).__name__})"
            )
        if len(parts) < 2:
            raise ValueError(f"`parts` must hold two or more transforms; got {list(parts)!r}")
        self.parts = tuple(as_transform(part) for part in parts)
        self.num_params = sum(part.num_params for part in self.parts)

    def _split(self, params):
        offsets = np.cumsum([0, *(part.num_params for part in self.parts)])
        return [params[..., a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]

    def forward(self, x, params):
        total = None
        for part, p in zip(self.parts, self._split(params), strict=True):
            x, log_det = part.forward(x, p)
            total = log_det if total is None else total + log_det
        return x, total

    def inverse(self, y, params):
        total = None
        for part, p in reversed(list(zip(self.parts, self._split(params), strict=True))):
            y, log_det = part.inverse(y, p)
            total = log_det if total is None else total + log_det
        return y, total

    def fingerprint(self) -> dict[str, Any]:
        return {"transform": self.kind, "parts": [part.fingerprint() for part in self.parts]}

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "parts": [part.get_config() for part in self.parts]}

    def __hash__(self) -> int:
        return hash(json.dumps(self.get_config(), sort_keys=True))


# Every transform by its `kind`: what `as_transform` builds from a name or a config
# (`tfp_iaf.spline` adds "spline" when tfp_iaf is imported).
TRANSFORMS: dict[str, type[Transform]] = {"affine": Affine, "gated": Gated, "composed": Composed}


def as_transform(transform: Transform | str | dict) -> Transform:
    """`transform` itself, or the transform of that `kind` (`"gated"`) or config (`{"kind": ..}`).

    Raises:
      TypeError: not a `Transform`, a name or a dict.
      ValueError: an unknown kind, or a config its class refuses.
    """
    if isinstance(transform, Transform):
        return transform
    if isinstance(transform, str):
        transform = {"kind": transform}
    if not isinstance(transform, dict):
        raise TypeError(
            "`transform` must be a tfp_iaf.transforms.Transform, one of "
            f"{sorted(TRANSFORMS)} or a config dict; got {transform!r} "
            f"({type(transform).__name__})"
        )
    config = dict(transform)
    kind = config.pop("kind", None)
    if kind not in TRANSFORMS:
        raise ValueError(f"`transform` kind must be one of {sorted(TRANSFORMS)}; got {kind!r}")
    return TRANSFORMS[kind](**config)


_UPDATE_DEFAULTS = {
    "gated": False,
    "forget_bias": 2.0,
    "log_scale_bound": 5.0,
    "scaled_shift": False,
}


def from_update(
    transform: Transform | str | dict | None = None,
    gated: bool = False,
    forget_bias: float = 2.0,
    log_scale_bound: float | None = 5.0,
    scaled_shift: bool = False,
) -> Transform:
    """The transform of an IAF step's arguments: `transform` itself (`as_transform`), or the
    `Gated` or `Affine` update that `gated`, `forget_bias`, `log_scale_bound` and
    `scaled_shift` describe (every one of them checked, whichever update reads it).

    Raises:
      TypeError: `gated` or `scaled_shift` not a bool; a bad `transform`, `forget_bias` or
        `log_scale_bound`.
      ValueError: `transform` beside update settings other than their defaults;
        `scaled_shift` with `gated`; a non-finite `forget_bias`; a `log_scale_bound` that is
        not finite and positive.
    """
    for arg, value in (("gated", gated), ("scaled_shift", scaled_shift)):
        if not isinstance(value, bool):
            raise TypeError(f"`{arg}` must be a bool; got {value!r} ({type(value).__name__})")
    if transform is not None:
        settings = dict(
            gated=gated, forget_bias=forget_bias, log_scale_bound=log_scale_bound,
            scaled_shift=scaled_shift,
        )  # fmt: skip
        given = {k: v for k, v in settings.items() if v != _UPDATE_DEFAULTS[k]}
        if given:
            raise ValueError(
                "the update's settings belong to the transform: with `transform` given, "
                f"`gated`, `forget_bias`, `log_scale_bound` and `scaled_shift` keep their "
                f"defaults; got transform={transform!r} and {given}"
            )
        return as_transform(transform)
    if gated and scaled_shift:
        raise ValueError("`scaled_shift=True` is a form of the affine update; got gated=True")
    affine = Affine(log_scale_bound, scaled_shift)  # checks the bound, though a gate ignores it
    gate = Gated(forget_bias)  # checks the bias, though the affine update ignores it
    return gate if gated else affine
