"""docs/benchmarks_gpu.md, rendered from bench/gpu_suite.py's JSON results (no TensorFlow)."""

from __future__ import annotations

import json
from collections.abc import Sequence

MULTI_WORKER = [
    "## More than one machine",
    "",
    "`examples/cifar10_vae.py --strategy=multi_worker` trains with "
    "`tf.distribute.MultiWorkerMirroredStrategy`. Start the same command on every machine, "
    "each with its own `TF_CONFIG`, and `--model_dir` on a file system all of them see; "
    "`--batch_size` is the global batch. Only the chief (worker 0) writes checkpoints, images "
    "and `results.json`; every worker restores the chief's checkpoint, so the same commands "
    "resume. tests/test_multi_worker.py runs two such workers on one CPU machine in CI.",
    "",
    "```",
    '# machine 0 (the chief); machine 1 runs the same with "index": 1',
    'export TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\'',
    "python examples/cifar10_vae.py --strategy=multi_worker --data_dir=/shared/tfds \\",
    "    --model_dir=/shared/runs/cifar10 --batch_size=64 --epochs=100",
    "```",
    "",
    "Several GPUs in one machine: `--strategy=mirrored`. **TPU (untested: no TPU has run "
    "this code):** `tf.distribute.TPUStrategy` should need only a strategy built from "
    "`tf.distribute.cluster_resolver.TPUClusterResolver` in `vae_harness.make_strategy` "
    "(examples/vae_harness), "
    "`--jit_compile` (TPUs compile everything with XLA) and a data directory on GCS; the "
    "IAF's sequential inverse (a `tf.while_loop`) is not needed for training.",
]


def _fence(text: str) -> str:
    return "```\n" + text.strip() + "\n```"


def _cifar_table(result: dict) -> str:
    lines = [
        "| policy | XLA | ms / step | images / s | first step (s, tracing) | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in result.get("rows", []):
        note = row.get("error", "" if row.get("loss_finite", True) else "non-finite loss")
        lines.append(
            f"| {row['policy']} | {'on' if row['xla'] else 'off'} | {row.get('ms_per_step', '-')} "
            f"| {row.get('images_per_s', '-')} | {row.get('first_step_s', '-')} | {note} |"
        )
    return f"Sizes: `{json.dumps(result.get('sizes', {}))}`\n\n" + "\n".join(lines)


def _env_section(env: dict) -> str:
    rows = [
        ("date", env.get("date")),
        ("GPU (nvidia-smi: name, driver, memory)", env.get("nvidia_smi")),
        ("GPU (TensorFlow)", ", ".join(env.get("gpus", [])) or "none"),
        ("TF build", env.get("tf_build")),
        ("TensorFlow / TFP", f"{env.get('tensorflow')} / {env.get('tfp')}"),
        ("host, CPUs, Python", f"{env.get('host')}, {env.get('cpus')}, {env.get('python')}"),
    ]  # fmt: skip
    for label, value in env.get("matmul_tflops", {}).items():
        rows.append((f"matmul peak, {label} ({env.get('matmul_size')}^2), TFLOP/s", value))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _stage_section(name: str, result: dict) -> str:
    head = f"**{result.get('status')}**, {result.get('seconds', '-')} s, finished "
    head += f"{result.get('finished', '-')}."
    parts = [f"### {name}", head]
    if result.get("command"):
        parts.append(f"Command: `{result['command']}`")
    if name == "env":
        parts.append(_env_section(result.get("env", {})))
    elif name == "cifar":
        parts.append(_cifar_table(result))
    elif name == "mnist_train":
        parts.append(f"Checkpoint reached: step {result.get('step')}.")
    elif name == "mnist_eval" and result.get("figures"):
        f = result["figures"]
        epochs = f["steps"] / f["steps_per_epoch"] if f.get("steps_per_epoch") else None
        parts.append(
            f"Test log p(x) = **{f['test_log_px']:.2f}** nats (k = {f['num_importance_samples']}, "
            f"{f['num_test_examples']} test images), ELBO {f['test_elbo']:.2f}, after "
            f"{f['steps']} steps ({epochs:.1f} epochs, {f['train_seconds'] / 60:.1f} min of "
            "training). The paper: -79.88 (IAF, static MNIST, far longer training)."
        )
    if name in ("tests", "placement", "dense", "conv", "sampling") and result.get("output"):
        text = result["output"]
        if name == "tests":  # the summary and the slowest tests, not every dot
            text = "\n".join(text.strip().splitlines()[-40:])
        parts.append(text.strip() if name in ("dense", "conv", "sampling") else _fence(text))
    if result.get("stderr_tail"):
        parts.append("stderr (tail):\n\n" + _fence(result["stderr_tail"][-1500:]))
    return "\n\n".join(parts)


def render(data: dict, stage_order: Sequence[str], runbook: Sequence[str]) -> str:
    """The page: the runbook (`runbook`: its command lines), then each stage of `data` in
    `stage_order`."""
    stages = data.get("stages", {})
    smoke = data.get("smoke", False)
    lines = [
        "# GPU benchmarks",
        "",
        "_Rendered by `bench/gpu_suite.py` from the JSON next to this page; edit neither "
        "by hand._",
        "",
    ]
    if smoke:
        lines += [
            "**Smoke run: toy sizes on the CPU; these figures say nothing about speed.**",
            "",
        ]
    elif not stages:
        lines += [
            "**No GPU run yet.** No accelerator has been available to the project so far: every "
            "figure on this page waits for the commands below, run on a machine with one GPU. "
            "Nothing here is estimated or extrapolated.",
            "",
        ]
    lines += [
        "## Runbook",
        "",
        "On a machine with one NVIDIA GPU (an H100 or H200 was planned): install the CUDA build "
        "of TensorFlow, `pip install 'tensorflow[and-cuda]==2.21.*'`, then `pip install -e "
        "'.[examples,test]'`, and put a prepared tfds `binarized_mnist` under a data directory "
        "(tfds cannot download it offline). Each command below stays under 10 minutes, all "
        "together about 30 minutes of GPU time; each writes its results here as it finishes, "
        "so the page can be committed after any of them:",
        "",
        "```",
        *runbook,
        "```",
        "",
        "- `env,placement,tests`: versions and matmul peaks; every training and sampling "
        "step with soft device placement off (an op without a GPU kernel fails the stage); "
        "the test suite with the GPU visible, stopped after `--tests_timeout` seconds (the "
        "figures below say whether it finished).",
        "- `dense,conv,sampling`: bench_dense and bench_conv at the paper's sizes (fp32: the "
        "IAF networks stay float32 under mixed precision), bench_sampling; `cifar`: the CIFAR "
        "ResNet VAE's training step in fp32, mixed_float16 and mixed_bfloat16, without and "
        "with XLA. bench_dense's GFLOP/s are against its own 2048^2 fp32 matmul, timed with a "
        "copy of the result to the host; the `env` peaks chain 10 matmuls with no copy.",
        "- `mnist_train` (twice, 7 minutes each; the second resumes from the first's "
        "checkpoint) and `mnist_eval`: static MNIST, IAF depth 8 with MADEs of 1920 x 2, batch "
        "100; test log p(x) with k = 1,000. The paper's -79.88 nats needs far more training "
        "than these 14 minutes; more `mnist_train` runs continue it.",
        "- `python -m bench.gpu_suite --smoke` runs every stage but `tests` at toy sizes on the "
        "CPU (tests/test_gpu_suite.py runs it in CI); it writes to `--work_dir`, not here.",
        "",
        *MULTI_WORKER,
        "",
        "## Results",
        "",
    ]
    if not stages:
        lines.append("None yet.")
    for name in stage_order:
        if name in stages:
            lines += [_stage_section(name, stages[name]), ""]
    if data.get("command_lines"):
        lines += ["## Commands run", "", "```", *data["command_lines"], "```"]
    return "\n".join(lines).rstrip() + "\n"
