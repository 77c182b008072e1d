"""IAF surrogate posteriors for any TFP model: structured events, constrained supports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import _checks
from tfp_iaf.stacks import dense_iaf_stack
from tfp_iaf.transforms import Transform
from tfp_iaf.vi import models, structure

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["build_iaf_surrogate_posterior", "flat_to_event", "surrogate_for"]

AFFINE_KINDS = ("diag", "tril", None)
# The default hidden width's cap: `2 D` units a layer cost `O(D^2)` weights (500 million at
# D = 5000); at 1024, D = 5000 has about 33 million, and D <= 512 keeps `max(32, 2 D)`.
MAX_DEFAULT_WIDTH = 1024


def build_iaf_surrogate_posterior(
    event_shape,
    bijector=None,
    *,
    num_steps: int = 2,
    hidden_units: Sequence[int] | None = None,
    affine: str | None = "diag",
    initial_scale: float = 0.1,
    gated: bool = False,
    log_scale_bound: float | None = None,
    transform: Transform | str | dict | None = None,
    activation="elu",
    parametrization: str = "ntk",
    dtype=tf.float32,
    seed: int | None = None,
    validate_args: bool = False,
    name: str | None = None,
) -> tfd.TransformedDistribution:
    """An IAF surrogate posterior over a model's (possibly structured, constrained) parameters.

    Shaped like TFP's `tfp.experimental.vi.build_affine_surrogate_posterior`. All parts of the
    event are flattened into one unconstrained vector of size `D`; the surrogate is

    - `eps ~ N(0, I_D)`;
    - `eps <- loc + L eps` (`affine="diag"`, the default, or `"tril"`; None for none), started
      at `loc = 0`, `L = initial_scale * I`: with the default scale 0.1 the surrogate starts as
      `N(0, 0.01 I)` in the unconstrained space, near the origin, where a stiff model's
      likelihood does not explode; the scale is softplus-parametrised, so it grows by about
      the learning rate (relative) per step;
    - `u = IAF_T(...IAF_1(eps))`: `num_steps` IAF steps on MADE networks, each started near the
      identity, in the form `u_i = sigma_i (eps_i + a_i)` (`scaled_shift=True`), the order
      reversed between steps and the last step in the event's own order: a JointDistribution
      lists parents before children, so each parameter is drawn given the ones it depends on
      (a funnel's scale before the values it scales);
    - `u` split into the parts of the event, reshaped, and mapped onto the model's support by
      `bijector`.

    The defaults are measured (docs/benchmarks_vi.md): the diagonal step gives every dimension
    an unbounded scale of its own (an ill-conditioned Gaussian needs scales the IAF's bounded
    ones cannot reach); on funnels, the first design tried (the `a + sigma eps` update, then a
    full-rank step from TFP's random start, `loc ~ U(-2, 2)` and scale 0.01) gave lower ELBOs.

    `log_prob` of the surrogate's own samples costs no inverse pass (the flow caches its
    log-dets with each sample), so `tfp.vi.fit_surrogate_posterior` trains it at the cost of the
    forward passes only.

    Shapes: samples have `event_shape`'s structure, each part `[*sample_shape, *part_shape]`;
    `log_prob: [*sample_shape]`.

    Args:
      event_shape: one shape, or a nested structure (dict, list, tuple, namedtuple) of shapes,
        of the model's parameters (in the model's constrained space).
      bijector: maps unconstrained values onto the model's support: None (unconstrained), one
        bijector (structured, e.g. `tfb.JointMap`, when `event_shape` is), or a structure of
        bijectors like `event_shape`. E.g. an inference_gym model's
        `default_event_space_bijector`, or `jd.experimental_default_event_space_bijector()`.
      num_steps: IAF steps (with `D == 1`, an IAF step is an affine map).
      hidden_units: the MADEs' hidden widths; default `[min(max(32, 2 D), 1024)] * 2`. Layers
        narrower than `D - 1` (the default's, past `D = 1025`) leave each output without the
        few inputs just before it that no hidden unit carries (`MADE`'s `allow_narrow`).
      affine: "diag" (per-dimension scale and shift), "tril" (full-rank) or None.
      initial_scale: the affine step's initial scale, > 0. Default 0.1 (docs/benchmarks_vi.md,
        the ablation: against 1, it gave up 0.06 nats on a funnel and 3 on a 100-dimensional
        ill-conditioned Gaussian, gained 0.6 on a Brownian motion with unknown scales, and is
        the narrow start at the origin that a stiff likelihood does not overflow at).
      gated: gated IAF updates (`y = g x + (1 - g) m`) instead of affine ones.
      log_scale_bound: each step's soft bound on `|log sigma|` (see
        `InverseAutoregressiveFlow`), or None (the default: measured, the bound cost ELBO on a
        funnel and diverged once in 5 on an ill-conditioned Gaussian).
      transform: the IAF steps' per-unit transform (`tfp_iaf.transforms`: an object, a kind
        or a config) in place of the affine (`scaled_shift`) or gated update; with it, `gated`
        and `log_scale_bound` keep their defaults. For a spline surrogate, put the spline
        inside the affine update, `Composed(["spline", Affine(None, scaled_shift=True)])`:
        a spline alone maps `[-3, 3]` onto itself, so it cannot shift or scale a unit by its
        parents beyond that window (docs/benchmarks_flows.md: alone it lost 0.8 to 9 nats to
        the affine surrogate on a funnel and eight schools).
      activation: the MADEs' hidden activation.
      parametrization: the MADEs' (see `MADE`): "ntk" (the default: each kernel scaled by
        `1 / sqrt(fan_in)`, so an Adam step moves the network's outputs by an amount that does
        not grow with its width; docs/benchmarks_vi.md: 5-13 nats better than "standard" on a
        100-dimensional ill-conditioned Gaussian, and without the fit's backtracking the
        standard surrogate diverged on a 501-dimensional item-response model) or "standard".
      dtype: float dtype of the samples (one dtype, or the structure of `event_shape`).
      seed: int seed of the networks' initial weights, or None.
      validate_args: checks on the bijectors' inputs.
      name: name of the distribution.

    Returns:
      A `tfd.TransformedDistribution` whose `trainable_variables` hold every parameter.

    Raises:
      TypeError: `event_shape` is not a shape or a structure of shapes; a `bijector` that is
        not a bijector or a structure of them; a non-float `dtype`; a non-int `seed`.
      ValueError: `bijector`'s structure does not match `event_shape`; a `bijector` onto
        events of higher rank than a part of `event_shape` (`tfb.FillScaleTriL` on a vector),
        or one that cannot map onto it; an event of size 0 (a structure of no shapes
        included); a negative `seed`; a bad `num_steps`, `hidden_units`, `affine` or
        `initial_scale`; no step at all; `transform` beside `gated` or `log_scale_bound`.

    Examples:
      >>> import tensorflow_probability as tfp
      >>> tfb = tfp.bijectors
      >>> q = build_iaf_surrogate_posterior(
      ...     {"scale": [], "x": [3]}, bijector={"scale": tfb.Exp(), "x": tfb.Identity()}, seed=1)
      >>> z = q.sample(5, seed=2)
      >>> z["scale"].shape, z["x"].shape, q.log_prob(z).shape
      (TensorShape([5]), TensorShape([5, 3]), TensorShape([5]))
    """
    if seed is not None and not _checks.is_int(seed):
        raise TypeError(f"`seed` must be an int or None; got {seed!r} ({type(seed).__name__})")
    if seed is not None and seed < 0:
        raise ValueError(f"`seed` must be a non-negative int or None; got {seed}")
    initial_scale = _checks.finite_float("initial_scale", initial_scale, positive=True)
    num_steps = _checks.non_negative_int("num_steps", num_steps)
    if affine not in AFFINE_KINDS:
        raise ValueError(f"`affine` must be one of {AFFINE_KINDS}; got {affine!r}")
    if num_steps == 0 and affine is None:
        raise ValueError("`num_steps=0` with `affine=None` leaves nothing to fit; got both")
    if transform is None:
        update = dict(gated=gated, scaled_shift=not gated, log_scale_bound=log_scale_bound)
    elif gated or log_scale_bound is not None:
        raise ValueError(
            "`transform` holds the IAF update's settings: `gated` and `log_scale_bound` must "
            f"keep their defaults beside it; got transform={transform!r}, gated={gated!r}, "
            f"log_scale_bound={log_scale_bound!r}"
        )
    else:
        update = dict(transform=transform)
    to_event, size = flat_to_event(event_shape, bijector, validate_args=validate_args)
    dtype = tf.nest.flatten(structure.as_dtypes(dtype, structure.as_shapes(event_shape)))[0]
    if hidden_units is None:
        hidden_units = [min(max(32, 2 * size), MAX_DEFAULT_WIDTH)] * 2

    iaf_seed = None if seed is None else int(np.random.default_rng(seed).integers(2**30))
    with tf.name_scope(name or "build_iaf_surrogate_posterior"):
        flat = []  # in sampling order
        if affine is not None:
            flat += _affine_step(size, affine, initial_scale, dtype, validate_args)
        iaf = None
        if num_steps:
            iaf = dense_iaf_stack(
                size,
                num_steps,
                hidden_units,
                # The last step (the one nearest the model) runs in the event's own order: a
                # JointDistribution lists parents before children, so each parameter is drawn
                # given the ones it depends on (a funnel's scale before the values it scales).
                order="left-to-right" if (num_steps - 1) % 2 == 0 else "right-to-left",
                activation=activation,
                network_kwargs=dict(
                    parametrization=parametrization,
                    # One variable and one matmul a layer: faster at VI's few samples
                    # (benchmarks_vi.md).
                    kernel_blocks=1,
                    packed=True,
                    allow_narrow=True,  # with layers at least `size - 1` wide it changes nothing
                ),
                dtype=dtype.name,
                seed=iaf_seed,
                validate_args=validate_args,
                name="iaf",
                **update,
            )
            flat.append(iaf)
        base = tfd.Sample(
            tfd.Normal(tf.zeros([], dtype), tf.ones([], dtype)),
            [size],
            validate_args=validate_args,
        )
        # One flat chain (not `to_event` nested inside): measured a few percent faster per step.
        chain = tfb.Chain([*to_event.bijectors, *reversed(flat)], validate_args=validate_args)
        surrogate = tfd.TransformedDistribution(
            base, chain, validate_args=validate_args, name=name or "iaf_surrogate_posterior"
        )
        if iaf is not None:
            iaf.forward(tf.zeros([1, size], dtype))  # creates the networks' variables
    return surrogate


def _affine_step(size, affine, initial_scale, dtype, validate_args):
    if affine == "diag":
        return [_DiagonalAffine(size, initial_scale, dtype, validate_args)]
    loc = tf.zeros([size], dtype)
    shift = tfb.Shift(tf.Variable(loc, name="loc"), validate_args=validate_args)
    scale_tril = tfp.util.TransformedVariable(
        initial_scale * tf.eye(size, dtype=dtype),
        tfb.FillScaleTriL(diag_shift=tf.constant(1e-5, dtype)),
        name="scale_tril",
    )
    return [tfb.ScaleMatvecTriL(scale_tril, validate_args=validate_args), shift]


class _DiagonalAffine(tfb.Bijector):
    """`y = loc + scale * x` per dimension, `scale = softplus(raw)`; log-det `sum(log scale)`.

    `loc` and `raw` are the rows of one `[2, D]` variable: in a VI step as small as a few
    hundred microseconds each trainable variable costs time of its own (its gradient, its
    optimizer slots and update), and an elementwise optimizer (Adam) updates the packed rows
    exactly as it would two variables. Starts at `loc = 0`, `scale = initial_scale`.
    """

    def __init__(self, size, initial_scale, dtype, validate_args=False, name="diagonal_affine"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            raw = tfp.math.softplus_inverse(tf.constant(initial_scale, dtype))
            self.loc_and_raw_scale = tf.Variable(
                tf.stack([tf.zeros([size], dtype), tf.fill([size], raw)]),
                name="loc_and_raw_scale",
            )
            super().__init__(
                forward_min_event_ndims=1,
                is_constant_jacobian=True,
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict()

    def _loc_and_scale(self):
        return self.loc_and_raw_scale[0], tf.math.softplus(self.loc_and_raw_scale[1])

    def _forward(self, x):
        loc, scale = self._loc_and_scale()
        return loc + scale * x

    def _inverse(self, y):
        loc, scale = self._loc_and_scale()
        return (y - loc) / scale

    def _forward_log_det_jacobian(self, x):
        return tf.reduce_sum(tf.math.log(self._loc_and_scale()[1]))


def flat_to_event(event_shape, bijector=None, *, validate_args: bool = False):
    """The bijector from one flat unconstrained vector onto a model's (structured) support.

    `[..., D] -> event_shape`: split into the parts of the event (in `tf.nest.flatten` order),
    each reshaped to its unconstrained shape, restructured, then mapped by `bijector`. Any
    flat-vector surrogate (TFP's `build_affine_surrogate_posterior(event_shape=[D])`, a
    `tfd.MultivariateNormalTriL`, a flow) becomes a surrogate of the model through it.

    Args:
      event_shape: one shape or a nested structure of shapes (see
        `build_iaf_surrogate_posterior`).
      bijector: None, a (structured) bijector, or a structure of bijectors onto the support.
      validate_args: checks in the bijectors.

    Returns:
      `(bijector, D)`: the bijector, and the size `D` of the flat unconstrained vector.

    Raises:
      TypeError, ValueError: as `build_iaf_surrogate_posterior` for `event_shape` and
        `bijector`, and for an event of size 0.
    """
    shapes = structure.as_shapes(event_shape)
    if sum(s.num_elements() for s in tf.nest.flatten(shapes)) == 0:
        raise ValueError(f"`event_shape` must have at least one element; got {shapes!r}")
    constrain = structure.constraining_bijector(bijector, shapes)
    structure.check_ranks(constrain, shapes)
    try:
        free_shapes = constrain.inverse_event_shape(shapes)  # each part's unconstrained shape
    except (ValueError, TypeError, IndexError) as error:
        raise ValueError(
            f"`bijector` {constrain.name!r} cannot map onto event_shape {shapes!r}: {error}"
        ) from error
    if structure.is_single(shapes):
        free_shapes = tf.TensorShape(free_shapes)
        size = free_shapes.num_elements()
        unflatten = [tfb.Reshape(free_shapes, [size], validate_args=validate_args)]
    else:
        parts = [tf.TensorShape(s) for s in tf.nest.flatten(free_shapes)]
        sizes = [p.num_elements() for p in parts]
        size = sum(sizes)
        keys = tf.nest.pack_sequence_as(free_shapes, list(range(len(parts))))
        unflatten = [
            tfb.Restructure(keys),
            tfb.JointMap([tfb.Reshape(p, [n]) for p, n in zip(parts, sizes, strict=True)]),
            tfb.Split(sizes, validate_args=validate_args),
        ]
    if size == 0:
        raise ValueError(f"`event_shape` must have at least one element; got {shapes!r}")
    return tfb.Chain([constrain, *unflatten], validate_args=validate_args), size


def surrogate_for(model, **kwargs) -> tfd.TransformedDistribution:
    """`build_iaf_surrogate_posterior` for a model: its structure, dtype and support read off it.

    Args:
      model: a pinned `tfd.JointDistribution*` (e.g. `jd.experimental_pin(y=...)`), any
        distribution, or an `inference_gym` model: anything with `event_shape` and `dtype` and
        either `experimental_default_event_space_bijector()` (TFP) or
        `default_event_space_bijector` (inference_gym).
      **kwargs: more `build_iaf_surrogate_posterior` arguments (`num_steps`, `seed`, ...).

    Returns:
      The surrogate, with the model's structure and dtype, on the model's support.

    Raises:
      TypeError: `model` has no event-space bijector; it or one of its (unpinned) parts is
        discrete (a non-float dtype or no event-space bijector: `tfd.Poisson`,
        `tfd.Bernoulli`, `tfd.Categorical`, ...), named in the message.
      ValueError: a part with a non-scalar batch shape (make it part of the event with
        `tfd.Sample` or `tfd.Independent`); and as `build_iaf_surrogate_posterior`.

    Examples:
      >>> import tensorflow_probability as tfp
      >>> tfd = tfp.distributions
      >>> jd = tfd.JointDistributionNamed({
      ...     "scale": tfd.HalfNormal(1.0),
      ...     "y": lambda scale: tfd.Sample(tfd.Normal(0.0, scale), 5)})
      >>> q = surrogate_for(jd.experimental_pin(y=[0.1, -0.3, 0.2, 0.0, 0.4]), seed=0)
      >>> z = q.sample(3, seed=1)
      >>> sorted(z), bool(tf.reduce_all(z["scale"] > 0))
      (['scale'], True)
    """
    event_shape, bijector, dtype = models.read_model(model)
    kwargs.setdefault("dtype", dtype)
    return build_iaf_surrogate_posterior(event_shape, bijector, **kwargs)
