"""Training loop shared by the VAE examples: steps, averaging, checkpoints, interrupts, divergence.

- The model is compiled with an optimizer of `tfp_iaf.vae.optimizers` (Adamax with debiased
  Polyak averaging of the weights); training ends by swapping the averages in.
- Training is counted in steps (`train(num_steps=...)`, the total over all runs in `model_dir`),
  with a stable epoch of one pass over the data (`fit_schedule`); epochs only pace the progress
  bar and the `on_epoch_*` callbacks.
- A checkpoint (weights, optimizer state and averages, step, cumulative training time, and the
  model's fingerprint) every `save_every` steps, at the first step that ends
  `save_every_seconds` after the last one (so a hard kill loses at most that much work), and at
  the end; a run pointed at the same
  `model_dir` resumes from the newest intact one and trains up to exactly `num_steps`, logging
  "resumed from step N of M". How checkpoints are verified, written and rotated, and what a
  resume refuses: `tfp_iaf.vae.checkpoints`. Under `MultiWorkerMirroredStrategy` only the
  chief writes there; every worker restores from it.
- One writer per `model_dir`: the chief holds its training lock (`tfp_iaf.vae.model_dir_lock`)
  while it trains; a second run there raises `ModelDirBusy` before restoring anything.
- SIGINT/SIGTERM: the step under way finishes, a checkpoint is saved at that step and
  `TrainingInterrupted` is raised (a second signal acts as usual).
- A checkpoint that cannot be written (a full disk, ...) stops training with
  `CheckpointSaveFailed`, naming the newest intact checkpoint; nothing older is deleted.
- A non-finite logged quantity (loss, KL, ...) stops training at once with `TrainingDiverged`,
  naming the step, the quantities and the last good checkpoint; nothing is saved from it.
- TensorBoard scalars of every metric the model reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras
from tfp_iaf.vae.checkpoints import Checkpoints, CheckpointWriteError
from tfp_iaf.vae.model_dir_lock import hold
from tfp_iaf.vae.stops import (
    CheckpointSaveFailed,
    TrainingDiverged,
    TrainingInterrupted,
)

__all__ = [
    "TrainResult",
    "fit_schedule",
    "train",
    "write_scalars",
]


def fit_schedule(
    num_examples: int, batch_size: int, epochs: int | None = None, num_steps: int | None = None
) -> tuple[int, int]:
    """`(num_steps, steps_per_epoch)` for `train`: the budget in steps and one pass's steps.

    The epoch is always one pass over `num_examples` (at least one step), whatever the budget,
    so it stays the same when a later run asks for more steps; `epochs` means
    `epochs * steps_per_epoch` steps.

    Raises:
      ValueError: neither or both of `epochs` and `num_steps`, or a non-positive value.
    """
    if (epochs is None) == (num_steps is None):
        raise ValueError(
            f"exactly one of `epochs` and `num_steps` must be given; got epochs={epochs!r}, "
            f"num_steps={num_steps!r}"
        )
    num_examples = _checks.positive_int("num_examples", num_examples)
    batch_size = _checks.positive_int("batch_size", batch_size)
    per_pass = max(1, num_examples // batch_size)
    if num_steps is None:
        return _checks.positive_int("epochs", epochs) * per_pass, per_pass
    return _checks.positive_int("num_steps", num_steps), per_pass


@dataclasses.dataclass
class TrainResult:
    """What `train` did: `history` of this run's epochs, steps before and after, seconds, and
    the newest checkpoint (of `step`)."""

    history: tf_keras.callbacks.History
    initial_step: int
    step: int
    train_seconds: float  # all runs in `model_dir` together
    train_seconds_this_run: float
    checkpoint: str | None = None


class _StopSignals:
    """Within `with`: the first SIGINT/SIGTERM is recorded in `signum`, not acted upon."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum, self._previous = None, {}

    def _handle(self, signum, frame):
        self.signum = signum
        for sig, handler in self._previous.items():  # a second signal acts as usual
            signal.signal(sig, handler)

    def __enter__(self):
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: signals cannot be caught here
            self._previous = {}
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _has_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def _tensorboard(log_dir: str, update_freq: int) -> list[tf_keras.callbacks.Callback]:
    if not _has_tensorboard():
        logging.warning("The `tensorboard` package is not installed: no TensorBoard scalars.")
        return []
    return [tf_keras.callbacks.TensorBoard(log_dir, update_freq=update_freq)]


def write_scalars(log_dir: str, step: int, scalars: dict[str, float]) -> bool:
    """Writes scalars as TensorBoard summaries at `step`; False without `tensorboard`."""
    if not _has_tensorboard():
        return False
    with tf.summary.create_file_writer(log_dir).as_default():
        for name, value in scalars.items():
            tf.summary.scalar(name, value, step=step)
    return True


def _to_numpy(logs: dict) -> dict:
    logs = {k: np.asarray(v) for k, v in logs.items()}
    return {k: float(v) if v.ndim == 0 else v for k, v in logs.items()}


def _non_finite(logs: dict) -> list[str]:
    return [f"`{k}` = {v}" for k, v in logs.items() if not np.all(np.isfinite(np.asarray(v)))]


def _non_finite_weights(model: tf_keras.Model) -> list[str]:
    return [
        f"weight `{v.name}`" for v in model.trainable_variables if not np.isfinite(v.numpy()).all()
    ][:1]


def train(
    model: tf_keras.Model,
    dataset: tf.data.Dataset,
    *,
    model_dir: str,
    num_steps: int,
    steps_per_epoch: int,
    save_every: int = 500,
    save_every_seconds: float | None = 300.0,
    tensorboard_every: int = 50,
    verbose: int | str = "auto",
    callbacks: list[tf_keras.callbacks.Callback] | None = None,
    use_averages: bool = True,
    settings: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Trains a compiled model up to `num_steps` steps in all, resuming from `model_dir`.

    Args:
      model: a compiled `tf_keras.Model` (built here on one batch if it is not).
      dataset: a repeated dataset of training batches.
      model_dir: directory of the checkpoints (`model_dir/checkpoints`) and TensorBoard logs
        (`model_dir/tensorboard`, written when the `tensorboard` package is installed).
      num_steps: total steps, counting those of earlier runs in `model_dir`.
      steps_per_epoch: steps per epoch (progress bar and `on_epoch_*` callbacks only).
      save_every: steps between checkpoints.
      save_every_seconds: also save at the first step ending this long after the previous
        checkpoint (or the start); None: by steps only.
      tensorboard_every: steps between TensorBoard scalar writes.
      verbose: progress bar (1, "auto"), one line per epoch (2) or nothing (0).
      callbacks: more Keras callbacks; `model.stop_training = True` ends training early.
      use_averages: end by overwriting the weights with their Polyak averages (when the
        optimizer keeps them); otherwise the caller may call
        `model.optimizer.finalize_variable_values(model.trainable_variables)` later.
      settings: the run's settings (e.g. an example's config): those that define the model
        (all but `checkpoints.RESUMABLE_SETTINGS`) join the model's structure in the
        fingerprint saved with every checkpoint. None: the structure only.

    Returns:
      A `TrainResult` (its `history` empty when the budget was already reached).

    Raises:
      ValueError: a non-positive `num_steps`, `steps_per_epoch`, `save_every` or
        `tensorboard_every`, or a negative or non-finite `save_every_seconds`.
      ModelDirBusy: another process is training in `model_dir`.
      TrainingInterrupted: SIGINT or SIGTERM (after a checkpoint at the step reached).
      TrainingDiverged: a non-finite logged quantity (no checkpoint is saved from it).
      CheckpointSaveFailed: a checkpoint could not be written.
      checkpoints.CheckpointError: checkpoints are present in `model_dir` but none is intact,
        or the newest intact one has another fingerprint (or, written without one, other
        variables than `model`).
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    steps_per_epoch = _checks.positive_int("steps_per_epoch", steps_per_epoch)
    _checks.positive_int("save_every", save_every)
    _checks.positive_int("tensorboard_every", tensorboard_every)
    if save_every_seconds is not None and not 0 <= save_every_seconds < float("inf"):
        raise ValueError(
            "`save_every_seconds` must be a finite number >= 0 or None; got "
            f"{save_every_seconds!r}"
        )
    chief = model.distribute_strategy.extended.should_checkpoint
    with hold(model_dir) if chief else contextlib.nullcontext():
        return _train(
            model, dataset, model_dir=model_dir, num_steps=num_steps,
            steps_per_epoch=steps_per_epoch, save_every=save_every,
            save_every_seconds=save_every_seconds, tensorboard_every=tensorboard_every,
            verbose=verbose, callbacks=callbacks, use_averages=use_averages, settings=settings,
        )  # fmt: skip


def _train(
    model, dataset, *, model_dir, num_steps, steps_per_epoch, save_every, save_every_seconds,
    tensorboard_every, verbose, callbacks, use_averages, settings,
) -> TrainResult:  # fmt: skip
    """`train`, its arguments checked and the `model_dir` held."""
    with model.distribute_strategy.scope():
        if not model.built:  # in the scope: the variables must be the strategy's
            model(next(iter(dataset)))
        # Built now, so that a checkpoint restores the optimizer's state (and weight averages)
        # at once, even when no step is left to train.
        model.optimizer.build(model.trainable_variables)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    seconds_var = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
    store = Checkpoints.for_model(
        model, model_dir, settings, step=step_var, train_seconds=seconds_var
    )
    latest = store.restore_newest()
    initial_step, initial_seconds = int(step_var.numpy()), float(seconds_var.numpy())
    if latest and initial_step <= num_steps:
        logging.info("Resumed from step %d of %d (%s).", initial_step, num_steps, latest)
    elif initial_step > num_steps:
        logging.warning(
            "%s is at step %d, past `num_steps`=%d.", model_dir, initial_step, num_steps
        )
    start, saved = time.time(), [initial_step]
    last_save = [time.monotonic()]

    def due(step: int) -> bool:
        if step % save_every == 0:
            return True
        waited = time.monotonic() - last_save[0]
        return save_every_seconds is not None and waited >= save_every_seconds

    def save(step: int) -> str:
        last_save[0] = time.monotonic()
        step_var.assign(step)
        seconds_var.assign(initial_seconds + time.time() - start)
        try:
            path = store.save(step)
        except CheckpointWriteError as e:
            raise CheckpointSaveFailed(
                f"Training stopped at step {step} of {num_steps}: {e}.", step, store.latest
            ) from e
        saved.append(step)
        return path

    all_callbacks = tf_keras.callbacks.CallbackList(
        [
            *_tensorboard(os.path.join(model_dir, "tensorboard"), tensorboard_every),
            *(callbacks or []),
        ],
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=1 if verbose == "auto" else verbose,
        epochs=-(-num_steps // steps_per_epoch),
        steps=steps_per_epoch,
    )
    history = next(c for c in all_callbacks if isinstance(c, tf_keras.callbacks.History))
    progbar = [c for c in all_callbacks if isinstance(c, tf_keras.callbacks.ProgbarLogger)]
    strategy = model.distribute_strategy
    with strategy.scope():
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
    train_function = model.make_train_function()
    model._train_counter.assign(initial_step)  # TensorBoard's step
    model.stop_training = False
    step, logs = initial_step, {}
    all_callbacks.on_train_begin()
    with _StopSignals() as stop:
        while step < num_steps and not model.stop_training:
            epoch, batch = divmod(step, steps_per_epoch)
            for bar in progbar:  # a budget that ends within this epoch ends its bar there too
                bar.target = min(steps_per_epoch, num_steps - epoch * steps_per_epoch)
            all_callbacks.on_epoch_begin(epoch)
            while batch < steps_per_epoch and step < num_steps and not model.stop_training:
                all_callbacks.on_train_batch_begin(batch)
                logs = _to_numpy(train_function(iterator))
                step += 1
                bad = _non_finite(logs)
                save_now = due(step)
                if not bad and save_now:
                    # A finite loss can come with non-finite weights: check them before saving.
                    bad = _non_finite_weights(model)
                if bad:
                    last = store.latest
                    raise TrainingDiverged(
                        f"Training diverged at step {step}: {', '.join(bad)}; the last good "
                        f"checkpoint is {last or 'none'}.",
                        step,
                        last,
                    )
                if save_now:
                    save(step)
                all_callbacks.on_train_batch_end(batch, logs)
                batch += 1
                if stop.signum is not None:
                    path = save(step) if saved[-1] != step else store.latest
                    raise TrainingInterrupted(
                        f"Interrupted ({signal.Signals(stop.signum).name}) at step {step} of "
                        f"{num_steps}; saved the checkpoint {path}.",
                        step,
                        path,
                        stop.signum,
                    )
            all_callbacks.on_epoch_end(epoch, dict(logs))
    if step != saved[-1]:
        save(step)
    all_callbacks.on_train_end(dict(logs))
    if use_averages:
        model.optimizer.finalize_variable_values(model.trainable_variables)
    total = float(seconds_var.numpy())  # as saved with the last checkpoint
    return TrainResult(history, initial_step, step, total, total - initial_seconds, store.latest)
