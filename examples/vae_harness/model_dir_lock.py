"""One writer per `model_dir`: an OS advisory lock that training holds while it runs.

Two training runs pointed at one `model_dir` would rotate each other's checkpoints away and
write the same steps twice. `hold(model_dir)` takes an exclusive `flock` on
`model_dir/training.lock` (and writes the holder's PID into it, for the message a second run
gets) or raises `ModelDirBusy` at once, naming the `model_dir` and that PID.

- The lock belongs to the open file: the OS releases it when the process ends, however it ends,
  so a `kill -9` never leaves a stale lock. The file itself is removed on a normal release;
  one left by a killed run is harmless (the next run locks it again).
- Within a process it is re-entrant: `run_experiment` takes it before any data loads, and the
  `train` it calls takes it again (for code that calls `train` directly).
- Under `MultiWorkerMirroredStrategy` the workers share the `model_dir` by design: only the
  chief (the process that writes there) takes the lock. Evaluating and sampling a trained run
  only read, and take no lock.
- POSIX only: where `fcntl` is missing (Windows), no lock is taken.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from vae_harness.checkpoint_files import ModelDirError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["LOCK_FILE", "ModelDirBusy", "hold"]

LOCK_FILE = "training.lock"

# Real path of a `model_dir` -> [descriptor of its lock file, holds in this process].
_held: dict[str, list[int]] = {}


class ModelDirBusy(ModelDirError):
    """Another process is training in this `model_dir`."""


@contextlib.contextmanager
def hold(model_dir: str) -> Iterator[None]:
    """Holds `model_dir`'s training lock within the `with` block (creating `model_dir`).

    Raises:
      ModelDirBusy: another process holds it.
      OSError: the lock file cannot be created.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    os.makedirs(model_dir, exist_ok=True)
    key = os.path.realpath(model_dir)
    if key not in _held:
        _held[key] = [_acquire(model_dir, os.path.join(key, LOCK_FILE)), 0]
    _held[key][1] += 1
    try:
        yield
    finally:
        _held[key][1] -= 1
        if not _held[key][1]:
            _release(os.path.join(key, LOCK_FILE), _held.pop(key)[0])


def _acquire(model_dir: str, path: str) -> int:
    """The descriptor of `path`, locked; retried while a releasing holder unlinks the file."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise ModelDirBusy(
                f"another training run ({holder}) holds `model_dir` {model_dir!r} (its lock "
                f"file {path}): two runs in one model_dir would delete each other's "
                "checkpoints. Wait for it to end or stop it (Ctrl-C saves a checkpoint first), "
                "or pass another --model_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the file locked may have been unlinked by a holder releasing it meanwhile
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "PID unknown"


def _release(path: str, fd: int) -> None:
    """Removes the lock file, then unlocks it (a run waiting on it checks it still exists)."""
    try:
        os.remove(path)
    except OSError:
        pass  # a read-only model_dir: the file stays, the lock still goes with the descriptor
    os.close(fd)
