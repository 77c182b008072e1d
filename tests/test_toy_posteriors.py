"""examples/toy_posteriors.py (the `make demo` figure), a few steps, as a user runs it."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.examples_util import decode_png, loaded_example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "toy_posteriors.py"


@pytest.mark.slow
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
        "--log_every=10",
    ]
    run = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    # A plan first, then the loss every --log_every (10) steps of each fit: never silent.
    assert "Plan: fit a diagonal, then an IAF posterior (20 steps each" in run.stderr
    for kind in ("diag", "iaf"):
        for step in (10, 20):
            assert f"{kind} posterior: step {step} of 20, loss " in run.stderr
        assert f"{kind} posterior: ELBO " in run.stderr
    # Two panels of 5.2 x 6.8 inches at 110 dpi (a shared legend below), in colour.
    png = decode_png(tmp_path / "toy_posteriors.png")
    assert png.shape[:2] == (round(6.8 * 110), round(2 * 5.2 * 110)) and png.shape[-1] in (3, 4)
    rgb = png[..., :3].reshape(-1, 3).astype(np.int32)
    assert len(np.unique(rgb, axis=0)) > 20  # not a blank figure
    assert np.any(rgb.max(axis=1) - rgb.min(axis=1) > 50)  # coloured points, not only greys
    written = json.loads((tmp_path / "toy_posteriors.json").read_text())
    assert set(written["flags"]) == {
        "output_dir", "num_steps", "batch_copies", "iaf_depth", "hidden", "learning_rate",
        "num_plot_samples", "num_importance_samples", "seed", "log_every",
    }  # fmt: skip
    assert written["flags"]["num_steps"] == 20 and written["flags"]["hidden"] == 8
    results = written["results"]
    assert set(results) == {"diag", "iaf"}
    for metrics in results.values():
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics["elbo"] <= metrics["log_px"] + 1e-3
        assert metrics["log_px"] < 0 and metrics["aggregate_kl"] > -0.05


def test_true_posterior_contours_hold_the_stated_mass():
    with loaded_example("toy_posteriors") as toy:
        model = toy.make_model(iaf_depth=0, hidden=8, seed=0)
        post = toy.true_posterior(model)
        assert post.shape == (4, len(toy.GRID), len(toy.GRID))
        np.testing.assert_allclose(post.sum(axis=(1, 2)), 1.0, rtol=1e-5)
        low, high = toy._mass_levels(post[0], (0.9, 0.5))
        assert low < high
        assert 0.5 <= post[0][post[0] >= high].sum() < 0.55
        assert 0.9 <= post[0][post[0] >= low].sum() < 0.95
        assert math.isclose(toy.BEST_LOG_PX, math.log(0.25))
