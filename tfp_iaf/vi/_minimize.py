"""Minimising a stochastic loss with a stateful optimizer, never applying a non-finite step.

`minimize_guarded` is `tfp.math.minimize`'s loop (same seeds, same trace convention, the whole
loop compiled by XLA under `jit_compile=True`) with two changes: a step whose loss or any gradient
is not finite, or whose update would leave a variable or the optimizer's state non-finite, is
not applied, and the loop stops after `max_consecutive_skips` such steps in a row; and after
`backtrack_after` skipped steps in a row it backtracks: the variables and the optimizer's state
go back to an anchor (their values at the start, refreshed every `ANCHOR_EVERY` applied steps)
and every later update is scaled down by half again (each update's displacement, whatever the
optimizer), the scale growing back to 1 by `RECOVERY` per applied step. Until a backtrack, the
scale is 1 and no update is touched.

With `average_from`, it also keeps the running mean of the variables' values after each step
from that step on (Polyak-Ruppert tail averaging; a backtrack starts the mean afresh), and
leaves the variables at that mean when the loop ends without stopping.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["FitTraceableQuantities", "GuardedResult", "minimize_guarded", "optimizer_state"]

ANCHOR_EVERY = 50  # applied steps between refreshes of the backtracking anchor
RECOVERY = 2.0 ** (1 / 100)  # the update scale doubles back in 100 applied steps

FitTraceableQuantities = collections.namedtuple(
    "FitTraceableQuantities", ["loss", "gradients", "parameters", "step", "skipped"]
)
FitTraceableQuantities.__doc__ = """What `trace_fn` sees at each step.

- `loss`: the loss the step computed (NaN or infinite where that made the step be skipped);
- `gradients`: its gradients, one per trainable variable (None for a variable it does not use);
- `parameters`: the variables' values after the step (unchanged by a skipped step);
- `step`: the step's index, from 0;
- `skipped`: True where the step was not applied.
"""


class GuardedResult(NamedTuple):
    """What `minimize_guarded` returns: the trace as tensors, the rest as NumPy values."""

    trace: Any  # `trace_fn`'s values, stacked: a leading dimension of `steps_run`
    steps_run: int
    consecutive_skips: int  # skipped steps at the end of the run
    backtracks: int  # how many times the run went back to its anchor
    last_applied_step: int  # -1 when no step was applied
    last_applied_loss: Any  # that step's loss; NaN when no step was applied
    averaged_steps: int  # how many steps' values the variables were left at the mean of (0: none)


def optimizer_state(optimizer, variables: Sequence[tf.Variable]) -> list:
    """Builds `optimizer`'s variables for `variables` (eagerly) and returns them.

    A step applies its update inside a `tf.cond`, and no variable may be created there; Keras 3
    and tf_keras optimizers create their slots and step counter in `build`, tf_keras's legacy
    ones in `_create_all_weights` (their only way to do it ahead of the first update).
    """
    if hasattr(optimizer, "build"):
        if not getattr(optimizer, "built", False):  # Keras 3 adds slots again when rebuilt
            optimizer.build(variables)
    elif hasattr(optimizer, "_create_all_weights"):
        optimizer._create_all_weights(variables)
    state = optimizer.variables
    return list(state() if callable(state) else state)


def _all_finite(tensors) -> tf.Tensor:
    """Whether every floating-point value of `tensors` (None entries skipped) is finite."""
    checks = [tf.constant(True)]
    for t in tensors:
        if isinstance(t, tf.IndexedSlices):
            t = t.values
        if t is not None and tf.as_dtype(t.dtype).is_floating:
            checks.append(tf.reduce_all(tf.math.is_finite(t)))
    return tf.reduce_all(tf.stack(checks))


def _apply(optimizer, grads, variables, state, scale) -> tf.Tensor:
    """Applies `grads`, each variable's displacement times `scale` (untouched at 1); restores
    `state` and returns False when that leaves any non-finite."""
    saved = [tf.identity(v) for v in state]
    with tf.control_dependencies(saved):
        optimizer.apply_gradients(zip(grads, variables, strict=True))
    # Reads after the update: within a tf.function, ops on one variable run in program order.
    finite = _all_finite([tf.identity(v) for v in state])

    def damp():
        ops = [
            v.assign(old + tf.cast(scale, v.dtype) * (v - old))
            for v, old in zip(variables, saved, strict=False)  # `state` starts with them
        ]
        with tf.control_dependencies(ops):
            return tf.constant(True)

    def restore():
        with tf.control_dependencies([v.assign(s) for v, s in zip(state, saved, strict=True)]):
            return tf.constant(False)

    return tf.cond(finite, lambda: tf.cond(scale < 1.0, damp, lambda: tf.constant(True)), restore)


def _make_step(loss_fn, variables, optimizer, trace_fn, backtrack_after, average):
    """`step_fn(step, seed, skips) -> (loss, skipped, skips, backtracked, traced)`: one guarded
    step (`skips`: skipped steps in a row before it, then counting it), traced once. With
    `average` (a `_TailAverage`), the step adds the variables' values after it to the mean."""
    ids = {id(v) for v in variables}
    state = list(variables) + [
        v for v in optimizer_state(optimizer, variables) if id(v) not in ids
    ]
    # The backtracking anchor, the update scale and the applied steps since the anchor.
    anchor = [tf.Variable(tf.identity(v), trainable=False) for v in state]
    scale = tf.Variable(1.0, trainable=False)
    since_anchor = tf.Variable(0, trainable=False)

    def after_applied():
        count = since_anchor.assign_add(1)
        grown = scale.assign(tf.minimum(1.0, scale * RECOVERY))

        def refresh():
            ops = [a.assign(v) for a, v in zip(anchor, state, strict=True)]
            with tf.control_dependencies([*ops, since_anchor.assign(0)]):
                return tf.constant(False)

        with tf.control_dependencies([grown]):
            return tf.cond(count >= ANCHOR_EVERY, refresh, lambda: tf.constant(False))

    def backtrack():
        ops = [v.assign(a) for v, a in zip(state, anchor, strict=True)]
        with tf.control_dependencies([*ops, scale.assign(scale / 2), since_anchor.assign(0)]):
            return tf.constant(True)

    @tf.function(autograph=False)
    def step_fn(step, seed, skips):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = loss_fn(seed)
        grads = tape.gradient(loss, variables)
        applied = tf.cond(
            _all_finite([loss, *grads]),
            lambda: _apply(optimizer, grads, variables, state, tf.identity(scale)),
            lambda: tf.constant(False),
        )
        skipped = tf.logical_not(applied)
        skips = tf.where(skipped, skips + 1, 0)
        due = tf.logical_and(skipped, tf.equal(skips % backtrack_after, 0))
        backtracked = tf.cond(
            applied,
            after_applied,
            lambda: tf.cond(due, backtrack, lambda: tf.constant(False)),
        )
        with tf.control_dependencies([backtracked]):
            parameters = [tf.identity(v) for v in variables]
        if average is not None:
            with tf.control_dependencies([average.add(step, parameters, backtracked)]):
                parameters = [tf.identity(p) for p in parameters]
        traced = trace_fn(FitTraceableQuantities(loss, grads, parameters, step, skipped))
        traced = tf.nest.map_structure(tf.convert_to_tensor, traced)
        return loss, skipped, skips, backtracked, traced

    return step_fn


class _TailAverage:
    """The running mean of the variables' values after each step from step `start` on."""

    def __init__(self, variables, start: int):
        self.start = start
        self.means = [tf.Variable(tf.identity(v), trainable=False) for v in variables]
        self.count = tf.Variable(0, trainable=False)

    def add(self, step, values, backtracked) -> tf.Tensor:
        """Adds `values` from step `start` on; a backtrack empties the mean (its steps led to
        the divergence the fit went back from)."""
        count = tf.where(backtracked, 0, self.count)
        count = tf.where(step >= self.start, count + 1, count)
        ops = [self.count.assign(count)]
        for mean, value in zip(self.means, values, strict=True):
            # count == 1: the mean is the value; count == 0: left as it is (unused).
            weight = 1 / tf.cast(tf.maximum(count, 1), mean.dtype)
            updated = mean + weight * (value - mean)
            ops.append(mean.assign(tf.where(count > 0, updated, mean)))
        with tf.control_dependencies(ops):
            return tf.identity(count)

    def assign_to(self, variables) -> int:
        """Leaves `variables` at the mean; returns how many steps it is the mean of."""
        count = int(self.count.numpy())
        if count:
            for variable, mean in zip(variables, self.means, strict=True):
                variable.assign(mean)
        return count


def minimize_guarded(
    loss_fn: Callable[[tf.Tensor], tf.Tensor],
    variables: Sequence[tf.Variable],
    optimizer,
    num_steps: int,
    *,
    trace_fn: Callable[[FitTraceableQuantities], Any],
    max_consecutive_skips: int,
    backtrack_after: int | None = None,
    jit_compile: bool = False,
    seed=None,
    average_from: int | None = None,
) -> GuardedResult:
    """Runs up to `num_steps` guarded steps of `optimizer` on `loss_fn(seed)`, in one tf.function.

    Seeds follow `tfp.math.minimize`: step 0 draws with the first half of the sanitised seed,
    each later step splits its seed off the second half; with a finite loss the steps, hence
    the losses, are those of `tfp.math.minimize`.

    Args:
      loss_fn: `loss_fn(seed) -> loss`, seed a stateless seed.
      variables: the variables to train.
      optimizer: a Keras 3 or tf_keras optimizer.
      num_steps: the most steps to run.
      trace_fn: `trace_fn(FitTraceableQuantities) -> traced`, a structure of tensors.
      max_consecutive_skips: stop after this many skipped steps in a row.
      backtrack_after: backtrack after this many skipped steps in a row (and after each
        further as many); None: never.
      jit_compile: compile the whole loop with XLA.
      seed: an int, a stateless seed or None.
      average_from: with a step index, the variables end at the mean of their values after
        each step from that one on (a backtrack restarts the mean), unless the loop stopped
        after `max_consecutive_skips` skips; None: at the last step's values.

    Returns:
      A `GuardedResult`.
    """
    never = max_consecutive_skips + 1  # a backtrack it never reaches
    variables = list(variables)
    average = None if average_from is None else _TailAverage(variables, average_from)
    step_fn = _make_step(
        loss_fn, variables, optimizer, trace_fn, backtrack_after or never, average
    )
    seed = tfp.random.sanitize_seed(seed, salt="minimize")
    specs = step_fn.get_concrete_function(
        tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int32), tf.TensorSpec([], tf.int32)
    ).structured_outputs
    loss_spec, traced_specs = specs[0], tf.nest.flatten(specs[4])

    @tf.function(autograph=False, jit_compile=jit_compile)
    def run(seed):
        init_seed, seed = tfp.random.split_seed(seed, n=2)

        def body(step, seed, skips, backtracks, last_step, last_loss, arrays):
            step_seed, next_seed = tfp.random.split_seed(seed, n=2)
            first = tf.equal(step, 0)
            loss, skipped, skips, backtracked, traced = step_fn(
                step, tf.where(first, init_seed, step_seed), skips
            )
            traced = tf.nest.flatten(traced)
            arrays = [a.write(step, t) for a, t in zip(arrays, traced, strict=True)]
            return (
                step + 1,
                tf.where(first, seed, next_seed),
                skips,
                backtracks + tf.cast(backtracked, tf.int32),
                tf.where(skipped, last_step, step),
                tf.where(skipped, last_loss, loss),
                arrays,
            )

        def cond(step, seed, skips, *_):
            return tf.logical_and(step < num_steps, skips < max_consecutive_skips)

        arrays = [
            tf.TensorArray(s.dtype, size=num_steps, element_shape=s.shape) for s in traced_specs
        ]
        nan = tf.fill(loss_spec.shape, tf.constant(float("nan"), loss_spec.dtype))
        steps, _, skips, backtracks, last_step, last_loss, arrays = tf.while_loop(
            cond, body, (0, seed, 0, 0, -1, nan, arrays), maximum_iterations=num_steps
        )
        return steps, skips, backtracks, last_step, last_loss, [a.stack() for a in arrays]

    steps, skips, backtracks, last_step, last_loss, stacked = run(seed)
    steps, skips = int(steps), int(skips)
    trace = tf.nest.pack_sequence_as(specs[4], [t[:steps] for t in stacked])
    averaged = 0
    if average is not None and skips < max_consecutive_skips:
        averaged = average.assign_to(variables)
    return GuardedResult(
        trace, steps, skips, int(backtracks), int(last_step), last_loss.numpy(), averaged
    )
