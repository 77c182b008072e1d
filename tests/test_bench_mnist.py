"""bench/bench_mnist.py rejects a bad configuration before training anything."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_mnist.py"


def test_rejects_unknown_config(tmp_path):
    cmd = [
        sys.executable,
        str(BENCH),
        f"--data_dir={tmp_path}",
        "--configs=diag,maf2",
        f"--work_dir={tmp_path / 'work'}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "`configs` entries must be 'diag' or 'iafN' (N >= 1); got 'maf2'" in out.stderr
    assert not (tmp_path / "work").exists()  # failed before training anything


def test_table_reads_the_results_the_example_writes():
    # In a child process: the bench module defines absl flags that the examples define too.
    script = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("bench_mnist", {str(BENCH)!r})
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
bench.FLAGS(["bench_mnist", "--data_dir=unused"])
# A resumed run: 300 of its 600 steps in this run, 100 steps per epoch -> 3 epochs, 60 s.
result = dict(test_elbo=-100.0, test_log_px=-95.5, steps=600, resumed_from_step=300,
              steps_per_epoch=100, train_seconds_this_run=180.0, peak_rss_mib=1234.0)
print(bench.table([("diag", result), ("iaf2", result)]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "| diagonal Gaussian | -100.00 | -95.50 | 60 | 1234 |" in out.stdout
    assert "| IAF, 2 steps, width" in out.stdout
