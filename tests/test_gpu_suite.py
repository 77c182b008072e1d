"""bench/gpu_suite.py: the `--smoke` run of every stage (toy sizes, CPU), its argument errors,
and docs/benchmarks_gpu.md being exactly what the suite renders from its results."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "gpu_suite.py"
DOCS = ROOT / "docs" / "benchmarks_gpu.md"


@pytest.fixture(scope="module")
def suite():
    """The script as module `gpu_suite` (it imports no TensorFlow); its flags removed after."""
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for flag in flags.FLAGS.get_flags_for_module("gpu_suite"):
            delattr(flags.FLAGS, flag.name)
        sys.modules.pop("gpu_suite", None)


def _run(*args, timeout=900):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu_suite", *args], env=env, capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.slow
def test_smoke_runs_every_stage_but_the_tests(tmp_path):
    docs_before = DOCS.read_text()
    proc = _run("--smoke", f"--work_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    page = tmp_path / "benchmarks_gpu_smoke.md"
    data = json.loads(page.with_suffix(".json").read_text())
    expected = ["env", "placement", "dense", "conv", "cifar", "sampling", "mnist_train",
                "mnist_eval"]  # fmt: skip
    assert list(data["stages"]) == expected and data["smoke"] is True
    assert {name: r["status"] for name, r in data["stages"].items()} == dict.fromkeys(
        expected, "ok"
    )
    peaks = data["stages"]["env"]["env"]["matmul_tflops"]
    assert set(peaks) >= {"bf16", "fp16"} and all(isinstance(v, float) for v in peaks.values())
    rows = data["stages"]["cifar"]["rows"]
    assert {(r["policy"], r["xla"]) for r in rows} == {("float32", False), ("mixed_float16", True)}
    assert all(r["images_per_s"] > 0 and r["loss_finite"] for r in rows)
    figures = data["stages"]["mnist_eval"]["figures"]
    assert figures["steps"] == data["stages"]["mnist_train"]["step"] == 2
    assert figures["test_elbo"] <= figures["test_log_px"] + 1e-3
    text = page.read_text()
    assert "Smoke run" in text and all(f"### {name}" in text for name in expected)
    assert DOCS.read_text() == docs_before  # a smoke run never writes the real page


@pytest.mark.parametrize(
    "text, match",
    [
        ("bogus", r"`--stage` must be 'all' or names from env, .*; got 'bogus'"),
        ("env,,gpu", r"got 'env,,gpu'"),
        ("", r"got ''"),
    ],
)
def test_unknown_stage_raises(suite, text, match):
    with pytest.raises(ValueError, match=match):
        suite.parse_stages(text)


def test_stages_run_in_suite_order_and_smoke_skips_the_tests(suite):
    assert suite.parse_stages("mnist_eval,env") == ["env", "mnist_eval"]
    assert "tests" in suite.parse_stages("all")
    assert "tests" not in suite.parse_stages("all", smoke=True)


def test_full_run_without_a_gpu_raises(suite):
    with pytest.raises(RuntimeError, match=r"`--smoke` is false but no GPU is visible"):
        suite.check_device(smoke=False, gpus=[])
    suite.check_device(smoke=True, gpus=[])  # the toy sizes need no GPU


def test_command_line_errors_exit_before_any_work(tmp_path):
    proc = _run("--stage=bogus", f"--work_dir={tmp_path}", timeout=120)
    assert proc.returncode != 0
    assert "`--stage` must be 'all' or names from" in proc.stderr
    proc = _run("--stage=env", f"--output={tmp_path / 'page.md'}", timeout=120)
    assert proc.returncode != 0 and "no GPU is visible" in proc.stderr  # no --smoke, no GPU
    assert not (tmp_path / "page.md").exists()


def test_mnist_train_without_data_dir_raises(suite, tmp_path):
    flags.FLAGS(["gpu_suite", f"--work_dir={tmp_path}", "--nosmoke"])
    try:
        with pytest.raises(
            ValueError, match="`--data_dir` must name a tfds directory .*; got None"
        ):
            suite.stage_mnist_train(suite.SIZES[False])
    finally:
        flags.FLAGS.unparse_flags()


def test_docs_page_is_the_rendered_results(suite):
    """docs/benchmarks_gpu.md is `render` of the JSON beside it (none yet: the runbook)."""
    results = DOCS.with_suffix(".json")
    data = json.loads(results.read_text()) if results.exists() else {}
    assert DOCS.read_text() == suite.render(data)
    if not data:
        text = DOCS.read_text()
        assert "No GPU run yet" in text
        assert all(command in text for command in suite.RUNBOOK)
