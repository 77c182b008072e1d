"""Fault injection on a training run's `model_dir`, second pass: one writer at a time, files
others can read, a fingerprint file that describes no model counts as damage, every failure of
a save (rotation and the state file included) ends in one line naming what was kept, the newest
readable fingerprint stands in for a missing one, checkpoints by time as well as by steps, and
an interrupted evaluation ends in one line that says how to evaluate again."""

import dataclasses
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfp_iaf
import vae_harness as harness
from tests.examples_util import TailConfig, array_loader, run_tiny_experiment, tiny_vae
from tfp_iaf import tf_keras
from vae_harness import experiment, training
from vae_harness import trained as trained_modes
from vae_harness.checkpoint_files import verify
from vae_harness.cli import run_or_exit
from vae_harness.model_dir_lock import LOCK_FILE
from vae_harness.stops import EvaluationInterrupted, TrainingInterrupted

X = np.tile(np.eye(4, dtype=np.float32), (2, 1))  # 8 rows: two steps per epoch at batch 4
ROOT = Path(__file__).resolve().parents[1]


def run(model_dir, **config):
    return run_tiny_experiment(model_dir, X, **config)


def checkpoint_files(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (model_dir / "checkpoints").iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A model_dir trained to step 4, saving every step: ckpt-3 and ckpt-4 are kept."""
    model_dir = tmp_path_factory.mktemp("trained")
    run(model_dir, num_steps=4, save_every=1)
    return model_dir


@pytest.fixture
def trained(trained_once, tmp_path):
    shutil.copytree(trained_once, tmp_path / "run")
    return tmp_path / "run"


# One writer per model_dir.

TRAIN_FOREVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tests.examples_util import run_tiny_experiment
    run_tiny_experiment(
        sys.argv[1], np.tile(np.eye(4, dtype=np.float32), (2, 1)), num_steps=10**7, save_every=5
    )
    """
)


def _wait_for_a_checkpoint(process, model_dir: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not list((model_dir / "checkpoints").glob("ckpt-*.index")):
        if process.poll() is not None:
            raise AssertionError(f"the first run ended: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("the first run wrote no checkpoint in time")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_second_run_in_a_model_dir_is_refused_and_the_first_keeps_its_checkpoints(
    tmp_path, caplog
):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = subprocess.Popen(
        [sys.executable, "-c", TRAIN_FOREVER, str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for_a_checkpoint(first, tmp_path)
        first.send_signal(signal.SIGSTOP)  # holding its lock, mid-run, writing nothing now
        before = checkpoint_files(tmp_path)
        with pytest.raises(SystemExit) as exit_info:
            run_or_exit(lambda: run(tmp_path, num_steps=50, save_every=1))
        assert exit_info.value.code == 1
        refusal = [r.getMessage() for r in caplog.records if "ModelDirBusy" in r.getMessage()]
        assert len(refusal) == 1 and "\n" not in refusal[0]
        assert (
            f"another training run (PID {first.pid}) holds `model_dir` {str(tmp_path)!r}"
            in (refusal[0])
        )
        assert checkpoint_files(tmp_path) == before  # nothing written, rotated or deleted
        # Evaluating reads without the lock, and writes no checkpoint.
        evaluated = harness.evaluate_trained(
            ModesConfig(model_dir=str(tmp_path)),
            load_split=array_loader(X),
            make_model=lambda batches: tiny_vae(),
        )
        assert checkpoint_files(tmp_path) == before and evaluated["steps"] % 5 == 0
    finally:
        first.kill()  # SIGKILL: the OS releases the lock with the process
        first.wait()
    steps = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").glob("*.index"))
    assert all(verify(str(tmp_path / "checkpoints" / f"ckpt-{s}")) is None for s in steps)
    assert (tmp_path / LOCK_FILE).exists()  # left by the kill, and no obstacle:
    results = run(tmp_path, num_steps=steps[-1] + 1, save_every=1)
    assert results["resumed_from_step"] == steps[-1]
    assert not (tmp_path / LOCK_FILE).exists()  # a run that ends removes it


def test_the_lock_is_reentrant_within_a_process_and_released_after_a_failure(tmp_path):
    from vae_harness.model_dir_lock import hold

    with pytest.raises(RuntimeError, match="inside"):
        with hold(str(tmp_path)), hold(str(tmp_path / ".")):
            assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
            raise RuntimeError("inside")
    assert not (tmp_path / LOCK_FILE).exists()
    with hold(str(tmp_path)):  # free again
        pass


# Files others can read.


def test_our_checkpoint_files_get_the_mode_of_tensorflows(trained_once):
    directory = trained_once / "checkpoints"
    mode = stat.S_IMODE((directory / "ckpt-4.index").stat().st_mode)  # 0666 less the umask
    for name in ("ckpt-4.json", "checkpoint"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == mode, name


@dataclasses.dataclass
class ModesConfig(TailConfig):
    temperature: float = 1.0


@pytest.mark.parametrize("mode", ["evaluate", "sample"])
def test_evaluate_and_sample_speak_of_themselves_not_of_resuming(trained, mode):
    for step in (3, 4):
        (trained / "checkpoints" / f"ckpt-{step}.index").write_bytes(b"unreadable")
    function = {"evaluate": harness.evaluate_trained, "sample": harness.sample_trained}[mode]
    kwargs = {"num_samples": 2} if mode == "sample" else {}
    with pytest.raises(harness.CheckpointError) as info:
        function(
            ModesConfig(model_dir=str(trained)),
            load_split=array_loader(X),
            make_model=lambda batches: tiny_vae(),
            **kwargs,
        )
    message = str(info.value)
    assert f"is intact, so there is no model to {mode}: " in message
    assert "resume" not in message and "train from step 0" not in message


# A fingerprint file that describes no model is damage: the run falls back.

NOT_FINGERPRINTS = {
    "empty-object": "{}",
    "empty-file": "",
    "settings-only": json.dumps({"batch_size": 4, "seed": 0}),
    "nested-value": json.dumps({"module VAE()": 1, "batch_size": {"value": 4}}),
    "count-not-int": json.dumps({"module VAE()": "1"}),
    "too-deep": "[" * 200_000 + "]" * 200_000,
}


@pytest.mark.parametrize("text", list(NOT_FINGERPRINTS.values()), ids=list(NOT_FINGERPRINTS))
def test_a_fingerprint_that_describes_no_model_is_damage(trained, text):
    prefix = trained / "checkpoints" / "ckpt-4"
    assert verify(str(prefix)) is None
    Path(f"{prefix}.json").write_text(text)
    assert verify(str(prefix)).startswith(f"{prefix}.json is unreadable (")


def test_a_run_falls_back_past_a_checkpoint_whose_fingerprint_is_empty(trained, caplog):
    (trained / "checkpoints" / "ckpt-4.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="absl"):
        results = run(trained, num_steps=5)
    assert results["resumed_from_step"] == 3
    assert (
        f"{trained / 'checkpoints' / 'ckpt-4'}.json is unreadable (an incomplete " in caplog.text
    )


# Every failure of a save ends in one line naming what was kept.


# A run of a tiny VAE each (5-10 s on 2 cores): the state file's case is the `slow` tier's
# (`make test-slow`, run by CI).
@pytest.mark.parametrize("where", ["rotating", pytest.param("state-file", marks=pytest.mark.slow)])
def test_a_failure_after_the_save_stops_in_one_line_naming_what_was_kept(
    trained, monkeypatch, caplog, where
):
    real_remove, real_replace = os.remove, os.replace

    def refuse(function, suffix):
        def refused(*args, **kwargs):
            if str(args[-1]).endswith(suffix):
                raise PermissionError(13, "Permission denied", str(args[-1]))
            return function(*args, **kwargs)

        return refused

    if where == "rotating":
        monkeypatch.setattr(os, "remove", refuse(real_remove, "ckpt-3.index"))
    else:
        monkeypatch.setattr(os, "replace", refuse(real_replace, f"checkpoints{os.sep}checkpoint"))
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(lambda: run(trained, num_steps=6, save_every=1))
    assert exit_info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in caplog.text
    prefix = trained / "checkpoints" / "ckpt-5"
    doing = "rotate the older checkpoints" if where == "rotating" else "write the state file"
    assert (
        f"Training stopped at step 5 of 6: saved the checkpoint {prefix}, but could not {doing}"
        in (errors[0])
    )
    assert "Permission denied" in errors[0]
    assert f"the newest intact checkpoint is {prefix}, and " in errors[0]
    held = "ckpt-5, ckpt-4, ckpt-3" if where == "rotating" else "ckpt-5, ckpt-4"
    assert f"holds {held}" in errors[0]
    monkeypatch.undo()
    assert run(trained, num_steps=6, save_every=1)["resumed_from_step"] == 5


# Without ckpt-N.json, the newest readable fingerprint of the model_dir is compared.


def test_a_checkpoint_without_its_fingerprint_is_checked_against_the_runs_newest(trained, caplog):
    (trained / "checkpoints" / "ckpt-4.json").unlink()
    with pytest.raises(
        harness.CheckpointError,
        match=r"ckpt-4 is of another model or run than this one, so it cannot resume it: "
        r"batch_size: checkpoint 4, now 8\. Run with the settings that wrote it \(in .*ckpt-3"
        r"\.json\)",
    ):
        run(trained, num_steps=6, batch_size=8)
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert run(trained, num_steps=5)["resumed_from_step"] == 4
    assert "has no fingerprint file: compared with" in caplog.text


# Checkpoints by time as well as by steps: a hard kill loses at most that much.


class Killed(BaseException):
    """What a SIGKILL does to the code after it: nothing runs, no `except Exception` cleans up."""


class Clock(tf_keras.callbacks.Callback):
    """A fake `time.monotonic` that jumps `jumps[step]` seconds as step `step` begins, and a
    kill at the end of step `kill_at`."""

    def __init__(self, jumps, kill_at):
        super().__init__()
        self.now, self.jumps, self.kill_at = 0.0, jumps, kill_at

    def __call__(self):
        return self.now

    def on_train_batch_begin(self, batch, logs=None):
        self.now += self.jumps.get(int(self.model.optimizer.iterations) + 1, 0.0)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.kill_at:
            raise Killed


def _train(model_dir, callbacks=(), num_steps=6):
    model = tiny_vae()
    model.compile(optimizer=harness.make_optimizer(0.05))
    batches = tf.data.Dataset.from_tensor_slices([X[:4]]).repeat()
    return harness.train(
        model, batches, model_dir=str(model_dir), num_steps=num_steps, steps_per_epoch=num_steps,
        save_every=1000, save_every_seconds=60.0, verbose=0, callbacks=list(callbacks),
    )  # fmt: skip


def test_a_hard_kill_loses_at_most_the_steps_since_a_timed_checkpoint(tmp_path, monkeypatch):
    clock = Clock(jumps={2: 61.0, 4: 30.0}, kill_at=5)  # 61 s by step 2; 30 more by step 4
    monkeypatch.setattr(training.time, "monotonic", clock)
    with pytest.raises(Killed):
        _train(tmp_path, [clock])
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == ["ckpt-2.index"]
    monkeypatch.undo()
    assert _train(tmp_path).initial_step == 2


# An interrupted evaluation ends in one line that says how to evaluate again.


def _interrupt_call(module, passing: int, monkeypatch):
    """`module.evaluate_model`, its first `passing` calls as they are, then Ctrl-C."""
    evaluate, calls = module.evaluate_model, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) > passing:
            sys.stdout.write(" 1/3 [=====>....]")  # a progress bar's line, unfinished
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(module, "evaluate_model", interrupted)


def _one_warning(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "Traceback" not in caplog.text
    return lines[0]


def test_ctrl_c_during_the_evaluation_after_training_ends_in_one_line(
    tmp_path, monkeypatch, caplog, capsys
):
    _interrupt_call(experiment, 1, monkeypatch)  # the raw weights' ELBO passes, then Ctrl-C
    monkeypatch.setattr(sys, "argv", ["mnist_vae.py", "--mode", "train", "--num_steps=2"])
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(lambda: run(tmp_path, num_steps=2))
    assert exit_info.value.code == 130
    line = _one_warning(caplog)
    checkpoint = tmp_path / "checkpoints" / "ckpt-2"
    assert (
        "Interrupted (SIGINT) while evaluating the test ELBO and log p(x) of the Polyak-averaged "
        f"weights at step 2; nothing of this evaluation was written, and the checkpoint "
        f"{checkpoint} is intact." in line
    )
    assert line.endswith(" mnist_vae.py --num_steps=2 --mode=evaluate")
    assert capsys.readouterr().out.endswith("[=====>....]\n")  # the message on its own line
    assert not (tmp_path / "results.json").exists() and verify(str(checkpoint)) is None
    monkeypatch.undo()
    assert harness.evaluate_trained(
        ModesConfig(model_dir=str(tmp_path)),
        load_split=array_loader(X),
        make_model=lambda batches: tiny_vae(),
    )["steps"] == 2  # fmt: skip


def test_ctrl_c_in_evaluate_mode_ends_in_one_line(trained, monkeypatch, caplog):
    _interrupt_call(trained_modes, 0, monkeypatch)
    config = ModesConfig(model_dir=str(trained))
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(
            lambda: harness.evaluate_trained(
                config, load_split=array_loader(X), make_model=lambda batches: tiny_vae()
            )
        )
    assert exit_info.value.code == 130
    line = _one_warning(caplog)
    assert "while evaluating the test ELBO and log p(x) of the Polyak-averaged weights at " in line
    assert "step 4" in line and line.endswith("--mode=evaluate")


@pytest.mark.parametrize(
    "error, code",
    [
        (
            TrainingInterrupted("Interrupted (SIGINT) at step 3 of 8; saved ckpt-3.", 3, "c", 2),
            130,
        ),
        (EvaluationInterrupted("Interrupted (SIGINT) while evaluating x at step 3.", "c"), 130),
        (KeyboardInterrupt(), 130),
    ],
    ids=["training", "evaluation", "elsewhere"],
)
def test_interrupt_messages_start_on_a_line_of_their_own(caplog, capsys, error, code):
    def interrupted():
        sys.stdout.write(" 3/8 [=====>....] - loss: 2.1")
        raise error

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(interrupted)
    assert exit_info.value.code == code
    assert capsys.readouterr().out == " 3/8 [=====>....] - loss: 2.1\n"
    assert "Interrupted (SIGINT)" in caplog.text and "Traceback" not in caplog.text


# Checkpoints written before this pass (commit 162cd1a) still resume and restore.

OLD = ROOT / "tests" / "data" / "checkpoints_162cd1a"


def test_a_run_written_before_this_pass_resumes(tmp_path):
    shutil.copytree(OLD / "run", tmp_path / "run")
    results = run(tmp_path / "run", num_steps=3)
    assert (results["resumed_from_step"], results["steps"]) == (2, 3)


@pytest.mark.parametrize("built_first", [True, False], ids=["built", "unbuilt"])
def test_a_flow_checkpoint_written_before_this_pass_restores_every_value(built_first):
    flow = tfp_iaf.dense_iaf_stack(3, 2, [8], context_size=2, gated=True, seed=0)
    x, h = tf.constant([[0.1, -0.2, 0.3]]), tf.constant([[0.5, -0.5]])
    if built_first:
        flow.forward(x, context=h)
    status = tf.train.Checkpoint(flow=flow).read(str(OLD / "flow" / "gated_stack"))
    y = flow.forward(x, context=h)  # an unbuilt flow gets the queued values as it builds
    status.assert_consumed()
    np.testing.assert_array_equal(y.numpy(), np.load(OLD / "flow" / "forward.npy"))
