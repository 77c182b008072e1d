"""The registry of the flow configurations tfp_iaf ships: every checklist draws its cases here.

A `Kind` is one flow a user builds (an `InverseAutoregressiveFlow` step on one network kind, a
stack builder, `PlanarFlow`), with the orders and updates it takes and the event it is tested on.
A `Config` is one buildable configuration: kind x order x update x context x dtype, and for conv
flows optionally a smaller event (the conformance suite's: its XLA compiles and SavedModels of
a sequential inverse cost time per position, and its bijective check runs at 4x the inputs).

- `checklist_cases(kinds)`: the property checklist's spread (test_iaf.py, test_planar.py):
  every kind x update x context x batch shape x dtype, the order turning with the others.
- `CONFORMANCE`: the conformance suite's selection (test_conformance.py), one configuration a
  row, which `test_the_conformance_selection_covers_the_registry` holds to every kind, order,
  update, context and dtype in `KINDS`.

A new network kind, order or update is added to `KINDS`; both checklists then reach it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iaf

tfb = tfp.bijectors

F32, F64 = tf.float32, tf.float64
DTYPES = (F32, F64)
BATCHES = ((), (3,), (2, 3))
DENSE_ORDERS = ("left-to-right", "right-to-left", (2, 0, 3, 1))
# The updates: the affine and gated flags, and each other transform by its kind
# (`tfp_iaf.transforms.TRANSFORMS`), built with `transform=<kind>`.
UPDATES = ("affine", "gated", "scaled_shift")
# The networks with a general sequential solve take every transform; `LinearAutoregressive`
# (its closed-form solve) the updates affine in their shift.
ALL_UPDATES = (*UPDATES, "spline")
# The property checklist's updates: `scaled_shift` is the affine update with its shift scaled,
# held to TFP's checks by the conformance suite. The spline's Jacobian at the checklist's weight
# noise reaches condition numbers of 1e8 (slopes of 1e-6 in a noisy bin): its round trips in x
# are held to rounding carried back through the Jacobian (`flow_checks.rounding_error_in_x`).
CHECKLIST_UPDATES = ("affine", "gated", "spline")
# Batch shapes are the step's and the network's business, the same for every transform: a
# transform after the first two meets the checklist at the largest only (the spline's 8 cases
# instead of 24 save about a minute of the suite).
TRANSFORM_ONLY_BATCHES = ((2, 3),)
FULL_SPREAD_UPDATES = (None, "affine", "gated")
EVENT, CONTEXT, CONV_CONTEXT = 4, 3, 2


def _update_kwargs(update: str | None) -> dict:
    if update in (None, "affine"):
        return {}
    return {update: True} if update in ("gated", "scaled_shift") else {"transform": update}


def _num_params(update: str | None) -> int:
    """The parameters per unit the update's networks output."""
    kind = update if update in tfp_iaf.transforms.TRANSFORMS else "affine"
    return tfp_iaf.transforms.as_transform(kind).num_params


def _conv_shape(dtype: tf.DType) -> tuple[int, int, int]:
    # float32 gets the smaller event: through the 48 sequential passes of a (4, 4, 3) raster
    # inverse, float32 round trips lose up to 5e-4 for some weights (float64: 1e-12).
    return (4, 4, 3) if dtype == F64 else (3, 5, 2)


def _made(c: Config, name: str):
    net = tfp_iaf.MADE(
        EVENT, [8, 8], num_params=_num_params(c.update),
        context_size=CONTEXT if c.context else None, order=c.net_order, dtype=c.dt,
    )  # fmt: skip
    return tfp_iaf.InverseAutoregressiveFlow(net, name=name, **_update_kwargs(c.update))


def _linear(c: Config, name: str):
    ctx = CONTEXT if c.context else None
    net = tfp_iaf.LinearAutoregressive(EVENT, context_size=ctx, order=c.net_order, dtype=c.dt)
    return tfp_iaf.InverseAutoregressiveFlow(net, name=name, **_update_kwargs(c.update))


def _conv(c: Config, name: str):
    shape = c.event_shape
    ctx = CONV_CONTEXT if c.context else None
    filters = [2 * shape[2]] * 2
    net = tfp_iaf.ConvMADE(
        shape, filters, num_params=_num_params(c.update), context_channels=ctx, order=c.order,
        dtype=c.dt,
    )  # fmt: skip
    return tfp_iaf.InverseAutoregressiveFlow(net, name=name, **_update_kwargs(c.update))


def _dense_stack(c: Config, name: str):
    ctx = CONTEXT if c.context else None
    return tfp_iaf.dense_iaf_stack(
        EVENT, 2, [8], context_size=ctx, dtype=c.dt, name=name, **_update_kwargs(c.update)
    )


def _conv_stack(c: Config, name: str):
    shape = c.event_shape
    return tfp_iaf.conv_iaf_stack(
        shape,
        2,
        [2 * shape[2]],
        context_channels=1 if c.context else None,
        order=c.order,
        dtype=c.dt,
        name=name,
        **_update_kwargs(c.update),
    )


def _planar(c: Config, name: str):
    ctx = CONTEXT if c.context else None
    return tfp_iaf.PlanarFlow(EVENT, 3, context_size=ctx, dtype=c.dt, name=name)


@dataclasses.dataclass(frozen=True)
class Kind:
    """One flow tfp_iaf ships, the orders and updates it takes, and its test-sized shapes."""

    name: str
    orders: Sequence  # (None,) for a flow without an order
    updates: Sequence  # (None,) for a flow without an update choice
    event_shape: Callable[[tf.DType], tuple[int, ...]]
    context_shape: Callable[[tuple[int, ...]], tuple[int, ...]]  # of the event shape
    build: Callable[[Config, str], tfb.Bijector]


def _dense(_):
    return (EVENT,)


def _dense_context(_):
    return (CONTEXT,)


def _conv_context(shape):
    return (*shape[:2], CONV_CONTEXT)


KINDS = {
    kind.name: kind
    for kind in [
        Kind("made", DENSE_ORDERS, ALL_UPDATES, _dense, _dense_context, _made),
        Kind("linear", DENSE_ORDERS, UPDATES, _dense, _dense_context, _linear),
        Kind(
            "conv_raster",
            ("raster", "raster_reversed"),
            # The spline runs on raster orders too (the same solver as the channel orders'
            # round trips), but its conformance case cost 82 s of XLA compile alone.
            UPDATES,
            _conv_shape,
            _conv_context,
            _conv,
        ),
        Kind(
            "conv_channel",
            ("channel", "channel_reversed"),
            ALL_UPDATES,
            _conv_shape,
            _conv_context,
            _conv,
        ),
        Kind(
            "dense_stack",
            (None,),  # orders alternate between the steps
            ("affine", "gated"),
            _dense,
            _dense_context,
            _dense_stack,
        ),
        Kind(
            "conv_stack",
            ("raster", "channel"),  # the first step's; its reverse alternates
            ("affine", "gated"),
            lambda _: (2, 2, 3),
            lambda shape: (*shape[:2], 1),
            _conv_stack,
        ),
        # Not autoregressive: the baseline of the paper's comparison, held to the same checks.
        Kind("planar", (None,), (None,), _dense, _dense_context, _planar),
    ]
}
# One IAF step on one network: its `degrees` order the Jacobian (the triangular check).
IAF_STEP_KINDS = ("made", "linear", "conv_raster", "conv_channel")


@dataclasses.dataclass(frozen=True)
class Config:
    """One shipped configuration: kind x order x update x context x dtype."""

    kind: str
    order: str | tuple | None
    update: str | None
    context: bool
    dtype: tf.DType
    shape: tuple[int, ...] | None = None  # the event, if not the kind's

    @property
    def id(self) -> str:
        order = self.order if isinstance(self.order, str | None) else "perm"
        parts = [
            self.kind,
            order,
            self.update,
            "ctx" if self.context else "noctx",
            self.dtype.name,
        ]
        return "-".join(p for p in parts if p is not None)

    @property
    def dt(self) -> str:
        return self.dtype.name

    @property
    def net_order(self) -> str | list:
        return list(self.order) if isinstance(self.order, tuple) else self.order

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.shape or KINDS[self.kind].event_shape(self.dtype)

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        return KINDS[self.kind].context_shape(self.event_shape) if self.context else None

    def build(self, name: str = "flow") -> tfb.Bijector:
        return KINDS[self.kind].build(self, name)


def checklist_cases(kinds: Sequence[str]) -> list[tuple[Config, tuple[int, ...], str | None]]:
    """`(config, batch, context)` for kind x update x context x batch shape x dtype.

    The order turns with the others, so that every order of a kind meets every update,
    context, batch shape and dtype; so does the context's batch shape, x's (`"ctx"`) or its
    trailing part (`"ctx_broadcast"`). `context` is None without one.
    """
    cases = []
    for name in kinds:
        kind = KINDS[name]
        updates = [u for u in kind.updates if u is None or u in CHECKLIST_UPDATES]
        for update, context, batch, dtype in (
            case
            for u in updates
            for case in itertools.product(
                [u],
                [False, True],
                BATCHES if u in FULL_SPREAD_UPDATES else TRANSFORM_ONLY_BATCHES,
                DTYPES,
            )
        ):
            turn = (update == "gated") + (dtype == F64)
            order = kind.orders[(turn + context + len(batch)) % len(kind.orders)]
            broadcast = ("ctx_broadcast" if turn % 2 else "ctx") if context else None
            cases.append((Config(name, order, update, context, dtype), batch, broadcast))
    return cases


CONFORMANCE = [
    Config("made", "left-to-right", "affine", True, F32),
    Config("made", "right-to-left", "gated", False, F64),
    Config("made", (2, 0, 3, 1), "scaled_shift", False, F64),
    Config("made", "right-to-left", "spline", True, F32),
    Config("dense_stack", None, "affine", False, F64),
    Config("dense_stack", None, "gated", True, F32),
    Config("linear", "left-to-right", "affine", True, F64),
    Config("linear", (2, 0, 3, 1), "gated", False, F32),
    Config("conv_raster", "raster", "affine", True, F32, shape=(2, 2, 2)),
    Config("conv_raster", "raster_reversed", "gated", False, F64, shape=(2, 2, 2)),
    Config("conv_channel", "channel", "gated", True, F64, shape=(3, 2, 2)),
    Config("conv_channel", "channel_reversed", "affine", False, F32, shape=(2, 3, 2)),
    Config("conv_channel", "channel", "spline", False, F64, shape=(2, 2, 2)),
    Config("conv_stack", "raster", "gated", True, F64, shape=(2, 2, 2)),
    Config("conv_stack", "channel", "affine", False, F32),
    Config("planar", None, None, True, F32),
    Config("planar", None, None, False, F64),
]
