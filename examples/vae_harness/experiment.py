"""The one training and evaluation tail of the VAE examples: flags in, `results.json` out.

An example script defines its absl flags, its model and its data loading call; this module does
the rest, the same way for every example:

- `define_experiment_flags(__name__, ...)` defines the flags every example shares, and
  `flags_config(__name__)` turns the flags the example defined into a dataclass (both in
  `vae_harness.experiment_flags`); `Config.from_flags()` holds the parsed values.
- `run_experiment(config, ...)`: refuses a `model_dir` that is a file, or held by another
  training run (`vae_harness.model_dir_lock`: the lock is held until the run ends); loads the
  training split
  (shuffled, repeated) and the test split (the first `num_eval_examples` of it, if set); logs
  its plan (steps, batch, `model_dir`, how to resume, the TensorBoard command); builds the
  model under the distribution strategy (and the mixed-float16 policy when asked) and compiles
  it with Adamax and debiased Polyak averaging; trains with `vae_harness.train` (in steps,
  resuming from `model_dir`); evaluates the raw weights' ELBO, then, with the averaged weights,
  writes image grids (samples, ...) and evaluates the test ELBO and the importance-sampled
  log p(x) (`evaluate_model`), each evaluation announced by a log line saying what its progress
  bar measures; writes TensorBoard scalars and `model_dir/results.json`, logs a summary and
  returns the results. A failed run leaves no empty `model_dir`. Under
  `strategy="multi_worker"` every worker trains and evaluates, and only the chief writes files.
- `run_or_exit(...)` in `main` (`vae_harness.cli`) turns a stopped training (interrupted,
  diverged, a checkpoint not saved), an interrupted evaluation, and the failures of
  `EXPECTED_FAILURES` (no dataset, a `model_dir` that is a file, read-only or busy, no
  checkpoint that can resume the run), into a message and a non-zero exit.
- The examples' `--mode=evaluate` and `--mode=sample`, on a trained `model_dir`:
  `vae_harness.trained`; the three modes of one example, and its `main`: `vae_harness.modes`.

The settings it reads from `config`, flags every example defines: `batch_size`, `epochs`,
`num_steps`, `learning_rate`, `ema_momentum`, `clip_norm`, `data_dir`, `download`, `model_dir`,
`save_every`, `save_every_minutes`, `num_importance_samples`, `importance_chunk`,
`eval_batch_size`, `num_eval_examples`, `seed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tfp_iaf import tf_keras
from vae_harness.checkpoints import check_writable
from vae_harness.experiment_flags import FlagsConfig
from vae_harness.images import save_image_grid
from vae_harness.model_dir_lock import hold
from vae_harness.trained import (
    REPORTS,
    LoadSplit,
    MakeModel,
    compiled_model,
    evaluate_model,
    interruptible,
    load_test_split,
    result_figures,
)
from vae_harness.training import TrainResult, fit_schedule, train, write_scalars

__all__ = ["Experiment", "make_strategy", "run_experiment"]

# `(model, test batches) -> {file name: (caption, images)}`: the grids written after training.
MakeImages = Callable[[tf_keras.Model, tf.data.Dataset], Mapping[str, Any]]


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all local devices) or `multi_worker` (TF_CONFIG).

    Args:
      name: the strategy's name, as the examples' `--strategy` flag takes it.

    Returns:
      A `tf.distribute.Strategy`.

    Raises:
      ValueError: an unknown `name`.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"`strategy` must be 'default', 'mirrored' or 'multi_worker'; got {name!r}")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One `run_experiment` call, its arguments resolved: what each of its steps reads."""

    config: FlagsConfig
    load_split: LoadSplit
    make_model: MakeModel
    make_images: MakeImages
    default_epochs: int
    headline: str
    distribution: tf.distribute.Strategy
    mixed_precision: bool
    jit_compile: bool | None

    @property
    def writes(self) -> bool:
        """Multi-worker: every worker trains and evaluates alike, the chief alone writes files."""
        return self.distribution.extended.should_checkpoint


def run_experiment(
    config: FlagsConfig,
    *,
    load_split: LoadSplit,
    make_model: MakeModel,
    make_images: MakeImages,
    default_epochs: int,
    headline: str = "nats",
    strategy: str = "default",
    mixed_precision: bool = False,
    jit_compile: bool | None = None,
) -> dict[str, Any]:
    """Trains (resuming from `config.model_dir`), writes image grids and `results.json`.

    Args:
      config: the example's settings (see the module docstring for the fields read).
      load_split: loads a split as `(batches, num_examples)`, e.g. `vae_harness.load_cifar10`.
      make_model: builds the model from the training batches (e.g. for a data-dependent
        initialisation); called under the strategy's scope and dtype policy.
      make_images: `(model, test batches) -> {file name: (caption, images)}`, images
        `[N, H, W, C]` in [0, 1]: the grids to write to `model_dir` after training, with the
        averaged weights; the PNG's title is the caption, the step and the weights used.
      default_epochs: the epochs when neither `config.epochs` nor `config.num_steps` is set.
      headline: the unit of the logged summary and TensorBoard test scalars: "nats" or
        "bits_per_dim" (results.json holds both).
      strategy: a `make_strategy` name.
      mixed_precision: build the model under the "mixed_float16" policy.
      jit_compile: `compile`'s `jit_compile` (None: Keras's default).

    Returns:
      The results, also written to `model_dir/results.json`: test ELBO and log p(x) (nats and
      bits/dim) with the averaged weights, the raw weights' ELBO (`test_elbo_raw_weights`, one
      sample per example; when averaging), the step reached and the step resumed from, the
      training time of all runs and of this one, replicas, peak RSS and the config.

    Raises:
      ValueError: an unknown `headline` or `strategy`; both `config.epochs` and
        `config.num_steps` set.
      ModelDirError: `config.model_dir` is a file or cannot be written, or (`ModelDirBusy`)
        another process trains there (before any data is loaded).
      DatasetUnavailableError: from `load_split`.
      CheckpointError: from `train`, no checkpoint in `model_dir` can resume this run.
      TrainingStopped: from `train` (interrupted, diverged, a checkpoint not saved); no
        results are written (`run_or_exit` turns them, and the errors above but the first, into a
        clean exit).
      EvaluationInterrupted: Ctrl-C after training, while evaluating or drawing the images; no
        results are written.
    """
    if headline not in REPORTS:
        raise ValueError(f"`headline` must be one of {tuple(REPORTS)}; got {headline!r}")
    if config.epochs is not None and config.num_steps is not None:
        raise ValueError(
            "`epochs` and `num_steps` cannot both be set (`num_steps` counts the steps of all "
            f"runs, `epochs` passes over the data); got epochs={config.epochs!r}, "
            f"num_steps={config.num_steps!r}"
        )
    experiment = Experiment(
        config, load_split, make_model, make_images, default_epochs, headline,
        make_strategy(strategy), mixed_precision, jit_compile,
    )  # fmt: skip
    created = not os.path.isdir(config.model_dir)
    try:
        if experiment.writes:
            check_writable(config.model_dir)
        with hold(config.model_dir) if experiment.writes else contextlib.nullcontext():
            return _run(experiment)
    except BaseException:
        # A run that failed before writing anything leaves no empty model directory behind.
        if created and os.path.isdir(config.model_dir) and not os.listdir(config.model_dir):
            os.rmdir(config.model_dir)
        raise


def _run(experiment: Experiment) -> dict[str, Any]:
    """Trains, evaluates the raw weights, then with the averaged ones draws and evaluates."""
    config = experiment.config
    model, run, test_ds, steps_per_epoch = _train(experiment)
    raw = _evaluate_raw_weights(experiment, model, run, test_ds)
    weights = "Polyak-averaged weights" if config.ema_momentum is not None else "raw weights"
    _write_images(experiment, model, run, test_ds, weights)
    start = time.time()
    result = _evaluate_averaged_weights(experiment, model, run, test_ds, weights)
    results = {
        **result_figures(result),
        **raw,
        "num_importance_samples": config.num_importance_samples,
        "steps": run.step,
        "resumed_from_step": run.initial_step,
        "steps_per_epoch": steps_per_epoch,
        "train_seconds": run.train_seconds,
        "train_seconds_this_run": run.train_seconds_this_run,
        "eval_seconds": time.time() - start,
        "num_replicas": experiment.distribution.num_replicas_in_sync,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "config": dataclasses.asdict(config),
    }
    _report(experiment, results, weights)
    return results


def _train(experiment: Experiment) -> tuple[tf_keras.Model, TrainResult, tf.data.Dataset, int]:
    """Loads the data, plans, builds and trains the model: `(model, run, test batches, steps
    per epoch)`, the model's weights still the raw ones."""
    config = experiment.config
    train_ds, num_train = experiment.load_split(
        "train", config.batch_size, data_dir=config.data_dir, download=config.download,
        seed=config.seed, shuffle=True, repeat=True, drop_remainder=True,
    )  # fmt: skip
    test_ds = load_test_split(config, experiment.load_split)
    if config.num_steps is None:
        budget = dict(epochs=config.epochs or experiment.default_epochs)
    else:
        budget = dict(num_steps=config.num_steps)
    num_steps, steps_per_epoch = fit_schedule(num_train, config.batch_size, **budget)
    _announce_plan(config, num_steps, steps_per_epoch, num_train)
    model = compiled_model(
        config, experiment.make_model, train_ds, experiment.distribution,
        experiment.mixed_precision, experiment.jit_compile,
    )  # fmt: skip
    run = train(
        model,
        train_ds,
        model_dir=config.model_dir,
        num_steps=num_steps,
        steps_per_epoch=steps_per_epoch,
        save_every=config.save_every,
        save_every_seconds=60 * config.save_every_minutes,
        use_averages=False,
        settings=dataclasses.asdict(config),
    )
    return model, run, test_ds, steps_per_epoch


def _evaluate_raw_weights(
    experiment: Experiment, model: tf_keras.Model, run: TrainResult, test_ds: tf.data.Dataset
) -> dict[str, float]:
    """With averaging: the raw weights' ELBO (one sample per example: cheap), to compare with
    the averages', then the averages swapped in. `{}` without averaging."""
    config = experiment.config
    if config.ema_momentum is None:
        return {}
    logging.info(
        "Evaluating the raw (not averaged) weights: test ELBO, 1 sample per example (with "
        "one sample the bar's log p(x) is the ELBO)."
    )
    with interruptible("the raw weights' test ELBO", run.step, run.checkpoint):
        raw = evaluate_model(model, test_ds, 1, seed=config.seed)
    model.optimizer.finalize_variable_values(model.trainable_variables)
    return {"test_elbo_raw_weights": raw["elbo"]}


def _write_images(
    experiment: Experiment,
    model: tf_keras.Model,
    run: TrainResult,
    test_ds: tf.data.Dataset,
    weights: str,
) -> None:
    """The example's image grids, titled with the step and the weights, into `model_dir`."""
    with interruptible("the image grids", run.step, run.checkpoint):
        grids = experiment.make_images(model, test_ds)
    for file_name, (caption, images) in grids.items():
        if experiment.writes:
            title = f"{caption} (step {run.step}, {weights})"
            path = os.path.join(experiment.config.model_dir, file_name)
            save_image_grid(np.asarray(images), path, title=title)


def _evaluate_averaged_weights(
    experiment: Experiment,
    model: tf_keras.Model,
    run: TrainResult,
    test_ds: tf.data.Dataset,
    weights: str,
) -> dict[str, float]:
    """The test ELBO and the importance-sampled log p(x) of the model's weights now."""
    config = experiment.config
    logging.info(
        "Evaluating the %s: test ELBO and log p(x), k=%d importance samples per example.",
        weights,
        config.num_importance_samples,
    )
    what = f"the test ELBO and log p(x) of the {weights}"
    with interruptible(what, run.step, run.checkpoint):
        return evaluate_model(
            model, test_ds, config.num_importance_samples, config.importance_chunk, config.seed
        )


def _report(experiment: Experiment, results: dict[str, Any], weights: str) -> None:
    """TensorBoard's test scalars and `results.json` (the chief's), and the summary lines."""
    message, scalars = REPORTS[experiment.headline]
    if experiment.writes:
        model_dir = experiment.config.model_dir
        write_scalars(
            os.path.join(model_dir, "tensorboard", "test"),
            results["steps"],
            {name: results[key] for name, key in scalars.items()},
        )
        with open(os.path.join(model_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    logging.info(message, {**results, "weights": weights})
    if "test_elbo_raw_weights" in results:
        logging.info("Test, raw weights: ELBO %.2f nats.", results["test_elbo_raw_weights"])


def _announce_plan(config: FlagsConfig, num_steps: int, steps_per_epoch: int, num_train: int):
    """Logs, before any work, what the run will do, where it writes, how to resume and watch."""
    examples = (
        f"the first {config.num_eval_examples}" if config.num_eval_examples is not None else "all"
    )
    logging.info(
        "Plan: train to step %d in all (%d steps per epoch of %d examples, batch %d), a "
        "checkpoint every %d steps or %g minutes and at the end in %s; then evaluate %s test "
        "examples.",
        num_steps,
        steps_per_epoch,
        num_train,
        config.batch_size,
        config.save_every,
        config.save_every_minutes,
        config.model_dir,
        examples,
    )
    logging.info(
        "Ctrl-C saves a checkpoint at the step reached; a hard kill (kill -9) loses the steps "
        "since the last one. The same command resumes from the last checkpoint; a larger "
        "--num_steps or --epochs continues the run."
    )
    if importlib.util.find_spec("tensorboard") is not None:
        logging.info(
            "Watch it: tensorboard --logdir %s", os.path.join(config.model_dir, "tensorboard")
        )
