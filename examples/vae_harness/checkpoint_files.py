"""The files of a checkpoint in `model_dir/checkpoints`: their names, reading, writing, removal.

A checkpoint `ckpt-N` (N: the step) is TensorFlow's `ckpt-N.index` and `ckpt-N.data-*` files and
the fingerprint `ckpt-N.json`, beside TF's `checkpoint` state file (`STATE_FILE`).

- `verify(prefix)`: intact means every value reads back with its checksum (TF keeps a CRC32C
  per tensor) and the fingerprint file, if present, is a complete fingerprint
  (`read_fingerprint`);
- `atomic_write(path, text)`: a temporary file, synced, then renamed over `path`, so a kill
  leaves the old file or the new one, never a part; it gets the mode TensorFlow gives its own
  files (0666 less the umask: 0644 by default), so whoever can read the run can read it;
- `checkpoint_steps(directory)`, `remove_checkpoint(directory, step)`: the checkpoints present
  by their files, and all files of one;
- `check_writable(model_dir)`: the directory check a run makes before any work.

What a run does with them (restore, save, rotate): `vae_harness.checkpoints`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

import tensorflow as tf

__all__ = [
    "NAME",
    "STATE_FILE",
    "ModelDirError",
    "atomic_write",
    "check_writable",
    "checkpoint_steps",
    "read_fingerprint",
    "remove_checkpoint",
    "verify",
]

# Every file of a checkpoint, TF's temporary ones and the fingerprint's included: the step.
NAME = re.compile(r"ckpt-(\d+)(\.index|\.data-\d+-of-\d+|\.json(\.tmp.*)?|_temp.*)$")
STATE_FILE = "checkpoint"


class ModelDirError(ValueError):
    """`model_dir` is not a directory this process can write checkpoints to."""


def verify(prefix: str) -> str | None:
    """None if the checkpoint `prefix` is intact, else what is wrong with it.

    Reads every value (TensorFlow compares each one's checksum) and the fingerprint file, if any.
    """
    if not os.path.exists(prefix + ".index"):
        return f"{prefix}.index is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    # Any failure to read means damage: TF raises OpError, but also IndexError (a short file).
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
    try:
        read_fingerprint(prefix)
    except (OSError, ValueError) as e:
        return f"{prefix}.json is unreadable ({e})"
    return None


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def check_writable(model_dir: str) -> None:
    """Raises unless `model_dir` is, or can be made, a directory this process can write to
    (and so is its `checkpoints`, if present). Creates `model_dir` when it does not exist.

    Raises:
      ModelDirError: `model_dir` or its `checkpoints` is a file, or either cannot be written.
    """
    for path in (model_dir, os.path.join(model_dir, "checkpoints")):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ModelDirError(
                f"`model_dir` must be a directory; got {model_dir!r} ({path}: file). Pass "
                "another --model_dir."
            )
        try:
            if path == model_dir:
                os.makedirs(path, exist_ok=True)
            if os.path.isdir(path):
                handle, probe = tempfile.mkstemp(prefix=".write_test", dir=path)
                os.close(handle)
                os.remove(probe)
        except OSError as e:
            raise ModelDirError(
                f"`model_dir` must be a writable directory; got {model_dir!r} ({path}: "
                f"{e.strerror}). Pass another --model_dir."
            ) from None


def read_fingerprint(prefix: str) -> dict | None:
    """The fingerprint saved beside `prefix` (`prefix.json`), or None when there is none.

    A fingerprint (`vae_harness.fingerprint`) is a flat JSON object of scalar settings that
    counts the model's modules (`"module <Class>(...)": <count>`): one without any module entry
    (`{}`, a part) or with a nested or non-scalar value describes no model, and is damage.

    Raises:
      OSError: the file cannot be read.
      ValueError: it is not JSON (nested too deep to parse included) or not a fingerprint.
    """
    if not os.path.exists(prefix + ".json"):
        return None
    with open(prefix + ".json", encoding="utf-8") as f:
        text = f.read()
    try:
        saved = json.loads(text)
    except RecursionError:
        raise ValueError("not a fingerprint: JSON nested too deep to read") from None
    if not isinstance(saved, dict):
        raise ValueError(f"not a JSON object: {type(saved).__name__}")
    odd = [k for k, v in saved.items() if not _is_scalar(v)]
    if odd:
        raise ValueError(f"not a fingerprint: `{odd[0]}` holds a {type(saved[odd[0]]).__name__}")
    modules = [k for k in saved if k.startswith("module ")]
    if not modules:
        raise ValueError(f"an incomplete fingerprint: no module entry among {len(saved)} fields")
    if any(isinstance(saved[k], bool) or not isinstance(saved[k], int) for k in modules):
        raise ValueError("not a fingerprint: a module entry that is no count")
    return saved


def _umask() -> int:
    """The process's umask (read by setting it, as POSIX offers no other way, and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, text: str) -> None:
    """Writes `text` to `path` by a synced temporary file renamed over it, of mode 0666 less
    the umask (TensorFlow's files' mode; `mkstemp` alone would make it 0600)."""
    directory, name = os.path.split(path)
    handle, temp = tempfile.mkstemp(prefix=name + ".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def checkpoint_steps(directory: str) -> list[int]:
    """The steps of the checkpoints with any file in `directory`, newest first."""
    if not os.path.isdir(directory):
        return []
    found = {int(m.group(1)) for m in map(NAME.match, os.listdir(directory)) if m}
    return sorted(found, reverse=True)


def remove_checkpoint(directory: str, step: int) -> None:
    """Deletes every file of `ckpt-<step>` in `directory` (temporary ones included)."""
    for name in os.listdir(directory):
        match = NAME.match(name)
        if match and int(match.group(1)) == step:
            path = os.path.join(directory, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
