"""What the benchmark pages share: their date-and-machine line, and running an example script.

The scripts, run as `python -m bench.<script>`, import it as `from bench import report`
(bench_vi.py and bench_mcmc.py, run as `python bench/<script>.py`, as `report`; it imports
nothing of bench):

- `date_and_machine(machine)`: today's date, the machine as the `--machine` flag describes it,
  and what this process sees of it (architecture, logical CPUs), for a page's header;
- `run_logged(args, log_path)`: runs `python args...` in a child process (an example, which
  must not share the bench's flags or TensorFlow state), its output appended to `log_path`;
- `load_example(name)`: imports `examples/<name>.py` into this process instead (its flags
  defined here too), for a bench that calls the example's functions;
- `load_run(path)` / `save_run(path, run)`: one run's results as a JSON file, so that a bench
  rerun resumes.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import types
from pathlib import Path

from absl import logging

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def date_and_machine(machine: str) -> str:
    """`Date: YYYY-MM-DD; machine: <machine> (<arch>, <n> logical CPUs visible)`."""
    return (
        f"Date: {datetime.date.today().isoformat()}; machine: {machine} "
        f"({platform.machine()}, {os.cpu_count()} logical CPUs visible)"
    )


def run_logged(args: list[str], log_path: str, check: bool = False) -> subprocess.CompletedProcess:
    """Runs `sys.executable *args`, stdout and stderr appended to `log_path`.

    Args:
      args: the script and its flags.
      log_path: the log file (appended to, so a resumed run keeps its history).
      check: raise `subprocess.CalledProcessError` on a non-zero exit.

    Returns:
      The finished process (its output is in the log).
    """
    cmd = [sys.executable, *args]
    logging.info("Running %s", shlex.join(cmd))
    with open(log_path, "a") as log:
        return subprocess.run(cmd, check=check, stdout=log, stderr=subprocess.STDOUT)


def load_example(name: str) -> types.ModuleType:
    """`examples/<name>.py` imported as module `name` (once per process): defines its flags.

    Its harness, `vae_harness`, imports from examples/, which `bench/__init__.py` puts on the
    path as the script's own run has it.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def load_run(path: str) -> dict | None:
    """The results saved at `path` by `save_run`, or None if there are none."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def save_run(path: str, run: dict) -> None:
    """Saves one run's results as JSON at `path` (its folder created)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(run, f)
