"""Failures a user causes by the command line (no dataset, a `--model_dir` that is a file, a
checkpoint of another configuration) end in one line saying what to do, and exit status 1; the
traceback only with `--verbose`. A run first announces its plan."""

import gc
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vae_harness as harness
from tests.examples_util import run_tiny_experiment
from vae_harness import run_or_exit

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
X = np.tile(np.eye(4, dtype=np.float32), (2, 1))


@pytest.mark.slow
def test_a_missing_dataset_ends_in_one_line_and_status_1(tmp_path):
    cmd = [
        sys.executable,
        str(EXAMPLES / "mnist_vae.py"),
        f"--data_dir={tmp_path / 'no_data'}",
        f"--model_dir={tmp_path / 'run'}",
        "--num_steps=2",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "DatasetUnavailableError: Dataset `binarized_mnist` is not available" in last
    assert "Point `--data_dir`" in last and last.endswith("(--verbose shows the traceback)")
    assert "Traceback" not in result.stderr
    assert "Constructing tf.data.Dataset" not in result.stderr  # tfds's INFO lines are dropped
    assert not (tmp_path / "run").exists()


def test_verbose_raises_an_expected_failure_with_its_traceback():
    def unavailable():
        raise harness.DatasetUnavailableError("`mnist` is not available")

    with pytest.raises(harness.DatasetUnavailableError, match="`mnist` is not available"):
        run_or_exit(unavailable, verbose=True)
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(unavailable)
    assert exit_info.value.code == 1


def test_a_model_dir_that_is_a_file_is_refused_before_any_work(tmp_path, caplog):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(harness.ModelDirError, match=r"`model_dir` must be a directory; got"):
        run_tiny_experiment(path, X, num_steps=2)
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(lambda: run_tiny_experiment(path, X, num_steps=2))
    assert exit_info.value.code == 1
    assert f"got {str(path)!r} ({path}: file). Pass another --model_dir." in caplog.text
    assert "Plan:" not in caplog.text and path.read_text() == "mine"


@pytest.mark.slow
def test_a_checkpoint_of_another_configuration_ends_in_one_line(tmp_path, caplog):
    run_tiny_experiment(tmp_path, X, num_steps=2)
    wider = np.tile(np.eye(5, dtype=np.float32), (2, 1))  # another decoder: other shapes
    with pytest.raises(harness.CheckpointError, match="so it cannot resume it"):
        run_tiny_experiment(tmp_path, wider, num_steps=4)
    gc.collect()  # TensorFlow warns of the refused checkpoint's unrestored values when freed
    caplog.clear()
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(lambda: run_tiny_experiment(tmp_path, wider, num_steps=4))
    assert exit_info.value.code == 1
    del exit_info  # frees the failure, as the process's exit does
    gc.collect()
    assert "unrestored values" not in caplog.text  # nothing after the one line
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith("CheckpointError: ")
    assert "\n" not in record.getMessage()


def test_a_run_announces_its_plan(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="absl"):
        run_tiny_experiment(tmp_path, X, num_steps=3, save_every=2)
    text = caplog.text
    assert (
        f"Plan: train to step 3 in all (2 steps per epoch of 8 examples, batch 4), a checkpoint "
        f"every 2 steps or 5 minutes and at the end in {tmp_path}; then evaluate the first 2 "
        "test examples."
    ) in text
    assert "a hard kill (kill -9) loses the steps since the last one" in text
    assert "The same command resumes from the last checkpoint" in text
    assert f"tensorboard --logdir {tmp_path / 'tensorboard'}" in text
    # Each evaluation bar is announced with what it measures, and the summary names the weights.
    raw = text.index("Evaluating the raw (not averaged) weights: test ELBO, 1 sample")
    averaged = text.index("Evaluating the Polyak-averaged weights: test ELBO and log p(x), k=3")
    summary = text.index("Test, Polyak-averaged weights: ELBO")
    assert raw < averaged < summary < text.index("Test, raw weights: ELBO")


@pytest.mark.slow
def test_evaluating_a_missing_model_dir_ends_in_one_line_and_creates_nothing(tmp_path):
    missing = tmp_path / "never_trained"
    cmd = [sys.executable, str(EXAMPLES / "mnist_vae.py"), f"--model_dir={missing}"]
    result = subprocess.run(
        [*cmd, "--mode=evaluate", "--num_importance_samples=1000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert (
        f"ModelDirError: `model_dir` must be the directory of a trained run to evaluate; got "
        f"{str(missing)!r} (no such directory). Pass the --model_dir that training wrote. "
        "(--verbose shows the traceback)"
    ) in last
    assert "Traceback" not in result.stderr and not missing.exists()


def test_sampling_a_model_dir_without_checkpoints_ends_in_one_line(tmp_path, caplog):
    from tests.examples_util import TailConfig, array_loader, tiny_vae

    def sample():
        return harness.sample_trained(
            TailConfig(model_dir=str(tmp_path)),
            load_split=array_loader(X),
            make_model=lambda batches: tiny_vae(),
            num_samples=4,
        )

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(sample)
    assert exit_info.value.code == 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == (
        f"CheckpointError: no checkpoint in {tmp_path / 'checkpoints'}, so there is no model to "
        "sample: train first (--mode=train, the default) with this --model_dir, or pass the "
        "--model_dir of a trained run (--verbose shows the traceback)"
    )
    assert list(tmp_path.iterdir()) == []
