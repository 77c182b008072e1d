"""bench/bench_mnist.py: configuration names, the table over seeds, resuming from a work dir."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "bench.bench_mnist"]  # run from ROOT


def test_rejects_unknown_config(tmp_path):
    cmd = [
        *BENCH,
        f"--data_dir={tmp_path}",
        "--configs=diag,maf2",
        f"--work_dir={tmp_path / 'work'}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0
    assert (
        "`configs` entries must be 'diag', 'planarN', 'iafN' or 'iafNg' (N >= 1); got 'maf2'"
        in (out.stderr)
    )
    assert not (tmp_path / "work").exists()  # failed before training anything


def _run_bench(script: str) -> str:
    # In a child process: the bench module defines absl flags that the examples define too.
    prelude = """
from bench import bench_mnist as bench
"""
    out = subprocess.run(
        [sys.executable, "-c", prelude + script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_config_names_map_to_example_flags():
    out = _run_bench(
        """
for name in ["diag", "planar8", "iaf4", "iaf4g"]:
    p = bench.parse_config(name, 320)
    print(name, "|", " ".join(p.flags), "|", p.label)
for bad in ["planar2g", "iaf0", "iaf", "diag2"]:
    try:
        bench.parse_config(bad)
    except ValueError as e:
        print("error", bad)
"""
    )
    assert "diag | --posterior=diag | diagonal Gaussian" in out
    assert "planar8 | --posterior=planar --planar_depth=8 | planar flow, 8 steps" in out
    assert "iaf4 | --posterior=iaf --iaf_depth=4 --iaf_width=320 --nogated | IAF, 4 affine" in out
    assert "iaf4g | --posterior=iaf --iaf_depth=4 --iaf_width=320 --gated | IAF, 4 gated" in out
    for bad in ["planar2g", "iaf0", "iaf", "diag2"]:
        assert f"error {bad}" in out


def test_table_aggregates_seeds_and_counts_divergence():
    out = _run_bench(
        """
bench.FLAGS(["bench_mnist"])
# Two finished seeds (one resumed: train_seconds covers both of its runs) and one diverged.
def run(elbo, log_px, seconds, rss):
    return {"diverged": False, "results": dict(
        test_elbo=elbo, test_log_px=log_px, steps=600, steps_per_epoch=100,
        train_seconds=seconds, peak_rss_mib=rss)}
runs = [run(-100.0, -96.0, 600.0, 1000.0), run(-102.0, -98.0, 480.0, 1200.0),
        {"diverged": True, "message": "Training diverged at step 7"}]
print(bench.table([(bench.parse_config("iaf2g"), runs)]))
"""
    )
    # mean +- sample sd of (-100, -102) and (-96, -98); (100 + 80) / 2 s per epoch; max RSS.
    assert (
        "| IAF, 2 gated steps, width 320 | 3 | -101.00 ± 1.41 | -97.00 ± 1.41 | 90 | 1200 | 1 |"
        in (out)
    )


def test_finished_runs_are_skipped_and_the_budget_is_checked(tmp_path):
    work = tmp_path / "work"
    (work / "diag" / "seed0").mkdir(parents=True)
    row = {"diverged": True, "message": "Training diverged at step 3"}
    (work / "diag" / "seed0" / "row.json").write_text(json.dumps(row))
    args = f"--configs=diag --seeds=0 --work_dir={work} --data_dir={tmp_path}"
    # A finished run is read back, not retrained (there is no data under data_dir).
    out = _run_bench(
        f"""
bench.FLAGS(["bench_mnist", *{args.split()!r}])
bench.main(["bench_mnist"])
"""
    )
    assert "| diagonal Gaussian | 1 | - | - | - | - | 1 |" in out
    assert json.loads((work / "budget.json").read_text())["epochs"] == 1
    # Another budget in the same work dir is refused, naming the flag.
    cmd = [*BENCH, *args.split(), "--epochs=2"]
    failed = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert failed.returncode != 0
    assert "`work_dir`" in failed.stderr and "'epochs': 1" in failed.stderr
