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
