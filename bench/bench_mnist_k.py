r"""How log p(x) tightens with the number of importance samples k, up to 10,000, on one model.

Takes a run that `bench/bench_mnist.py` finished (its `--work_dir/CONFIG/seedS`), copies it, and
evaluates the copy again with `examples/mnist_vae.py` itself (a finished run resumes with no
training left, then evaluates) for every k in `--ks`, on the first `--num_eval_examples` test
images, in chunks of `--importance_chunk` samples. Prints one table row per k: log p(x), the
ELBO (mean of the k log weights), the gap, and the evaluation time.

    python -m bench.bench_mnist_k --run_dir=/tmp/bench_mnist/iaf8/seed0 \
        --data_dir=../shared/tfds --ks=1,10,100,1000,10000 --num_eval_examples=20
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys

from absl import app, flags

from bench import report

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "A finished run of bench_mnist.py.", required=True)
flags.DEFINE_string(
    "data_dir", None, "tfds data directory holding binarized_mnist.", required=True
)
flags.DEFINE_list("ks", ["1", "10", "100", "1000", "10000"], "Numbers of importance samples.")
flags.DEFINE_integer("num_eval_examples", 20, "Evaluate on the first N test images.")
flags.DEFINE_integer("importance_chunk", 500, "Importance samples per pass (memory).")
flags.DEFINE_integer("eval_batch_size", 10, "Test images per pass.")
flags.DEFINE_string("work_dir", "/tmp/bench_mnist_k", "Where the copy of the run is evaluated.")
flags.DEFINE_string("machine", "2-core CPU container, no GPU", "Machine, for the report.")

EXAMPLE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "examples", "mnist_vae.py"
)
# The run's flags that define its model and data; everything else is the evaluation's.
MODEL_FLAGS = ("posterior", "iaf_depth", "iaf_width", "gated", "context_size", "planar_depth")


def evaluate(config: dict, k: int, model_dir: str) -> dict:
    flags_ = [f"--{n}={config[n]}" for n in MODEL_FLAGS if n in config and config[n] is not None]
    args = [
        EXAMPLE,
        *flags_,
        "--dataset=binarized_mnist",
        f"--data_dir={FLAGS.data_dir}",
        f"--model_dir={model_dir}",
        f"--epochs={config['epochs']}",
        f"--batch_size={config['batch_size']}",
        f"--ema_momentum={config['ema_momentum']}",
        f"--seed={config['seed']}",
        f"--num_importance_samples={k}",
        f"--importance_chunk={min(k, FLAGS.importance_chunk)}",
        f"--eval_batch_size={FLAGS.eval_batch_size}",
        f"--num_eval_examples={FLAGS.num_eval_examples}",
    ]
    report.run_logged(args, os.path.join(FLAGS.work_dir, f"k{k}.log"), check=True)
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    if results["steps"] != results["resumed_from_step"]:
        raise RuntimeError(f"{FLAGS.run_dir} was not finished: the copy trained")
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with open(os.path.join(FLAGS.run_dir, "results.json")) as f:
        config = json.load(f)["config"]
    shutil.rmtree(FLAGS.work_dir, ignore_errors=True)
    model_dir = os.path.join(FLAGS.work_dir, "run")
    shutil.copytree(FLAGS.run_dir, model_dir)
    print(f"- {report.date_and_machine(FLAGS.machine)}.")
    print(f"- Command: `python {shlex.join(sys.argv)}`")
    print(
        f"- Model: {FLAGS.run_dir} ({config['posterior']}, {config['epochs']} epoch(s)); "
        f"the first {FLAGS.num_eval_examples} test images, Polyak-averaged weights.\n"
    )
    print("| k | log p(x) (nats) | ELBO (nats) | log p(x) - ELBO | eval time (s) |")
    print("|---:|---:|---:|---:|---:|")
    for k in (int(k) for k in FLAGS.ks):
        r = evaluate(config, k, model_dir)
        gap = r["test_log_px"] - r["test_elbo"]
        print(
            f"| {k} | {r['test_log_px']:.2f} | {r['test_elbo']:.2f} | {gap:.2f} | "
            f"{r['eval_seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
