"""Fault injection on the checkpoints of `vae_harness.train`: every damaged file resumes from the
newest intact checkpoint or stops with a message naming the files, and no intact checkpoint is
deleted; a checkpoint of another model (same variables, other settings) is refused."""

import errno
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tfp_iaf
import vae_harness as harness
from tests.examples_util import (
    TailConfig,
    array_loader,
    loaded_example,
    run_tiny_experiment,
    tiny_vae,
)
from tfp_iaf import tf_keras, vae
from vae_harness import checkpoints, run_or_exit
from vae_harness.fingerprint import RESUMABLE_SETTINGS, fingerprint

X = np.tile(np.eye(4, dtype=np.float32), (2, 1))  # 8 rows: two steps per epoch at batch 4


class Killed(BaseException):
    """What a SIGKILL does to the code after it: nothing runs, no `except Exception` cleans up."""


def run(model_dir, **config):
    return run_tiny_experiment(model_dir, X, **config)


def files(model_dir, step):
    """`{name: bytes}` of every file of checkpoint `step`."""
    directory = model_dir / "checkpoints"
    return {p.name: p.read_bytes() for p in directory.glob(f"ckpt-{step}.*") if p.is_file()}


def latest(model_dir):
    return tf.train.latest_checkpoint(model_dir / "checkpoints")


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A model_dir trained to step 4, saving every step: ckpt-3 and ckpt-4 are kept."""
    model_dir = tmp_path_factory.mktemp("trained")
    run(model_dir, num_steps=4, save_every=1)
    names = sorted(p.name for p in (model_dir / "checkpoints").iterdir())
    assert names == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index", "ckpt-3.json",
        "ckpt-4.data-00000-of-00001", "ckpt-4.index", "ckpt-4.json",
    ]  # fmt: skip
    return model_dir


@pytest.fixture
def trained(trained_once, tmp_path):
    """A copy of `trained_once` for one test to damage: one training run serves the module."""
    shutil.copytree(trained_once, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def trained_to_two_once(tmp_path_factory):
    """A model_dir trained to step 2, saving every step: ckpt-1 and ckpt-2 are kept."""
    model_dir = tmp_path_factory.mktemp("trained_to_two")
    run(model_dir, num_steps=2, save_every=1)
    return model_dir


@pytest.fixture
def trained_to_two(trained_to_two_once, tmp_path):
    """A copy of `trained_to_two_once`, what `run(model_dir, num_steps=2, save_every=1)` leaves:
    the tests that continue such a run share its first two steps (one run a module)."""
    shutil.copytree(trained_to_two_once, tmp_path / "run")
    return tmp_path / "run"


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "missing-index": lambda p: p.with_suffix(".index").unlink(),
    "corrupt-index": lambda p: p.with_suffix(".index").write_bytes(b"not an sstable" * 9),
    "missing-data": lambda p: p.with_suffix(".data-00000-of-00001").unlink(),
    "corrupt-data": lambda p: _flip_a_byte(p.with_suffix(".data-00000-of-00001")),
    "truncated-data": lambda p: p.with_suffix(".data-00000-of-00001").write_bytes(b"\0" * 8),
    "corrupt-fingerprint": lambda p: p.with_suffix(".json").write_text("{"),
    "fingerprint-not-an-object": lambda p: p.with_suffix(".json").write_text("[1]"),
}


def _main_or_slow(names, in_main):
    """`names` as parameters, those not `in_main` marked `slow`: each case here is a training run
    or two of a tiny VAE (5-10 s on 2 cores), so `make test` runs the cases named where this is
    used, and the `slow` tier (`make test-slow`, run by CI) the others."""
    assert set(in_main) <= set(names)
    return [pytest.param(n, id=n, marks=[] if n in in_main else [pytest.mark.slow]) for n in names]


# `make test`: a damaged index, data file and fingerprint (one of `verify`'s checks each).
@pytest.mark.parametrize(
    "damage", _main_or_slow(DAMAGE, ("missing-index", "corrupt-data", "corrupt-fingerprint"))
)
def test_a_damaged_newest_checkpoint_resumes_from_the_newest_intact_one(trained, caplog, damage):
    intact = files(trained, 3)
    DAMAGE[damage](trained / "checkpoints" / "ckpt-4")
    with caplog.at_level(logging.INFO, logger="absl"):
        results = run(trained, num_steps=6, save_every=100)
    assert (results["resumed_from_step"], results["steps"]) == (3, 6)
    newest = trained / "checkpoints" / "ckpt-3"
    assert f"{trained / 'checkpoints' / 'ckpt-4'} is damaged" in caplog.text
    assert f"Resuming from {newest}, the newest intact checkpoint" in caplog.text
    # The intact checkpoint is kept, unchanged, beside the new one; the damaged older one went.
    assert files(trained, 3) == intact and not files(trained, 4)
    assert latest(trained).endswith("ckpt-6")


@pytest.mark.parametrize("state", ["missing", "corrupt", "stale"])
def test_the_state_file_is_rebuilt_from_the_files_present(trained, caplog, state):
    path = trained / "checkpoints" / "checkpoint"
    if state == "missing":
        path.unlink()
    elif state == "corrupt":
        path.write_bytes(b"\xff\x00 model_checkpoint_path {{")
    else:  # names the older checkpoint
        path.write_text('model_checkpoint_path: "ckpt-3"\n')
    newest = files(trained, 4)
    with caplog.at_level(logging.INFO, logger="absl"):
        results = run(trained, num_steps=4)
    assert (results["resumed_from_step"], results["steps"]) == (4, 4)
    assert f"The state file {path} was" in caplog.text and "rewritten" in caplog.text
    assert latest(trained).endswith("ckpt-4") and files(trained, 4) == newest


def test_no_intact_checkpoint_refuses_naming_every_file_and_deletes_nothing(trained):
    before = {p.name: p.read_bytes() for p in (trained / "checkpoints").iterdir()}
    results = (trained / "results.json").read_text()
    (trained / "checkpoints" / "ckpt-4.index").unlink()
    _flip_a_byte(trained / "checkpoints" / "ckpt-3.data-00000-of-00001")
    with pytest.raises(
        harness.CheckpointError,
        match=r"no checkpoint in .* is intact.*ckpt-4 \(.*ckpt-4\.index is missing\); "
        r".*ckpt-3 \(.*Checksum does not match.*\)\. Nothing was deleted",
    ):
        run(trained, num_steps=6)
    after = {p.name: p.read_bytes() for p in (trained / "checkpoints").iterdir()}
    assert after.keys() == before.keys() - {"ckpt-4.index"}
    assert after["ckpt-4.data-00000-of-00001"] == before["ckpt-4.data-00000-of-00001"]
    assert (trained / "results.json").read_text() == results  # no claim of a finished run


def _kill_before_the_index(monkeypatch):
    write = tf.train.Checkpoint.write

    def killed(self, prefix, *args, **kwargs):
        write(self, prefix, *args, **kwargs)
        os.remove(prefix + ".index")  # TF renames the index into place last
        raise Killed

    monkeypatch.setattr(tf.train.Checkpoint, "write", killed)


def _kill_at(monkeypatch, function, last_part):
    original = getattr(checkpoints.os, function)

    def killed(*args, **kwargs):
        if str(args[-1]).endswith(last_part):
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(checkpoints.os, function, killed)


KILLS = {  # where the kill lands in a save of step 3, and the step a rerun resumes from
    "writing-the-fingerprint": (lambda m: _kill_at(m, "replace", "ckpt-3.json"), 2),
    "writing-the-tensors": (_kill_before_the_index, 2),
    "writing-the-state": (lambda m: _kill_at(m, "replace", "checkpoint"), 3),
    "rotating": (lambda m: _kill_at(m, "remove", "ckpt-1.index"), 3),
}


# `make test`: a kill in TensorFlow's write (resumes from step 2) and one in the rotation after
# the save (from step 3).
@pytest.mark.parametrize("kill", _main_or_slow(KILLS, ("writing-the-tensors", "rotating")))
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_usable(
    trained_to_two, monkeypatch, kill
):
    model_dir = trained_to_two
    previous = files(model_dir, 2)
    inject, resumes_from = KILLS[kill]
    with monkeypatch.context() as patch:
        inject(patch)
        with pytest.raises(Killed):
            run(model_dir, num_steps=4, save_every=1)
    assert files(model_dir, 2) == previous
    assert latest(model_dir).endswith("ckpt-2")  # the state file never names a partial save
    results = run(model_dir, num_steps=4, save_every=1)
    assert (results["resumed_from_step"], results["steps"]) == (resumes_from, 4)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # The same message through TensorFlow's error: the `slow` tier's (see `_main_or_slow`).
        pytest.param(
            tf.errors.ResourceExhaustedError(None, None, "No space left on device"),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["OSError", "OpError"],
)
def test_a_full_disk_stops_with_a_message_and_deletes_nothing(
    trained_to_two, monkeypatch, caplog, error
):
    tmp_path = trained_to_two  # a model_dir trained to step 2
    kept = {step: files(tmp_path, step) for step in (1, 2)}
    results = (tmp_path / "results.json").read_text()

    def full(self, prefix, *args, **kwargs):
        with open(prefix + ".data-00000-of-00001", "wb") as f:
            f.write(b"\0" * 10)  # the part written before the disk filled up
        raise error

    with monkeypatch.context() as patch:
        patch.setattr(tf.train.Checkpoint, "write", full)
        with pytest.raises(SystemExit) as exit_info:
            run_or_exit(lambda: run(tmp_path, num_steps=4, save_every=1))
    assert exit_info.value.code == 1
    assert (
        f"Training stopped at step 3 of 4: could not save the checkpoint "
        f"{tmp_path / 'checkpoints' / 'ckpt-3'}: " in caplog.text
    )
    assert "No space left on device" in caplog.text
    assert f"the newest intact checkpoint is {tmp_path / 'checkpoints' / 'ckpt-2'}" in caplog.text
    assert {step: files(tmp_path, step) for step in (1, 2)} == kept
    assert not files(tmp_path, 3) and latest(tmp_path).endswith("ckpt-2")
    assert (tmp_path / "results.json").read_text() == results
    assert run(tmp_path, num_steps=4)["resumed_from_step"] == 2


def test_a_save_that_does_not_read_back_stops_training_and_is_removed(tmp_path, monkeypatch):
    write = tf.train.Checkpoint.write

    def silently_short(self, prefix, *args, **kwargs):
        path = write(self, prefix, *args, **kwargs)
        if prefix.endswith("ckpt-2"):
            with open(prefix + ".data-00000-of-00001", "r+b") as f:
                f.truncate(16)
        return path

    monkeypatch.setattr(tf.train.Checkpoint, "write", silently_short)
    model = tiny_vae()
    model.compile(optimizer=harness.make_optimizer(0.05))
    batches = tf.data.Dataset.from_tensor_slices([X[:4]]).repeat()
    first = tmp_path / "checkpoints" / "ckpt-1"
    with pytest.raises(
        harness.CheckpointSaveFailed,
        match=rf"at step 2 of 3: could not save the checkpoint .*ckpt-2: it does not read back: "
        rf".*; the newest intact checkpoint is {first}, and nothing was deleted",
    ) as info:
        harness.train(
            model, batches, model_dir=str(tmp_path), num_steps=3, steps_per_epoch=3,
            save_every=1, verbose=0,
        )  # fmt: skip
    assert (info.value.step, info.value.checkpoint) == (2, str(first))
    assert not files(tmp_path, 2) and files(tmp_path, 1)
    assert latest(tmp_path) == str(first)


def _run_counting(model_dir, loads, built):
    def make_model(train_batches):
        built.append(1)
        return tfp_iaf.vae.VAE(
            tf_keras.Sequential([tf_keras.layers.Dense(6)]),
            tf_keras.Sequential([tf_keras.layers.Dense(4)]),
            2,
        )

    return harness.run_experiment(
        TailConfig(model_dir=str(model_dir), num_steps=2),
        load_split=array_loader(X, loads),
        make_model=make_model,
        make_images=lambda model, test_batches: {},
        default_epochs=1,
    )


def test_a_model_dir_that_is_a_file_fails_before_data_and_model(tmp_path):
    loads, built = [], []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"`model_dir` must be a directory; got '.*file' \("):
        _run_counting(tmp_path / "file", loads, built)
    (tmp_path / "run" / "checkpoints").parent.mkdir()
    (tmp_path / "run" / "checkpoints").write_text("x")
    with pytest.raises(ValueError, match=r"must be a directory; got .*run' \(.*checkpoints: file"):
        _run_counting(tmp_path / "run", loads, built)
    assert loads == built == []


@pytest.mark.parametrize("where", ["model_dir", "checkpoints"])
def test_a_read_only_model_dir_fails_before_data_and_model(trained, monkeypatch, where):
    read_only = trained if where == "model_dir" else trained / "checkpoints"
    before = {p.name: p.read_bytes() for p in (trained / "checkpoints").iterdir()}
    mkstemp = tempfile.mkstemp

    def refused(*args, dir=None, **kwargs):  # what the kernel answers (root ignores modes)
        if dir is not None and os.path.samefile(dir, read_only):
            raise PermissionError(errno.EACCES, "Permission denied", dir)
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    read_only.chmod(0o555)
    loads, built = [], []
    try:
        with pytest.raises(
            ValueError,
            match=rf"`model_dir` must be a writable directory; got .* \({read_only}: "
            r"Permission denied\)",
        ):
            _run_counting(trained, loads, built)
    finally:
        read_only.chmod(0o755)
    assert loads == built == []
    assert {p.name: p.read_bytes() for p in (trained / "checkpoints").iterdir()} == before


def _iaf_run(model_dir, gated, **config):
    def make_model(train_batches):
        tf_keras.utils.set_random_seed(0)
        flow = tfp_iaf.dense_iaf_stack(2, 1, [4, 4], gated=gated)
        encoder = tf_keras.Sequential([tf_keras.layers.Dense(6, activation="elu")])
        decoder = tf_keras.Sequential([tf_keras.layers.Dense(4)])
        return vae.VAE(encoder, decoder, 2, flow=flow, seed=3)

    return harness.run_experiment(
        TailConfig(model_dir=str(model_dir), **config),
        load_split=array_loader(X),
        make_model=make_model,
        make_images=lambda model, test_batches: {},
        default_epochs=1,
    )


@pytest.mark.slow
def test_a_resume_of_another_model_with_the_same_variables_is_refused_naming_the_fields(
    tmp_path,
):
    assert _iaf_run(tmp_path, gated=False, num_steps=2)["steps"] == 2
    checkpoint = tmp_path / "checkpoints" / "ckpt-2"
    with pytest.raises(
        harness.CheckpointError,
        match=rf"the checkpoint {checkpoint} is of another model .*: module "
        r"InverseAutoregressiveFlow\(forget_bias=2\.0, gated=False, .*\): checkpoint 1, now "
        r"\(none\); module InverseAutoregressiveFlow\(forget_bias=2\.0, gated=True, .*\): "
        r"checkpoint \(none\), now 1\. .*Settings that may change on resume: clip_norm, ",
    ):
        _iaf_run(tmp_path, gated=True, num_steps=4)
    with pytest.raises(
        harness.CheckpointError, match=r"batch_size: checkpoint 4, now 2; ema_momentum: checkpoint"
    ):
        _iaf_run(tmp_path, gated=False, num_steps=4, batch_size=2, ema_momentum=0.9)
    # The settings a resume may change change.
    resumed = _iaf_run(
        tmp_path, gated=False, num_steps=3, learning_rate=0.01, num_importance_samples=2
    )
    assert (resumed["resumed_from_step"], resumed["steps"]) == (2, 3)


@pytest.mark.slow
def test_the_mnist_example_refuses_to_resume_an_affine_run_with_gated(tmp_path):
    tiny = dict(
        posterior="iaf", iaf_depth=1, iaf_width=40, context_size=4, model_dir=str(tmp_path),
        batch_size=4, num_importance_samples=2, importance_chunk=2, eval_batch_size=5,
        num_eval_examples=5,
    )  # fmt: skip
    with loaded_example("mnist_vae") as mnist_vae, tfds.testing.mock_data(num_examples=10):
        mnist_vae.train_and_evaluate(mnist_vae.Config(num_steps=1, **tiny))
        results = (tmp_path / "results.json").read_text()
        with pytest.raises(harness.CheckpointError, match=r"gated: checkpoint False, now True"):
            mnist_vae.train_and_evaluate(mnist_vae.Config(num_steps=2, gated=True, **tiny))
    assert json.loads(results)["config"]["gated"] is False
    assert (tmp_path / "results.json").read_text() == results  # not relabelled as gated


def test_the_fingerprint_holds_every_setting_but_the_resumable_ones():
    model = tfp_iaf.vae.VAE(
        tf_keras.Sequential([tf_keras.layers.Dense(6)]),
        tf_keras.Sequential([tf_keras.layers.Dense(4)]),
        2,
        flow=tfp_iaf.dense_iaf_stack(2, 1, [4, 4], gated=True),
    )
    settings = {name: 1 for name in RESUMABLE_SETTINGS} | {"new_flag": [1, 2], "seed": 0}
    found = fingerprint(model, settings)
    assert {k for k in found if not k.startswith("module ")} == {"new_flag", "seed"}
    assert found["new_flag"] == [1, 2]  # as JSON reads it back
    assert found["module Dense"] == 3  # the encoder's, the decoder's and the VAE's head
    assert any("gated=True" in k for k in found)
    assert json.loads(json.dumps(found)) == found
