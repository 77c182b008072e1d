"""examples/toy_posteriors.py (the `make demo` figure), a few steps, as a user runs it."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.examples_util import decode_png

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "toy_posteriors.py"


def test_writes_the_figure_and_results(tmp_path):
    cmd = [
        sys.executable,
        str(EXAMPLE),
        f"--output_dir={tmp_path}",
        "--num_steps=20",
        "--hidden=8",
        "--iaf_depth=2",
        "--num_importance_samples=50",
        "--num_plot_samples=30",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    # Two panels of 5.2 x 5.6 inches at 110 dpi, in colour: samples over grey contours.
    png = decode_png(tmp_path / "toy_posteriors.png")
    assert png.shape[:2] == (round(5.6 * 110), round(2 * 5.2 * 110)) and png.shape[-1] in (3, 4)
    rgb = png[..., :3].reshape(-1, 3).astype(np.int32)
    assert len(np.unique(rgb, axis=0)) > 20  # not a blank figure
    assert np.any(rgb.max(axis=1) - rgb.min(axis=1) > 50)  # coloured points, not only greys
    results = json.loads((tmp_path / "toy_posteriors.json").read_text())["results"]
    assert set(results) == {"diag", "iaf"}
    for metrics in results.values():
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics["elbo"] <= metrics["log_px"] + 1e-3
        assert metrics["log_px"] < 0 and metrics["aggregate_kl"] > -0.05
