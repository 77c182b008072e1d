"""Training loop shared by the VAE examples: steps, averaging, checkpoints, interrupts, divergence.

- The model is compiled with an optimizer of `vae_harness.optimizers` (Adamax with debiased
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
  resume refuses: `vae_harness.checkpoints`. Under `MultiWorkerMirroredStrategy` only the
  chief writes there; every worker restores from it.
- One writer per `model_dir`: the chief holds its training lock (`vae_harness.model_dir_lock`)
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

from tfp_iaf import _checks, tf_keras
from vae_harness.checkpoints import Checkpoints, CheckpointWriteError
from vae_harness.model_dir_lock import hold
from vae_harness.stops import (
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
    store = _restored(model, dataset, model_dir, settings, num_steps)
    run = _Run(store, num_steps, save_every, save_every_seconds)
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
    logs = _epochs(run, model, dataset, all_callbacks, steps_per_epoch)
    if run.step != run.saved:
        run.save()
    all_callbacks.on_train_end(dict(logs))
    if use_averages:
        model.optimizer.finalize_variable_values(model.trainable_variables)
    total = float(store.train_seconds.numpy())  # as saved with the last checkpoint
    return TrainResult(
        history, run.initial_step, run.step, total, total - run.initial_seconds, store.latest
    )


def _restored(
    model: tf_keras.Model,
    dataset: tf.data.Dataset,
    model_dir: str,
    settings: Mapping[str, Any] | None,
    num_steps: int,
) -> Checkpoints:
    """The run's checkpoints, the newest intact one restored into `model` (built if it is not)."""
    with model.distribute_strategy.scope():
        if not model.built:  # in the scope: the variables must be the strategy's
            model(next(iter(dataset)))
        # Built now, so that a checkpoint restores the optimizer's state (and weight averages)
        # at once, even when no step is left to train.
        model.optimizer.build(model.trainable_variables)
    store = Checkpoints.for_run(model, model_dir, settings)
    latest = store.restore_newest()
    step = int(store.step.numpy())
    if latest and step <= num_steps:
        logging.info("Resumed from step %d of %d (%s).", step, num_steps, latest)
    elif step > num_steps:
        logging.warning("%s is at step %d, past `num_steps`=%d.", model_dir, step, num_steps)
    return store


class _Run:
    """A training run between two steps: its checkpoints, the step reached, the last save."""

    def __init__(
        self,
        store: Checkpoints,
        num_steps: int,
        save_every: int,
        save_every_seconds: float | None,
    ):
        self.store, self.num_steps = store, num_steps
        self.save_every, self.save_every_seconds = save_every, save_every_seconds
        self.initial_step = self.step = self.saved = int(store.step.numpy())
        self.initial_seconds = float(store.train_seconds.numpy())
        self.start, self.last_save = time.time(), time.monotonic()

    def due(self) -> bool:
        """A checkpoint is due: each `save_every` steps, or `save_every_seconds` after the last."""
        if self.step % self.save_every == 0:
            return True
        waited = time.monotonic() - self.last_save
        return self.save_every_seconds is not None and waited >= self.save_every_seconds

    def save(self) -> str:
        """A checkpoint of the step reached, with the training time of all runs; its path."""
        self.last_save = time.monotonic()
        self.store.step.assign(self.step)
        self.store.train_seconds.assign(self.initial_seconds + time.time() - self.start)
        try:
            path = self.store.save(self.step)
        except CheckpointWriteError as e:
            raise CheckpointSaveFailed(
                f"Training stopped at step {self.step} of {self.num_steps}: {e}.",
                self.step,
                self.store.latest,
            ) from e
        self.saved = self.step
        return path


def _epochs(
    run: _Run,
    model: tf_keras.Model,
    dataset: tf.data.Dataset,
    callbacks: tf_keras.callbacks.CallbackList,
    steps_per_epoch: int,
) -> dict:
    """Trains epoch by epoch up to `run.num_steps` (or `model.stop_training`); the last logs."""
    strategy = model.distribute_strategy
    with strategy.scope():
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
    train_function = model.make_train_function()
    model._train_counter.assign(run.step)  # TensorBoard's step
    model.stop_training = False
    progbar = [c for c in callbacks if isinstance(c, tf_keras.callbacks.ProgbarLogger)]
    logs = {}
    callbacks.on_train_begin()
    with _StopSignals() as stop:
        while run.step < run.num_steps and not model.stop_training:
            epoch, batch = divmod(run.step, steps_per_epoch)
            for bar in progbar:  # a budget that ends within this epoch ends its bar there too
                bar.target = min(steps_per_epoch, run.num_steps - epoch * steps_per_epoch)
            callbacks.on_epoch_begin(epoch)
            while batch < steps_per_epoch and run.step < run.num_steps and not model.stop_training:
                callbacks.on_train_batch_begin(batch)
                logs = _one_step(run, model, train_function, iterator)
                callbacks.on_train_batch_end(batch, logs)
                batch += 1
                if stop.signum is not None:
                    _interrupted(run, stop.signum)
            callbacks.on_epoch_end(epoch, dict(logs))
    return logs


def _one_step(run: _Run, model: tf_keras.Model, train_function, iterator) -> dict:
    """One training step, then the checkpoint if one is due; stops at a non-finite quantity."""
    logs = _to_numpy(train_function(iterator))
    run.step += 1
    bad = _non_finite(logs)
    save_now = run.due()
    if not bad and save_now:
        # A finite loss can come with non-finite weights: check them before saving.
        bad = _non_finite_weights(model)
    if bad:
        last = run.store.latest
        raise TrainingDiverged(
            f"Training diverged at step {run.step}: {', '.join(bad)}; the last good "
            f"checkpoint is {last or 'none'}.",
            run.step,
            last,
        )
    if save_now:
        run.save()
    return logs


def _interrupted(run: _Run, signum: int) -> None:
    """Saves the step reached (unless saved already) and raises `TrainingInterrupted`."""
    path = run.save() if run.saved != run.step else run.store.latest
    raise TrainingInterrupted(
        f"Interrupted ({signal.Signals(signum).name}) at step {run.step} of {run.num_steps}; "
        f"saved the checkpoint {path}.",
        run.step,
        path,
        signum,
    )
