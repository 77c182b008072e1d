"""Keras training plumbing shared by the VAE examples.

- Adamax with Polyak (exponential moving) averaging of the weights: tf_keras's own
  `Adamax(use_ema=True)`. `fit` ends by overwriting the weights with their averages
  (`optimizer.finalize_variable_values`), so evaluation and sampling after `train` use them;
  the raw weights and the averages both live in the checkpoints.
- Checkpoints every N steps and resume after being killed: tf_keras's `BackupAndRestore`
  (it restores weights, optimizer state and the epoch/step position, mid-epoch included), plus a
  backup at the end of training so that a later run with a larger budget continues exactly.
- TensorBoard scalars of every metric the model reports.
"""

from __future__ import annotations

import importlib.util
import math
import os

import tensorflow as tf
from absl import logging

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras

__all__ = [
    "NonFiniteLossCounter",
    "ResumableBackup",
    "fit_schedule",
    "make_optimizer",
    "train",
    "write_scalars",
]


def make_optimizer(
    learning_rate: float = 1e-3, ema_momentum: float | None = 0.998
) -> tf_keras.optimizers.Optimizer:
    """Adamax (the paper's optimizer) with weight averaging.

    Args:
      learning_rate: Adamax step size (the paper: 0.002 for MNIST).
      ema_momentum: Polyak averaging decay in [0, 1), or None for no averaging.

    Returns:
      A `tf_keras.optimizers.Adamax`.

    Raises:
      ValueError: a non-positive `learning_rate` or an `ema_momentum` outside [0, 1).
    """
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be positive; got {learning_rate!r}")
    if ema_momentum is not None and not 0 <= ema_momentum < 1:
        raise ValueError(f"`ema_momentum` must be in [0, 1) or None; got {ema_momentum!r}")
    return tf_keras.optimizers.Adamax(
        learning_rate,
        use_ema=ema_momentum is not None,
        ema_momentum=0.99 if ema_momentum is None else ema_momentum,
    )


def fit_schedule(
    num_examples: int, batch_size: int, epochs: int | None = None, num_steps: int | None = None
) -> tuple[int, int]:
    """`(epochs, steps_per_epoch)` for `fit` on a repeated dataset, for exactly the budget asked.

    An epoch is one pass over `num_examples`. With `num_steps`, `steps_per_epoch` is the largest
    divisor of `num_steps` not above one pass, so training stops after exactly `num_steps`.

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
        return _checks.positive_int("epochs", epochs), per_pass
    num_steps = _checks.positive_int("num_steps", num_steps)
    steps = max(d for d in range(1, min(per_pass, num_steps) + 1) if num_steps % d == 0)
    return num_steps // steps, steps


class ResumableBackup(tf_keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` every `save_freq` steps that also backs up after the last step.

    The backup is kept after training, so running again with more epochs/steps continues from
    the last step (counter, weights, optimizer state and weight averages), and running again with
    the same budget trains no further.
    """

    def __init__(self, backup_dir: str, save_freq: int):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        # `fit` overwrites the weights with their averages after the last epoch, so the final
        # backup has to happen here, before that.
        if epoch == self.params["epochs"] - 1:
            self._backup(epoch=epoch)


class NonFiniteLossCounter(tf_keras.callbacks.Callback):
    """Counts the training steps after which the reported loss is NaN or infinite.

    With `TerminateOnNaN` (which `train` adds) training stops at the first one, so the count
    is 0 for a healthy run and 1 for a run stopped by a non-finite loss.
    """

    def __init__(self):
        super().__init__()
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.count += 1


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


def train(
    model: tf_keras.Model,
    dataset: tf.data.Dataset,
    *,
    model_dir: str,
    epochs: int,
    steps_per_epoch: int,
    save_every: int = 500,
    tensorboard_every: int = 50,
    verbose: int | str = "auto",
    callbacks: list[tf_keras.callbacks.Callback] | None = None,
) -> tf_keras.callbacks.History:
    """Trains a compiled model with `fit`, resuming from `model_dir` if a backup is there.

    Args:
      model: a compiled `tf_keras.Model` (built here on one batch if it is not).
      dataset: a repeated dataset of training batches.
      model_dir: directory of the backups (`model_dir/backup`) and TensorBoard logs
        (`model_dir/tensorboard`, written when the `tensorboard` package is installed).
      epochs: total epochs, counting those of earlier runs in `model_dir`.
      steps_per_epoch: steps per epoch.
      save_every: steps between backups.
      tensorboard_every: steps between TensorBoard scalar writes.
      verbose: `fit`'s verbosity (progress bar by default).
      callbacks: more callbacks.

    Returns:
      The `History` of this run (empty when the budget was already reached).

    Raises:
      ValueError: a non-positive `save_every` or `tensorboard_every`.
    """
    _checks.positive_int("save_every", save_every)
    _checks.positive_int("tensorboard_every", tensorboard_every)
    if not model.built:
        model(next(iter(dataset)))
    all_callbacks = [
        ResumableBackup(os.path.join(model_dir, "backup"), save_freq=save_every),
        *_tensorboard(os.path.join(model_dir, "tensorboard"), tensorboard_every),
        tf_keras.callbacks.TerminateOnNaN(),
        *(callbacks or []),
    ]
    return model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=all_callbacks,
        verbose=verbose,
    )
