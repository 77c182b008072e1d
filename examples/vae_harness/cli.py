"""How the VAE examples end: an expected failure or a stopped training as a message and an exit.

`run_or_exit(run)` runs an example's work; the failures of `EXPECTED_FAILURES` (no dataset, a
`model_dir` that is a file, unwritable, missing or held by another training run, no checkpoint
that fits the run) end in one line and exit status 1, a stopped training (interrupted, diverged,
a checkpoint not saved) in its message and a non-zero exit, an interrupted evaluation (or any
other Ctrl-C) in one line and exit status 130.
"""

from __future__ import annotations

import gc
import importlib.util
import logging as std_logging
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from absl import logging

from vae_harness.checkpoints import CheckpointError, ModelDirError
from vae_harness.data import DatasetUnavailableError
from vae_harness.stops import EvaluationInterrupted, TrainingInterrupted, TrainingStopped

__all__ = ["EXPECTED_FAILURES", "run_or_exit"]

# Failures that the command line or the files it names cause, each with a message that says
# what to do: `run_or_exit` ends them in that one line (the traceback only with `verbose`).
EXPECTED_FAILURES = (DatasetUnavailableError, CheckpointError, ModelDirError)  # ModelDirBusy too


class _NoLibraryInfo(std_logging.Filter):
    """Drops the INFO lines that TensorFlow, tf_keras and TensorFlow Datasets log through absl
    (a checkpoint's sharding time, each split's "Constructing tf.data.Dataset ..."), which
    say nothing a user acts on; their warnings and errors, and every other INFO line, pass."""

    def __init__(self):
        super().__init__()
        names = ("tensorflow", "tf_keras", "tensorflow_datasets", "tensorflow_probability")
        specs = [importlib.util.find_spec(name) for name in names]
        self.dirs = tuple(
            os.path.dirname(spec.origin) + os.sep for spec in specs if spec and spec.origin
        )

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not record.pathname.startswith(self.dirs)


def _free_quietly(error: BaseException) -> None:
    """Frees what `error`'s tracebacks hold, with TensorFlow's warnings off meanwhile.

    A refused checkpoint's restore objects live in those frames; freed at exit, TensorFlow
    would warn of their "unrestored values" after the one-line message that already says so.
    """
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        while error is not None:
            error.__traceback__, error = None, error.__context__ or error.__cause__
        gc.collect()
    finally:
        logger.setLevel(level)


def _command(mode: str | None = None) -> str:
    """This process's command line, with `--mode=<mode>` in place of its own `--mode`, if any."""
    argv, skip = [], False
    for arg in sys.argv:
        if mode is not None and (skip or arg in ("--mode", "-mode")):
            skip = not skip
            continue
        if mode is not None and arg.startswith(("--mode=", "-mode=")):
            continue
        argv.append(arg)
    if mode is not None:
        argv.append(f"--mode={mode}")
    return shlex.join([sys.executable, *argv])


def _end_line() -> None:
    """Ends the progress bar's line (Keras writes it to stdout without a newline), so that the
    message of an interrupt starts on its own line."""
    sys.stdout.write("\n")
    sys.stdout.flush()


def run_or_exit(run: Callable[[], Any], verbose: bool = False) -> Any:
    """`run()`, with a stopped training or an expected failure turned into a message and an exit.

    SIGINT/SIGTERM (`TrainingInterrupted`): logs where the checkpoint is and the command that
    resumes (this process's command line), and exits with status 128 + the signal number.
    Ctrl-C during an evaluation (`EvaluationInterrupted`): one line saying what was being
    evaluated, that the checkpoint is intact, and the command that evaluates it again without
    training (`--mode=evaluate`); exit status 130. Any other Ctrl-C (`KeyboardInterrupt`): one
    line, exit status 130. Interrupt messages start on a line of their own.
    Divergence, or a checkpoint that could not be saved (the other `TrainingStopped`s): logs
    its message and exits with status 1.
    An `EXPECTED_FAILURES` error (a dataset that is not there, a `model_dir` that is a file or
    cannot be written, a checkpoint that cannot resume this run): logs its message as one line
    and exits with status 1; with `verbose`, it is raised as it is, traceback and all.

    TensorFlow's own INFO lines (e.g. the checkpoint saver's timings, spliced into the progress
    bar), and those TensorFlow Datasets logs through absl, are dropped; their warnings and errors
    still show.

    Args:
      run: the work, e.g. `lambda: train_and_evaluate(config)`.
      verbose: let expected failures raise with their traceback (the examples' `--verbose`).

    Raises:
      SystemExit: training stopped (interrupted, diverged, a checkpoint not saved), or an
        expected failure (not `verbose`).
    """
    tf.get_logger().setLevel("WARNING")
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(f, _NoLibraryInfo) for f in absl_logger.filters):
        absl_logger.addFilter(_NoLibraryInfo())
    try:
        return run()
    except EXPECTED_FAILURES as e:
        if verbose:
            raise
        message = f"{type(e).__name__}: {' '.join(str(e).split())}"  # one line, whatever it held
        _free_quietly(e)
        logging.error("%s (--verbose shows the traceback)", message)
        raise SystemExit(1) from None
    except TrainingInterrupted as e:
        _end_line()
        logging.warning("%s Resume with:\n  %s", e, _command())
        raise SystemExit(128 + e.signum) from None
    except EvaluationInterrupted as e:
        _end_line()
        logging.warning("%s Evaluate it without training: %s", e, _command(mode="evaluate"))
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        _end_line()
        logging.warning(
            "Interrupted (SIGINT); no results were written. Checkpoints are never left half "
            "written: the newest intact one in --model_dir is kept."
        )
        raise SystemExit(130) from None
    except TrainingStopped as e:
        logging.error("%s No results were written.", e)
        raise SystemExit(1) from None
