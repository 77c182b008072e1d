r"""The GPU suite: one command that measures tfp_iaf on a GPU and writes docs/benchmarks_gpu.md.

Stages, in order (each one alone with `--stage=NAME`, or a comma-separated list; `env`,
`placement` and `cifar` run in this process, from bench/gpu_stages.py):

- `env`: date, GPU, driver, CUDA/cuDNN of the TF build, TF/TFP versions, and matmul peaks
  (fp32 as TF runs it, i.e. TF32 on Ampere and later; fp32 with TF32 off; bf16; fp16);
- `tests`: the test suite with the GPU visible (`pytest -n`, killed after `--tests_timeout`);
- `placement`: training and sampling steps of the dense and conv IAFs, the MNIST VAE and the
  ResNet VAE (fp32 and mixed precision) with soft device placement off under `/GPU:0`: an op
  with no GPU kernel fails loudly instead of falling back to the CPU;
- `dense`, `conv`: bench/bench_dense.py (tfp_iaf vs TFP, GFLOP/s against its own matmul) and
  bench/bench_conv.py (masked vs unmasked) at the paper's sizes; the IAF networks are float32
  under every policy (see tests/test_mixed_precision.py), so these run in fp32 only;
- `cifar`: the CIFAR ResNet VAE at the example's documented preset (hidden 160, z 32, depth 2 x
  2 layers, 1 IAF step, batch 32): training step time and images/s, fp32 / mixed_float16 /
  mixed_bfloat16, without and with XLA;
- `sampling`: bench/bench_sampling.py, ResNet VAE sampling vs sequential autoregressive sampling;
- `mnist_train`: examples/mnist_vae.py (static MNIST, IAF: depth 8, MADE 1920 x 2) trained for
  `--mnist_minutes`, then stopped with SIGINT (it checkpoints); a second invocation resumes;
- `mnist_eval`: the test log p(x) with k = `--mnist_k` (1,000) of the checkpoint reached.

After every stage the results go to `--results` (JSON, merged with earlier runs) and the page
`--output` is rendered from them, so a run cut short keeps what it measured. Runbook (one GPU,
at most 10 minutes per command, 30 minutes in all), from the repository root:

    python -m bench.gpu_suite --stage=env,placement,tests --tests_timeout=240
    python -m bench.gpu_suite --stage=dense,conv,sampling
    python -m bench.gpu_suite --stage=cifar
    python -m bench.gpu_suite --stage=mnist_train --data_dir=/path/to/tfds --mnist_minutes=7
    python -m bench.gpu_suite --stage=mnist_train --data_dir=/path/to/tfds --mnist_minutes=7
    python -m bench.gpu_suite --stage=mnist_eval --data_dir=/path/to/tfds

`--smoke` runs every stage but `tests` at toy sizes on the CPU (a few minutes; CI runs it);
without `--smoke` the suite refuses to run where no GPU is visible.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from bench import gpu_report, gpu_stages

ROOT = Path(__file__).resolve().parents[1]
STAGES = (
    "env", "tests", "placement", "dense", "conv", "cifar", "sampling", "mnist_train", "mnist_eval",
)  # fmt: skip
SMOKE_SKIPS = ("tests",)
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
RUNBOOK = [
    "python -m bench.gpu_suite --stage=env,placement,tests --tests_timeout=240",
    "python -m bench.gpu_suite --stage=dense,conv,sampling",
    "python -m bench.gpu_suite --stage=cifar",
    "python -m bench.gpu_suite --stage=mnist_train --data_dir=/path/to/tfds --mnist_minutes=7",
    "python -m bench.gpu_suite --stage=mnist_train --data_dir=/path/to/tfds --mnist_minutes=7",
    "python -m bench.gpu_suite --stage=mnist_eval --data_dir=/path/to/tfds",
]

flags.DEFINE_string("stage", "all", f"'all' or a comma-separated list of {', '.join(STAGES)}.")
flags.DEFINE_bool("smoke", False, "Every stage but `tests` at toy sizes, on the CPU.")
flags.DEFINE_string("output", str(ROOT / "docs" / "benchmarks_gpu.md"), "The page to render.")
flags.DEFINE_string("results", None, "Results JSON (default: --output with .json).")
flags.DEFINE_bool("render_only", False, "Only render --output from --results.")
flags.DEFINE_string("data_dir", None, "tfds directory holding a prepared binarized_mnist.")
flags.DEFINE_string("work_dir", "/tmp/gpu_suite", "MNIST model directory and scratch files.")
flags.DEFINE_float("mnist_minutes", 7.0, "Training minutes of one mnist_train invocation.")
flags.DEFINE_integer("mnist_k", 1000, "Importance samples of the MNIST test log p(x).")
flags.DEFINE_integer("mnist_eval_examples", None, "Evaluate on the first N test images only.")
flags.DEFINE_integer("tests_timeout", 300, "Seconds before the test suite is stopped.")
flags.DEFINE_integer("stage_timeout", 540, "Seconds before a benchmark subprocess is stopped.")
FLAGS = flags.FLAGS


def parse_stages(text: str, smoke: bool = False) -> list[str]:
    """The stages named by `--stage`, in suite order (`all`: every stage; smoke skips `tests`).

    Raises:
      ValueError: an unknown stage name.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        names = [s for s in STAGES if not (smoke and s in SMOKE_SKIPS)]
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise ValueError(
            f"`--stage` must be 'all' or names from {', '.join(STAGES)}; got {text!r}"
        )
    return [s for s in STAGES if s in names]


def check_device(smoke: bool, gpus: list) -> None:
    """Raises `RuntimeError` where a full run has no GPU to measure."""
    if not smoke and not gpus:
        raise RuntimeError(
            "`--smoke` is false but no GPU is visible to TensorFlow; install the CUDA build "
            "(pip install 'tensorflow[and-cuda]==2.21.*') or run with --smoke"
        )


# Sizes: the paper's (full) and toy ones (smoke). Flags of the bench scripts as they define them.
SIZES = {
    False: dict(
        dense=["--nopeak_memory"],
        conv=[],
        sampling=[],
        cifar=dict(hidden_size=160, z_size=32, depth=2, num_blocks=2, iaf_steps=1),
        cifar_batch=32, cifar_steps=20, cifar_repeats=5, matmul=8192,
        cifar_configs=[(p, x) for p in POLICIES for x in (False, True)], policies=POLICIES,
        mnist=["--iaf_depth=8", "--iaf_width=1920", "--context_size=32", "--batch_size=100"],
    ),
    True: dict(
        dense=["--latent=8", "--context=4", "--width=16", "--depth=2", "--batch=4",
               "--repeats=2", "--nopeak_memory"],
        conv=["--height=4", "--width=4", "--channels=2", "--context=4", "--filters=4",
              "--batch=2", "--repeats=2", "--raster_passes=2"],
        sampling=["--batch_size=2", "--hidden_size=4", "--z_size=2", "--depth=1",
                  "--num_blocks=1", "--pixel_hidden=3", "--pixel_layers=1", "--repeats=1"],
        cifar=dict(hidden_size=4, z_size=2, depth=1, num_blocks=1, iaf_steps=1),
        cifar_batch=2, cifar_steps=2, cifar_repeats=2, matmul=128,
        # Two configurations cover both code paths (loss scaling, XLA) at a CI-sized cost.
        cifar_configs=[("float32", False), ("mixed_float16", True)], policies=POLICIES[:1],
        mnist=["--iaf_depth=1", "--iaf_width=32", "--context_size=4", "--batch_size=4"],
    ),
}  # fmt: skip

# The smoke run's MNIST: examples/mnist_vae.py on tfds mock data (argv: the example's flags).
# The example as `python examples/mnist_vae.py` runs it (its folder first on the path, for its
# harness), on tfds's mock data.
MOCK_MNIST = (
    "import os, runpy, sys; import tensorflow_datasets as tfds; path = sys.argv[1]; "
    "sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(path))\n"
    "with tfds.testing.mock_data(num_examples=8): runpy.run_path(path, run_name='__main__')"
)


def run_command(command: list[str], timeout: float, env: dict | None = None) -> dict:
    """Runs `command`; its status, seconds and output tail (stdout, then stderr's tail)."""
    start = time.time()
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        out, err = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        status, out, err = f"timeout after {timeout:.0f} s", e.stdout or "", e.stderr or ""
        out, err = (t.decode() if isinstance(t, bytes) else t for t in (out, err))
    result = {"status": status, "seconds": round(time.time() - start, 1), "output": out[-6000:]}
    if status != "ok":
        result["stderr_tail"] = err[-3000:]
    return result


def python(script: str | Path, *args: str) -> list[str]:
    return [sys.executable, str(script), *args]


# --- MNIST: train for a time budget, then evaluate the checkpoint reached ---------------------


def _mnist_dir() -> Path:
    return Path(FLAGS.work_dir) / ("mnist_smoke" if FLAGS.smoke else "mnist_iaf")


def _latest_step(model_dir: Path) -> int | None:
    """The step of the latest checkpoint in `model_dir/checkpoints` (TF's `checkpoint` file)."""
    index = model_dir / "checkpoints" / "checkpoint"
    if not index.exists():
        return None
    match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', index.read_text())
    return int(match.group(1)) if match else None


def _mnist_command(sizes: dict, *args: str) -> list[str]:
    example = ROOT / "examples" / "mnist_vae.py"
    flags_ = ["--posterior=iaf", "--dataset=binarized_mnist", f"--model_dir={_mnist_dir()}",
              *sizes["mnist"], *args]  # fmt: skip
    if FLAGS.smoke:
        return [sys.executable, "-c", MOCK_MNIST, str(example), *flags_]
    return python(example, f"--data_dir={FLAGS.data_dir}", *flags_)


def stage_mnist_train(sizes: dict) -> dict:
    if FLAGS.smoke:  # two steps, no signal: a loaded CI machine may not reach training in time
        before = _latest_step(_mnist_dir()) or 0
        command = _mnist_command(sizes, f"--num_steps={before + 2}", "--num_importance_samples=1")
        result = run_command(command, FLAGS.stage_timeout)
    else:
        if not FLAGS.data_dir:
            raise ValueError(
                "`--data_dir` must name a tfds directory with binarized_mnist; got None"
            )
        command = _mnist_command(sizes, "--epochs=100000", "--save_every=1000")
        start = time.time()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=FLAGS.mnist_minutes * 60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # the example saves a checkpoint, then exits 130
            try:
                out, _ = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
        ok = proc.returncode in (0, 128 + signal.SIGINT)
        result = {"status": "ok" if ok else f"failed (exit {proc.returncode})",
                  "seconds": round(time.time() - start, 1), "output": out[-3000:]}  # fmt: skip
    step = _latest_step(_mnist_dir())
    result.update(command=shlex.join(command), step=step)
    if step is None and result["status"] == "ok":
        result["status"] = "failed (no checkpoint)"
    return result


def stage_mnist_eval(sizes: dict) -> dict:
    step = _latest_step(_mnist_dir())
    if step is None:
        return {"status": f"failed (no checkpoint in {_mnist_dir()}; run mnist_train first)"}
    k = 2 if FLAGS.smoke else FLAGS.mnist_k
    args = [f"--num_steps={step}", f"--num_importance_samples={k}",
            f"--importance_chunk={min(k, 100)}", "--eval_batch_size=100"]  # fmt: skip
    if FLAGS.mnist_eval_examples:
        args.append(f"--num_eval_examples={FLAGS.mnist_eval_examples}")
    command = _mnist_command(sizes, *args)
    result = run_command(command, FLAGS.stage_timeout)
    result["command"] = shlex.join(command)
    results_json = _mnist_dir() / "results.json"
    if result["status"] == "ok" and results_json.exists():
        r = json.loads(results_json.read_text())
        keys = ("test_log_px", "test_elbo", "num_importance_samples", "num_test_examples",
                "steps", "steps_per_epoch", "train_seconds", "eval_seconds")  # fmt: skip
        result["figures"] = {key: r.get(key) for key in keys}
    return result


def stage_tests(sizes: dict) -> dict:
    env = {**os.environ, "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "8",
               "--durations=0", "tests"]  # fmt: skip
    result = run_command(command, FLAGS.tests_timeout, env=env)
    result["command"] = shlex.join(command)
    return result


def _bench(module: str, key: str):
    def stage(sizes: dict) -> dict:
        command = [sys.executable, "-m", f"bench.{module}", *sizes[key]]
        result = run_command(command, FLAGS.stage_timeout)
        result["command"] = shlex.join(command)
        return result

    return stage


RUNNERS = {
    "env": gpu_stages.stage_env, "tests": stage_tests,
    "placement": functools.partial(gpu_stages.stage_placement, resnet_sizes=SIZES[True]["cifar"]),
    "dense": _bench("bench_dense", "dense"), "conv": _bench("bench_conv", "conv"),
    "cifar": gpu_stages.stage_cifar, "sampling": _bench("bench_sampling", "sampling"),
    "mnist_train": stage_mnist_train, "mnist_eval": stage_mnist_eval,
}  # fmt: skip


def render(data: dict) -> str:
    """docs/benchmarks_gpu.md for the suite's results `data` (see gpu_report.render)."""
    return gpu_report.render(data, STAGES, RUNBOOK)


def _paths() -> tuple[Path, Path]:
    output = Path(FLAGS.output)
    if FLAGS.smoke and not FLAGS["output"].present:  # never overwrite the real page
        output = Path(FLAGS.work_dir) / "benchmarks_gpu_smoke.md"
    results = Path(FLAGS.results) if FLAGS.results else output.with_suffix(".json")
    return output, results


def _save(data: dict, output: Path, results: Path) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(data, indent=1) + "\n")
    output.write_text(render(data))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    output, results = _paths()
    data = json.loads(results.read_text()) if results.exists() else {}
    if FLAGS.render_only:
        output.write_text(render(data))
        return
    try:
        stages = parse_stages(FLAGS.stage, FLAGS.smoke)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"  # in-process stages share the GPU
    if FLAGS.smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the toy sizes run on the CPU
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        check_device(FLAGS.smoke, tf.config.list_physical_devices("GPU"))
    except RuntimeError as e:
        raise app.UsageError(str(e)) from None
    if data.get("smoke", FLAGS.smoke) != FLAGS.smoke:
        data = {}  # smoke and real figures never share a page
    data["smoke"] = FLAGS.smoke
    data.setdefault("stages", {})
    data.setdefault("command_lines", []).append(
        shlex.join(["python", "-m", "bench.gpu_suite", *sys.argv[1:]])
    )
    failed = []
    Path(FLAGS.work_dir).mkdir(parents=True, exist_ok=True)
    for stage in stages:
        start = time.time()
        print(f"[gpu_suite] {stage} ...", file=sys.stderr, flush=True)
        try:
            result = RUNNERS[stage](SIZES[FLAGS.smoke])
        except Exception as e:  # noqa: BLE001  (recorded; the suite goes on to the next stage)
            result = {"status": f"failed: {type(e).__name__}: {e}"}
        result.setdefault("seconds", round(time.time() - start, 1))
        result["finished"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        data["stages"][stage] = result
        _save(data, output, results)
        print(f"[gpu_suite] {stage}: {result['status']} ({result['seconds']} s)", file=sys.stderr)
        if result["status"] != "ok":
            failed.append(stage)
    print(f"[gpu_suite] wrote {output} and {results}", file=sys.stderr)
    if failed:
        raise SystemExit(f"gpu_suite: stages failed: {', '.join(failed)} (see {output})")


if __name__ == "__main__":
    app.run(main)
