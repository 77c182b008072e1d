"""Timing and memory helpers shared by the benchmark scripts in this folder.

The scripts, run as `python -m bench.<script>`, import it as `from bench import timing`:

- `time_fns`: the median and minimum wall-clock seconds per call of some functions, after warm-up
  calls, with every call's result copied to NumPy (so the time includes finishing the work) and
  the repeats interleaved across the functions;
- `matmul_gflops`: a plain fp32 matmul's GFLOP/s, the machine's peak to compare against;
- `vm_hwm_mib` / `child_vm_hwm_mib`: a process's peak resident memory, measured in a child
  process that runs one case only.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import tensorflow as tf


def time_fns(
    fns: Sequence[Callable[[], object]], repeats: int, warmup: int = 2
) -> list[tuple[float, float]]:
    """(median, min) seconds per call of each function.

    Each function is called `warmup` times first (tracing, caches), then the `repeats` timed
    calls are interleaved across the functions, so that a change in machine load (the cores are
    shared) hits every case alike. A timed call includes copying its result (a nest of tensors)
    to NumPy, so asynchronous work is finished inside the timing.

    Args:
      fns: functions of no arguments returning a nest of tensors.
      repeats: timed calls per function.
      warmup: untimed calls per function before the timed ones.

    Returns:
      One `(median, min)` pair of seconds per function, in order.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times, strict=True):
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), fn())
            record.append(time.perf_counter() - start)
    return [(statistics.median(record), min(record)) for record in times]


def time_fn(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median seconds per call of `fn`: `time_fns([fn], repeats, warmup)`'s median."""
    return time_fns([fn], repeats, warmup)[0][0]


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a `[size, size] x [size, size]` fp32 matmul (a `tf.function`), median time."""
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    seconds = time_fn(tf.function(lambda: tf.matmul(a, b)), repeats)
    return 2 * size**3 / seconds / 1e9


def vm_hwm_mib() -> float:
    """This process's peak RSS, in MiB (Linux).

    `ru_maxrss` would not do: Linux carries the parent's peak across fork and exec, so every
    child would report the benchmark process's own peak.
    """
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def child_vm_hwm_mib(script: str, args: Sequence[str]) -> float:
    """Runs `python script *args` and returns the number on the last line of its output.

    The child is expected to run one case only and print `vm_hwm_mib()` last.
    """
    out = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])
