"""The model of a run as `run_experiment` builds it, its evaluation, and the examples' evaluate
and sample modes, which restore a trained `model_dir` and train nothing, save no checkpoint.

- `compiled_model`, `load_test_split`: the model (compiled with the run's optimizer, so that
  its checkpoints restore into it) and the test batches; `evaluate_model`: test ELBO and
  importance-sampled log p(x), in nats and bits/dim, `result_figures` their recorded names.
- `evaluate_trained` (`--mode=evaluate`): the newest intact checkpoint, checked against the
  model's fingerprint as a resume is (but for `seed`, which only draws), evaluated with its
  Polyak-averaged weights at k = `num_importance_samples` (`importance_chunk` at a time, with
  a progress bar); logs one line and writes `evaluation_step<S>_k<K>.json` beside
  `results.json`, or `..._2.json` (and so on) for other settings (seed, chunk, batch, test
  examples) at the same step and k, never over another's file.
- `sample_trained` (`--mode=sample`): `samples_step<S>_t<T>.png`, samples with the prior's
  scale times `config.temperature` (1: training's `samples.png` at the same step and seed).

Both build the model on the first test batch, on one device (the checkpoint overwrites any
data-dependent init). Not a directory: `ModelDirError`, nothing created; no checkpoint, or one
of another configuration: `CheckpointError` (under `run_or_exit`, one line each).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tfp_iaf import tf_keras
from tfp_iaf.vae import bits_per_dim, evaluate_dataset
from vae_harness.checkpoints import CheckpointError, Checkpoints, ModelDirError, checkpoint_dir
from vae_harness.experiment_flags import FlagsConfig
from vae_harness.images import save_image_grid
from vae_harness.optimizers import make_optimizer
from vae_harness.stops import EvaluationInterrupted

__all__ = [
    "REPORTS",
    "compiled_model",
    "evaluate_model",
    "evaluate_trained",
    "interruptible",
    "load_test_split",
    "sample_trained",
]

# Called as `load_split(split, batch_size, data_dir=, download=, shuffle=, repeat=,
# drop_remainder=, seed=)`, like `vae_harness.load_cifar10` (or `load_mnist` with its name bound).
LoadSplit = Callable[..., tuple[tf.data.Dataset, int]]
MakeModel = Callable[[tf.data.Dataset], tf_keras.Model]

# The summary line and the TensorBoard scalars (name: results key) of each headline unit.
REPORTS = {
    "nats": (
        "Test, %(weights)s: ELBO %(test_elbo).2f, log p(x) %(test_log_px).2f nats "
        "(k=%(num_importance_samples)d, %(num_test_examples)d examples, %(steps)d steps).",
        {"elbo": "test_elbo", "log_px": "test_log_px"},
    ),
    "bits_per_dim": (
        "Test, %(weights)s: %(test_bits_per_dim).3f bits/dim (k=%(num_importance_samples)d), "
        "ELBO %(test_elbo_bits_per_dim).3f bits/dim, %(num_test_examples)d examples, "
        "%(steps)d steps.",
        {"bits_per_dim": "test_bits_per_dim", "elbo": "test_elbo"},
    ),
}


def evaluate_model(
    model: tf_keras.Model,
    dataset: tf.data.Dataset,
    num_importance_samples: int,
    chunk_size: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Test ELBO and importance-sampled log p(x) (nats per example) and their bits/dim.

    Args:
      model: a model with `log_weights(x, num_samples, seed) -> [num_samples, batch]`.
      dataset: batches `[batch, ...]` of a static example shape (its size: the bits/dim's dims).
      num_importance_samples: k of the importance-sampled log p(x).
      chunk_size: importance samples per pass (memory).
      seed: the evaluation's seed.

    Returns:
      `{"elbo", "log_px", "num_examples", "bits_per_dim", "elbo_bits_per_dim"}`.

    Raises:
      ValueError: an example shape that is not static, or an error of `evaluate_dataset`.
    """
    example_shape = dataset.element_spec.shape[1:]
    if not example_shape.is_fully_defined():
        raise ValueError(f"`dataset` must have a static example shape; got {example_shape}")
    num_dims = math.prod(example_shape)
    log_weights = tf.function(model.log_weights, reduce_retracing=True)
    result = evaluate_dataset(
        log_weights, dataset, num_importance_samples, chunk_size=chunk_size, seed=seed
    )
    result["bits_per_dim"] = float(bits_per_dim(result["log_px"], num_dims))
    result["elbo_bits_per_dim"] = float(bits_per_dim(result["elbo"], num_dims))
    return result


_RECORDED_AS = {
    "elbo": "test_elbo", "log_px": "test_log_px", "bits_per_dim": "test_bits_per_dim",
    "elbo_bits_per_dim": "test_elbo_bits_per_dim", "num_examples": "num_test_examples",
}  # fmt: skip


def result_figures(result: dict[str, float]) -> dict[str, float]:
    return {name: result[key] for key, name in _RECORDED_AS.items()}


@contextlib.contextmanager
def interruptible(what: str, step: int, checkpoint: str | None) -> Iterator[None]:
    """Within the `with` block, Ctrl-C raises `EvaluationInterrupted` naming `what` was being
    evaluated, at which step, and the (intact) `checkpoint` that holds the model."""
    try:
        yield
    except KeyboardInterrupt:
        raise EvaluationInterrupted(
            f"Interrupted (SIGINT) while evaluating {what} at step {step}; nothing of this "
            f"evaluation was written, and the checkpoint {checkpoint or '(none)'} is intact.",
            checkpoint,
        ) from None


def load_test_split(config: FlagsConfig, load_split: LoadSplit) -> tf.data.Dataset:
    """The test batches: the first `config.num_eval_examples` of the split (all when unset)."""
    test_split = "test"
    if config.num_eval_examples is not None:
        test_split = f"test[:{config.num_eval_examples}]"
    test_ds, _ = load_split(
        test_split, config.eval_batch_size, data_dir=config.data_dir, download=config.download,
        seed=config.seed,
    )  # fmt: skip
    return test_ds


def compiled_model(
    config: FlagsConfig,
    make_model: Callable[[tf.data.Dataset], tf_keras.Model],
    batches: tf.data.Dataset,
    distribution: tf.distribute.Strategy,
    mixed_precision: bool = False,
    jit_compile: bool | None = None,
) -> tf_keras.Model:
    """`make_model(batches)` under the strategy (and "mixed_float16" when asked), compiled with
    the optimizer of `config`: the model whose checkpoints `run_experiment` writes."""
    policy = tf_keras.mixed_precision.global_policy()
    if mixed_precision:
        tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with distribution.scope():
            model = make_model(batches)
            model.compile(
                optimizer=make_optimizer(
                    config.learning_rate,
                    config.ema_momentum,
                    config.clip_norm,
                    kind=getattr(config, "optimizer", "adamax"),
                ),
                jit_compile=jit_compile,
            )
    finally:
        tf_keras.mixed_precision.set_global_policy(policy)
    return model


def _check_trained(model_dir: str, mode: str) -> str:
    """`model_dir/checkpoints`, after checking, creating nothing, that it holds a checkpoint."""
    if not os.path.isdir(model_dir):
        what = "a file" if os.path.exists(model_dir) else "no such directory"
        raise ModelDirError(
            f"`model_dir` must be the directory of a trained run to {mode}; got {model_dir!r} "
            f"({what}). Pass the --model_dir that training wrote."
        )
    directory = checkpoint_dir(model_dir)
    names = os.listdir(directory) if os.path.isdir(directory) else []
    if not any(re.fullmatch(r"ckpt-\d+\.index", name) for name in names):
        raise CheckpointError(
            f"no checkpoint in {directory}, so there is no model to {mode}: train first "
            "(--mode=train, the default) with this --model_dir, or pass the --model_dir of a "
            "trained run"
        )
    return directory


def _restore(
    config: FlagsConfig,
    make_model: MakeModel,
    batches: tf.data.Dataset,
    mixed_precision: bool,
    mode: str,
) -> tuple[tf_keras.Model, int, str, str]:
    """The model of the newest intact checkpoint, with its averaged weights when it keeps them.

    Returns:
      `(model, step, checkpoint path, which weights)`.
    """
    _check_trained(config.model_dir, mode)
    model = compiled_model(
        config, make_model, batches, tf.distribute.get_strategy(), mixed_precision
    )
    if not model.built:
        model(next(iter(batches)))
    model.optimizer.build(model.trainable_variables)  # its averages restore into it
    store = Checkpoints.for_run(
        model, config.model_dir, dataclasses.asdict(config), purpose=mode, may_differ={"seed"}
    )
    path = store.restore_newest()
    if path is None:  # the files went away since `_check_trained`
        _check_trained(config.model_dir, mode)
    weights = "raw weights"
    if config.ema_momentum is not None:
        model.optimizer.finalize_variable_values(model.trainable_variables)
        weights = "Polyak-averaged weights"
    return model, int(store.step.numpy()), path, weights


def _result_path(model_dir: str, stem: str, settings: dict[str, Any]) -> str:
    """`stem.json`, or the first `stem_<n>.json` that is free or holds the same `settings`."""
    n = 1
    while True:
        path = os.path.join(model_dir, f"{stem}.json" if n == 1 else f"{stem}_{n}.json")
        if not os.path.exists(path):
            return path
        try:
            with open(path) as f:
                if json.load(f).get("evaluation") == settings:
                    return path  # the same evaluation again: the same numbers
        except (OSError, ValueError, AttributeError):
            pass  # not an evaluation of ours: left alone
        n += 1


def evaluate_trained(
    config: FlagsConfig,
    *,
    load_split: LoadSplit,
    make_model: MakeModel,
    headline: str = "nats",
    mixed_precision: bool = False,
) -> dict[str, Any]:
    """Evaluates the newest intact checkpoint of `config.model_dir`, without training.

    Args:
      config: the run's settings, as `run_experiment` takes them: its model flags must be those
        that trained it; the evaluation reads `num_importance_samples`, `importance_chunk`,
        `eval_batch_size`, `num_eval_examples` and `seed`.
      load_split: loads a split, as for `run_experiment`.
      make_model: builds the model from test batches, as for `run_experiment`.
      headline: the unit of the logged summary, "nats" or "bits_per_dim" (the file has both).
      mixed_precision: the model was trained under the "mixed_float16" policy.

    Returns:
      The results, also written to `model_dir/evaluation_step<S>_k<K>[_<n>].json`: test ELBO and
      log p(x) (nats and bits/dim) of the averaged weights, the step, the checkpoint, the
      evaluation's settings (`evaluation`), its seconds and the config.

    Raises:
      ValueError: an unknown `headline`.
      ModelDirError: `config.model_dir` is not a directory.
      CheckpointError: it holds no checkpoint, none intact, or one of another configuration.
      DatasetUnavailableError: from `load_split`.
    """
    if headline not in REPORTS:
        raise ValueError(f"`headline` must be one of {tuple(REPORTS)}; got {headline!r}")
    _check_trained(config.model_dir, "evaluate")
    test_ds = load_test_split(config, load_split)
    model, step, checkpoint, weights = _restore(
        config, make_model, test_ds, mixed_precision, "evaluate"
    )
    k, chunk = config.num_importance_samples, config.importance_chunk
    logging.info(
        "Evaluating %s (step %d, %s): test ELBO and log p(x), k=%d importance samples per "
        "example, %d at a time; the bar counts test batches of %d.",
        checkpoint, step, weights, k, min(chunk, k), config.eval_batch_size,
    )  # fmt: skip
    start = time.time()
    with interruptible(f"the test ELBO and log p(x) of the {weights}", step, checkpoint):
        result = evaluate_model(model, test_ds, k, chunk, config.seed)
    names = ("num_importance_samples", "importance_chunk", "eval_batch_size", "num_eval_examples")
    settings = {"steps": step, **{n: getattr(config, n) for n in (*names, "seed")}}
    results = {
        **result_figures(result),
        "num_importance_samples": k,
        "steps": step,
        "checkpoint": checkpoint,
        "weights": weights,
        "eval_seconds": time.time() - start,
        "evaluation": settings,
        "config": dataclasses.asdict(config),
    }
    path = _result_path(config.model_dir, f"evaluation_step{step}_k{k}", settings)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    logging.info(REPORTS[headline][0], results)
    logging.info("Wrote %s.", path)
    return results


def sample_trained(
    config: FlagsConfig,
    *,
    load_split: LoadSplit,
    make_model: MakeModel,
    num_samples: int,
    mixed_precision: bool = False,
) -> str:
    """Writes a grid of samples of the newest intact checkpoint of `config.model_dir`.

    `model.sample(num_samples, seed=config.seed, temperature=config.temperature)`, averaged
    weights, to `model_dir/samples_step<S>_t<T>[_seed<N>].png` (`_seed<N>` for a seed but 0).

    Args:
      config: the run's settings, as for `evaluate_trained`; reads `temperature` and `seed`.
      load_split: loads a split, as for `run_experiment` (its first test batch builds the model).
      make_model: builds the model from test batches.
      num_samples: images in the grid (10 a row).
      mixed_precision: the model was trained under the "mixed_float16" policy.

    Returns:
      The PNG's path.

    Raises:
      ModelDirError, CheckpointError, DatasetUnavailableError: as `evaluate_trained`.
    """
    _check_trained(config.model_dir, "sample")
    test_ds = load_test_split(config, load_split)
    model, step, ckpt, weights = _restore(config, make_model, test_ds, mixed_precision, "sample")
    t, seed = config.temperature, config.seed
    images = model.sample(num_samples, seed=seed, temperature=t).numpy()
    title = (
        f"{num_samples} samples at temperature {t:g} (the prior's scale x{t:g}): means of "
        f"p(x | z) (step {step}, {weights})"
    )
    name = f"samples_step{step}_t{t:g}{f'_seed{seed}' if seed else ''}.png"
    path = os.path.join(config.model_dir, name)
    save_image_grid(np.asarray(images), path, title=title)
    logging.info(
        "Wrote %s: %d samples of %s (step %d, %s) at temperature %g.",
        path, num_samples, ckpt, step, weights, t,
    )  # fmt: skip
    return path
