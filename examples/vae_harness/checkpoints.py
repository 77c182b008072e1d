"""Training checkpoints: restoring the newest intact one, saving, rotating, the fingerprint check.

A checkpoint `ckpt-N` (N: the step) is TensorFlow's `ckpt-N.index` and `ckpt-N.data-*` files and
the fingerprint `ckpt-N.json`, in `model_dir/checkpoints` with TF's `checkpoint` state file; how
those files are named, verified and written: `vae_harness.checkpoint_files`.

- Layout: `Checkpoints.for_run` (what a checkpoint holds, where it is).
- Finding: the files present, newest (highest step) first. The state file is written for TF's
  tools (`tf.train.latest_checkpoint`) but not trusted; it is rewritten when it is missing,
  corrupt or names another checkpoint than the one restored.
- Verifying: intact means every value reads back with its checksum (TF keeps a CRC32C per
  tensor) and the fingerprint file parses. A resume restores the newest intact checkpoint,
  naming the damaged ones it passed over, and refuses, naming them all, when none is intact
  (a fresh start would soon rotate the older files away).
- Fingerprint (`vae_harness.fingerprint`): a resume from a checkpoint of another fingerprint is
  refused, naming the fields that differ. A checkpoint without its fingerprint file is compared
  with the newest readable fingerprint of the directory (the same run's older checkpoints);
  where there is none at all (written before fingerprints), only its variables' shapes are
  checked, with a warning. A fingerprint file that is not a complete fingerprint is damage.
- Writing: the fingerprint (atomically), TF's files (the index last, by a rename), the state
  file (atomically): a kill at any point leaves the previous checkpoint intact. A write that
  fails (a full disk, ...) or does not read back removes its own files and raises
  `CheckpointWriteError`; nothing older is touched. A failure after it (rotating, the state
  file) raises `CheckpointWriteError` too, naming the checkpoints kept.
- Messages name what the restore is for (`purpose`): resuming training, evaluating, sampling.
- Rotating: after a verified save, the newest `max_to_keep` intact checkpoints are kept; older
  and damaged older ones are deleted. Damaged ones newer than the newest intact one stay for a
  person to look at (a save of that step replaces them).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Mapping
from typing import Any

import tensorflow as tf
from absl import logging

from tfp_iaf import tf_keras
from tfp_iaf._fingerprint import FingerprintMismatch
from vae_harness.checkpoint_files import (
    STATE_FILE,
    ModelDirError,
    atomic_write,
    check_writable,
    checkpoint_steps,
    read_fingerprint,
    remove_checkpoint,
    verify,
)
from vae_harness.fingerprint import RESUMABLE_SETTINGS, differences, fingerprint

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "Checkpoints",
    "ModelDirError",
    "checkpoint_dir",
    "check_writable",
    "verify",
]


class CheckpointError(ValueError):
    """A resume was refused: no intact checkpoint, or one of another model."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (its partial files were removed)."""


class Checkpoints:
    """The checkpoints of one training run: restore the newest intact one, save, rotate.

    Args:
      checkpoint: the `tf.train.Checkpoint` to restore into and save.
      directory: where the checkpoints are read from.
      write_dir: where they are written (default `directory`; a worker that is not the chief
        writes to a temporary directory).
      fingerprint: saved with each checkpoint and compared on restore (None: not checked).
      max_to_keep: the intact checkpoints kept.
      may_differ: fingerprint fields a restore does not compare, beyond `RESUMABLE_SETTINGS`
        (which no fingerprint holds): e.g. `seed` when a finished run is only evaluated.
      purpose: what the restored model is for, in messages: "training" (resumed), "evaluate"
        or "sample".
    """

    def __init__(
        self,
        checkpoint: tf.train.Checkpoint,
        directory: str,
        *,
        write_dir: str | None = None,
        fingerprint: dict | None = None,
        max_to_keep: int = 2,
        may_differ: Collection[str] = (),
        purpose: str = "training",
    ):
        self.checkpoint, self.directory = checkpoint, directory
        self.purpose = purpose
        # `restore` creates the counter, so every write holds it too (as TF's manager writes).
        checkpoint.save_counter  # noqa: B018
        self.write_dir = write_dir or directory
        self.fingerprint, self.max_to_keep = fingerprint, max_to_keep
        self.may_differ = frozenset(may_differ)
        self.latest: str | None = None  # the newest checkpoint known intact
        # A run's counters (`for_run`), restored and saved with the rest.
        self.step: tf.Variable | None = None
        self.train_seconds: tf.Variable | None = None
        self._intact: set[int] = set()  # steps in `write_dir` known intact

    @classmethod
    def for_run(
        cls,
        model: tf_keras.Model,
        model_dir: str,
        settings: Mapping[str, Any] | None = None,
        *,
        purpose: str = "training",
        may_differ: Collection[str] = (),
    ) -> Checkpoints:
        """The checkpoints of a run in `model_dir`: the one place that knows their layout.

        A checkpoint holds `model`, `optimizer` (`model.optimizer`: its state and weight
        averages), `step` (the steps trained) and `train_seconds` (the training time of all
        runs), in `checkpoint_dir(model_dir)`, fingerprinted by `fingerprint(model, settings)`.
        The store's `step` and `train_seconds` are those two variables: a restore sets them, a
        save writes them.

        To train (`purpose="training"`), multi-worker as TF documents it: every worker restores
        the chief's checkpoint and takes part in every save (saving may run collectives), but
        only the chief writes to `model_dir`; the others write to a temporary directory, removed
        when the process exits. To evaluate or sample, nothing is written (nor TF's state file
        rewritten by `restore_newest`).
        """
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
        checkpoint = tf.train.Checkpoint(
            model=model, optimizer=model.optimizer, step=step, train_seconds=seconds
        )
        directory = write_dir = checkpoint_dir(model_dir)
        if purpose != "training":
            write_dir = os.devnull
        elif not model.distribute_strategy.extended.should_checkpoint:
            write_dir = tempfile.mkdtemp(prefix="tfp_iaf_worker_")
            atexit.register(shutil.rmtree, write_dir, ignore_errors=True)
        store = cls(
            checkpoint,
            directory,
            write_dir=write_dir,
            fingerprint=fingerprint(model, settings),
            may_differ=may_differ,
            purpose=purpose,
        )
        store.step, store.train_seconds = step, seconds
        return store

    def restore_newest(self) -> str | None:
        """Restores the newest intact checkpoint; its path, or None when there is none at all.

        Raises:
          CheckpointError: checkpoints are present but none is intact, or the newest intact
            one has another fingerprint.
          ValueError: it holds other variables than `checkpoint`, or a flow of another
            configuration (a checkpoint without a fingerprint file, of another model).
        """
        damaged = []
        for step in checkpoint_steps(self.directory):
            prefix = os.path.join(self.directory, f"ckpt-{step}")
            problem = verify(prefix)
            if problem is not None:
                damaged.append(f"{prefix} ({problem})")
                logging.warning("Checkpoint %s is damaged: %s.", prefix, problem)
                continue
            self._check_fingerprint(prefix)
            if damaged:
                logging.warning(
                    "Resuming from %s, the newest intact checkpoint; passed over: %s.",
                    prefix,
                    "; ".join(damaged),
                )
            _restore_all(self.checkpoint, prefix, self.purpose)
            self.latest = prefix
            if self.write_dir == self.directory:
                self._intact.add(step)
                try:
                    self._write_state(announce=True)
                except OSError as e:  # TF's tools read it, the resume does not
                    logging.warning("Could not rewrite the state file: %s.", e)
            return prefix
        if damaged:
            if self.purpose == "training":
                verdict = "training cannot resume"
                fix = "to train from step 0, move these files away or use another model_dir"
            else:
                verdict = f"there is no model to {self.purpose}"
                fix = "check that they can be read (permissions) and are whole"
            raise CheckpointError(
                f"no checkpoint in {self.directory} is intact, so {verdict}: "
                f"{'; '.join(damaged)}. Nothing was deleted; {fix}"
            )
        return None

    def _newest_readable_fingerprint(self) -> tuple[str, dict] | None:
        """`(path, fingerprint)` of the newest fingerprint file in `directory` that reads."""
        for step in checkpoint_steps(self.directory):
            path = os.path.join(self.directory, f"ckpt-{step}")
            try:
                saved = read_fingerprint(path)
            except (OSError, ValueError):
                continue
            if saved is not None:
                return path + ".json", saved
        return None

    def _check_fingerprint(self, prefix: str) -> None:
        if self.fingerprint is None:
            return
        saved, source = read_fingerprint(prefix), f"{prefix}.json"
        if saved is None:
            found = self._newest_readable_fingerprint()
            if found is None:
                logging.warning(
                    "Checkpoint %s has no fingerprint file (%s.json), nor has any other in its "
                    "directory: only its variables' shapes are checked against this model.",
                    prefix,
                    prefix,
                )
                return
            source, saved = found
            logging.warning(
                "Checkpoint %s has no fingerprint file: compared with %s, the newest of its "
                "directory.",
                prefix,
                source,
            )
        compared = [
            {k: v for k, v in fields.items() if k not in self.may_differ}
            for fields in (saved, self.fingerprint)
        ]
        differing = differences(*compared)
        if differing:
            use = _use(self.purpose)
            raise CheckpointError(
                f"the checkpoint {prefix} is of another model or run than this one, so it "
                f"cannot {use}: {'; '.join(differing)}. Run with the settings that wrote it "
                f"(in {source}), or use another model_dir. Settings that may change on "
                f"resume: {', '.join(sorted(RESUMABLE_SETTINGS | self.may_differ))}"
            )

    def save(self, step: int) -> str:
        """Writes, verifies and lists `ckpt-<step>`, then rotates; returns its path.

        Raises:
          CheckpointWriteError: it could not be written or does not read back (its files were
            removed, and the earlier checkpoints and the state file are as they were), or it
            was written but rotating or the state file failed (the checkpoints kept are named).
        """
        prefix = os.path.join(self.write_dir, f"ckpt-{step}")
        try:
            os.makedirs(self.write_dir, exist_ok=True)
            if self.fingerprint is not None:
                atomic_write(prefix + ".json", json.dumps(self.fingerprint, indent=1))
            self.checkpoint.write(prefix)
            problem = verify(prefix)
            if problem is not None:
                raise OSError(f"it does not read back: {problem}")
        except (OSError, tf.errors.OpError) as e:
            if step not in self._intact:
                try:
                    remove_checkpoint(self.write_dir, step)
                except OSError:
                    pass
            raise CheckpointWriteError(
                f"could not save the checkpoint {prefix}: {e}; the newest intact checkpoint "
                f"is {self.latest or 'none'}, and nothing was deleted"
            ) from e
        self._intact.add(step)
        self.latest = prefix
        doing = "rotate the older checkpoints"
        try:
            self._rotate(step)
            doing = f"write the state file {os.path.join(self.write_dir, STATE_FILE)}"
            self._write_state()
        except (OSError, tf.errors.OpError) as e:
            kept = ", ".join(f"ckpt-{s}" for s in checkpoint_steps(self.write_dir)) or "none"
            raise CheckpointWriteError(
                f"saved the checkpoint {prefix}, but could not {doing}: {e}; the newest intact "
                f"checkpoint is {prefix}, and {self.write_dir} holds {kept}"
            ) from e
        return prefix

    def _rotate(self, newest: int) -> None:
        kept = 1
        for step in checkpoint_steps(self.write_dir):
            if step >= newest:
                continue
            if kept < self.max_to_keep:
                intact = step in self._intact
                if not intact and verify(os.path.join(self.write_dir, f"ckpt-{step}")) is None:
                    self._intact.add(step)
                    intact = True
                if intact:
                    kept += 1
                    continue
            self._intact.discard(step)
            remove_checkpoint(self.write_dir, step)

    def _write_state(self, announce: bool = False) -> None:
        """TensorFlow's state file, listing the intact checkpoints kept, the newest last."""
        newest = int(self.latest.rsplit("-", 1)[1])
        steps = sorted(s for s in self._intact if s <= newest)
        text = "".join(
            [f'model_checkpoint_path: "ckpt-{newest}"\n']
            + [f'all_model_checkpoint_paths: "ckpt-{s}"\n' for s in steps]
        )
        path = os.path.join(self.write_dir, STATE_FILE)
        if announce:  # on restore: rewritten only when it does not name the checkpoint restored
            try:
                state = tf.train.get_checkpoint_state(self.write_dir)  # None: missing or corrupt
            except (UnicodeDecodeError, tf.errors.OpError):
                state = None
            named = state and os.path.basename(state.model_checkpoint_path)
            if named == f"ckpt-{newest}":
                return
            logging.warning(
                "The state file %s was %s: rewritten to name %s.",
                path,
                "missing or corrupt" if state is None else f"naming {named}",
                self.latest,
            )
        atomic_write(path, text)


def checkpoint_dir(model_dir: str) -> str:
    """Where the checkpoints of a run in `model_dir` are: `model_dir/checkpoints`."""
    return os.path.join(model_dir, "checkpoints")


def _use(purpose: str) -> str:
    """What a refused checkpoint cannot do, in a message: "resume it", "be used to evaluate"."""
    return "resume it" if purpose == "training" else f"be used to {purpose}"


def _restore_all(checkpoint: tf.train.Checkpoint, path: str, purpose: str = "training") -> None:
    """Restores `path` into `checkpoint`, every value into a variable and every variable from a
    value: a checkpoint of another configuration (a different posterior, decoder scale, ...)
    would otherwise resume with part of the model left at its initialisation, or ignored."""
    use = _use(purpose)
    try:
        checkpoint.restore(path).assert_consumed()
    except FingerprintMismatch as e:  # the flow's own fingerprint, inside TF's files
        raise CheckpointError(
            f"the checkpoint in `model_dir` ({path}) holds a flow of another configuration than "
            f"this model's, so it cannot {use}: {e}. Run with the flags that wrote it, or use "
            "another model_dir"
        ) from None
    except (AssertionError, ValueError) as e:  # ValueError: a value of another shape
        first = str(e).strip().splitlines()[0][:300]
        raise CheckpointError(
            f"the checkpoint in `model_dir` ({path}) was written by a model with other "
            f"variables than this one, so it cannot {use}: run with the flags that "
            "wrote it (its results.json has them under 'config'), or use another model_dir. "
            f"TensorFlow: {first}"
        ) from None
