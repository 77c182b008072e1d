"""Interrupts and divergence: SIGINT/SIGTERM save a checkpoint at the step reached and exit
cleanly with the command that resumes; a non-finite loss stops at once, naming the step, the
quantity and the last good checkpoint, and writes no result."""

import logging
import os
import shlex
import signal
import sys

import numpy as np
import pytest
import tensorflow as tf

import vae_harness as harness
from tests.examples_util import run_tiny_experiment, tiny_vae
from tfp_iaf import tf_keras
from vae_harness import experiment, run_or_exit
from vae_harness.stops import TrainingDiverged

X = np.tile(np.eye(4, dtype=np.float32), (2, 1))


class SignalAt(tf_keras.callbacks.Callback):
    """Sends `signum` to this process at the end of step `step` (as Ctrl-C or `kill` would)."""

    def __init__(self, step, signum):
        super().__init__()
        self.step, self.signum = step, signum

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            os.kill(os.getpid(), self.signum)


def run(tmp_path, x=X, **config):
    return run_tiny_experiment(tmp_path, x, **config)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_step_reached_and_a_rerun_resumes_from_it(
    tmp_path, monkeypatch, caplog, signum
):
    train = experiment.train
    monkeypatch.setattr(
        experiment, "train", lambda *a, **kw: train(*a, callbacks=[SignalAt(3, signum)], **kw)
    )
    handler = signal.getsignal(signum)
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(lambda: run(tmp_path, num_steps=8, save_every=100))
    assert exit_info.value.code == 128 + signum
    assert signal.getsignal(signum) is handler  # restored
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith("ckpt-3")
    assert f"Interrupted ({signal.Signals(signum).name}) at step 3 of 8" in caplog.text
    # The command that resumes names the interpreter that ran, not whatever `python` is.
    assert f"Resume with:\n  {shlex.quote(sys.executable)} " in caplog.text
    assert not (tmp_path / "results.json").exists()
    monkeypatch.setattr(experiment, "train", train)
    with caplog.at_level(logging.INFO, logger="absl"):
        results = run(tmp_path, num_steps=8, save_every=100)
    assert "Resumed from step 3 of 8" in caplog.text
    assert (results["resumed_from_step"], results["steps"]) == (3, 8)


def test_a_non_finite_loss_stops_at_once_and_writes_no_result(tmp_path, caplog):
    # The third batch holds a NaN: the loss of step 3 is NaN.
    x = np.concatenate([X[:4], X[4:], np.full((4, 4), np.nan, np.float32)])
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(lambda: run(tmp_path, x=x, num_steps=6, save_every=1))
    assert exit_info.value.code == 1
    last_good = str(tmp_path / "checkpoints" / "ckpt-2")
    assert "Training diverged at step 3: `loss` = nan" in caplog.text
    assert f"the last good checkpoint is {last_good}. No results were written." in caplog.text
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints") == last_good
    assert not (tmp_path / "results.json").exists()


def test_train_raises_diverged_naming_step_quantity_and_checkpoint(tmp_path):
    model = tiny_vae()
    model.compile(optimizer=harness.make_optimizer(0.05))
    batches = tf.data.Dataset.from_tensor_slices([X, X, X * np.nan]).repeat()
    with pytest.raises(
        TrainingDiverged, match=r"at step 3: `loss` = nan, .*; the last good checkpoint is none\."
    ) as info:
        harness.train(
            model, batches, model_dir=str(tmp_path), num_steps=5, steps_per_epoch=5, verbose=0
        )
    assert (info.value.step, info.value.checkpoint) == (3, None)


def test_run_or_exit_keeps_tensorflow_warnings_and_drops_its_info(monkeypatch):
    logger = tf.get_logger()
    monkeypatch.setattr(logger, "level", logger.level)  # restored after the test
    logger.setLevel("INFO")
    assert run_or_exit(lambda: 7) == 7
    assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
