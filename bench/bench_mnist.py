r"""Benchmark: MNIST VAE posteriors at an equal training budget, several seeds per row.

Trains `examples/mnist_vae.py` once per (configuration, seed), each in a fresh process, on the
statically binarized MNIST of tfds, and writes a Markdown table (mean +- sd over seeds of the
test ELBO and the importance-sampled test log p(x), time per epoch, peak resident memory, runs
that diverged) with the date, machine and command, to `--output`.

Resumable run by run: every finished run leaves `row.json` in `--work_dir/CONFIG/seedS`, and a
later invocation with the same budget skips it; a run killed mid-training resumes from its
checkpoint. So a long table can be finished in several sittings, and `--render_only` rewrites
the page from whatever has finished:

    python -m bench.bench_mnist --data_dir=../shared/tfds --output=docs/benchmarks_mnist.md

Configurations: `diag`; `planarN` (N planar steps, amortised from the encoder's context);
`iafN` (N affine IAF steps) and `iafNg` (N gated steps), MADEs of width `--iaf_width`. A run
that diverges (the example stops at the first non-finite loss) is counted, not fatal; any other
failure stops the benchmark. The data directory must hold a prepared `binarized_mnist`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import statistics
import sys

from absl import app, flags, logging

from bench import report as report_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "tfds data directory holding binarized_mnist.")
flags.DEFINE_list(
    "configs",
    ["diag", "planar8", "iaf2", "iaf4", "iaf8", "iaf2g", "iaf4g", "iaf8g"],
    "diag, planarN, iafN (affine) or iafNg (gated).",
)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: one run of every configuration per seed.")
flags.DEFINE_integer("epochs", 1, "Training epochs of every run (the equal budget).")
flags.DEFINE_integer("iaf_width", 320, "MADE hidden width.")
flags.DEFINE_integer("batch_size", 100, "Training batch size.")
flags.DEFINE_float("ema_momentum", 0.995, "Polyak averaging decay (short runs want less lag).")
flags.DEFINE_integer("num_importance_samples", 128, "k of the importance-sampled log p(x).")
flags.DEFINE_integer("num_eval_examples", 1000, "Evaluate on the first N test images.")
flags.DEFINE_string("work_dir", "/tmp/bench_mnist", "Run directories (kept: they resume).")
flags.DEFINE_string("output", None, "Markdown file to write the table to.")
flags.DEFINE_string("machine", "2-core CPU container, no GPU", "Machine, for the report.")
flags.DEFINE_bool("render_only", False, "Only rewrite the table from the finished runs.")

EXAMPLE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "examples", "mnist_vae.py"
)
# The flags every run shares: a work_dir holds runs of one budget only.
BUDGET_FLAGS = (
    "epochs",
    "iaf_width",
    "batch_size",
    "ema_momentum",
    "num_importance_samples",
    "num_eval_examples",
)
_CONFIG = re.compile(r"^(diag)$|^(planar|iaf)([1-9][0-9]*)(g?)$")


@dataclasses.dataclass(frozen=True)
class Posterior:
    """One configuration: the example's flags and the table's label."""

    name: str
    flags: tuple[str, ...]
    label: str


def parse_config(name: str, iaf_width: int = 320) -> Posterior:
    """The `Posterior` of a configuration name.

    Raises:
      ValueError: a name that is not `diag`, `planarN`, `iafN` or `iafNg` (N >= 1).
    """
    match = _CONFIG.match(name)
    if not match or (match.group(2) == "planar" and match.group(4)):
        raise ValueError(
            f"`configs` entries must be 'diag', 'planarN', 'iafN' or 'iafNg' (N >= 1); "
            f"got {name!r}"
        )
    if match.group(1):
        return Posterior(name, ("--posterior=diag",), "diagonal Gaussian")
    kind, depth, gated = match.group(2), int(match.group(3)), bool(match.group(4))
    if kind == "planar":
        return Posterior(
            name, ("--posterior=planar", f"--planar_depth={depth}"), f"planar flow, {depth} steps"
        )
    flags_ = ("--posterior=iaf", f"--iaf_depth={depth}", f"--iaf_width={iaf_width}")
    flags_ += ("--gated",) if gated else ("--nogated",)
    update = "gated" if gated else "affine"
    return Posterior(name, flags_, f"IAF, {depth} {update} steps, width {iaf_width}")


def budget() -> dict:
    return {name: FLAGS[name].value for name in BUDGET_FLAGS}


def check_work_dir() -> None:
    """Records the budget in `work_dir/budget.json`, or checks it against the recorded one.

    Raises:
      ValueError: `work_dir` holds runs of another budget.
    """
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    path = os.path.join(FLAGS.work_dir, "budget.json")
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)
        if recorded != budget():
            raise ValueError(
                f"`work_dir` {FLAGS.work_dir!r} holds runs with the budget {recorded}; got "
                f"{budget()}. Use another --work_dir, or the same flags to resume."
            )
    else:
        with open(path, "w") as f:
            json.dump(budget(), f, indent=2)


def run_dir(name: str, seed: int) -> str:
    return os.path.join(FLAGS.work_dir, name, f"seed{seed}")


def run_one(posterior: Posterior, seed: int) -> dict:
    """Trains and evaluates one run in a fresh process (resuming it), unless it finished.

    Returns:
      The run's `row.json`: `{"diverged": False, "results": results.json}`, or
      `{"diverged": True, "message": ...}`.
    """
    model_dir = run_dir(posterior.name, seed)
    row_path = os.path.join(model_dir, "row.json")
    if os.path.exists(row_path):
        with open(row_path) as f:
            return json.load(f)
    os.makedirs(model_dir, exist_ok=True)
    args = [
        EXAMPLE,
        *posterior.flags,
        "--dataset=binarized_mnist",
        f"--data_dir={FLAGS.data_dir}",
        f"--model_dir={model_dir}",
        f"--epochs={FLAGS.epochs}",
        f"--batch_size={FLAGS.batch_size}",
        f"--ema_momentum={FLAGS.ema_momentum}",
        f"--num_importance_samples={FLAGS.num_importance_samples}",
        f"--num_eval_examples={FLAGS.num_eval_examples}",
        f"--seed={seed}",
    ]
    log_path = os.path.join(model_dir, "log.txt")
    done = report_lib.run_logged(args, log_path)
    with open(log_path) as f:
        diverged = [line for line in f if "Training diverged" in line]
    if done.returncode == 0:
        with open(os.path.join(model_dir, "results.json")) as f:
            row = {"diverged": False, "results": json.load(f)}
    elif diverged:
        row = {"diverged": True, "message": diverged[-1].strip()}
    else:
        raise RuntimeError(
            f"{shlex.join(done.args)} failed (exit {done.returncode}); see {log_path}"
        )
    with open(row_path, "w") as f:
        json.dump(row, f, indent=2)
    logging.info("%s seed %d: %s", posterior.name, seed, row.get("message", "finished"))
    return row


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(rows: list[tuple[Posterior, list[dict]]]) -> str:
    """The Markdown table: one line per configuration, statistics over its finished seeds."""
    lines = [
        "| posterior | seeds | test ELBO (nats) | test log p(x) (nats) | time / epoch (s) | "
        "peak RSS (MiB) | diverged |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for posterior, runs in rows:
        finished = [r["results"] for r in runs if not r["diverged"]]
        per_epoch = [r["train_seconds"] / (r["steps"] / r["steps_per_epoch"]) for r in finished]
        rss = f"{max(r['peak_rss_mib'] for r in finished):.0f}" if finished else "-"
        lines.append(
            f"| {posterior.label} | {len(runs)} | "
            f"{_mean_sd([r['test_elbo'] for r in finished])} | "
            f"{_mean_sd([r['test_log_px'] for r in finished])} | "
            f"{f'{statistics.mean(per_epoch):.0f}' if per_epoch else '-'} | {rss} | "
            f"{sum(r['diverged'] for r in runs)} |"
        )
    return "\n".join(lines)


def report(rows: list[tuple[Posterior, list[dict]]], command: str, missing: list[str]) -> str:
    b = budget()
    cost = 10_000 / b["num_eval_examples"] * 1_000 / b["num_importance_samples"]
    steps = b["epochs"] * 50_000 // b["batch_size"]
    pending = (
        f"\nNot finished yet (rerun the command to resume): {', '.join(missing)}.\n"
        if missing
        else ""
    )
    return f"""## MNIST VAE: posteriors at an equal budget, several seeds (static binarized MNIST)

- {report_lib.date_and_machine(FLAGS.machine)}; TensorFlow on CPU.
- Command: `{command}`
- Budget, the same for every run: {b["epochs"]} epoch(s) of the 50,000 training images, batch
  {b["batch_size"]} ({steps} Adamax steps, learning rate 0.002, Polyak averaging
  {b["ema_momentum"]}). The example's model: ResNet encoder/decoder, 32-dim latent, context 64;
  IAF steps on MADEs of two hidden layers; planar steps' parameters amortised from the context.
- Evaluation with the averaged weights on the first {b["num_eval_examples"]} of the 10,000 test
  images (a subset: the full set at k = 1,000 costs {cost:.0f} times as much per run): ELBO (mean
  of the log weights) and log p(x) by importance sampling with k = {b["num_importance_samples"]}.
- Each row: mean ± sample sd over its seeds (`seeds` counts the runs, `diverged` those that
  stopped at a non-finite loss and so have no results). Time per epoch is the training wall
  time (graph tracing included) on a machine shared with other jobs, so it varies by tens of
  percent; peak RSS is the largest over the row's runs.
{pending}
{table(rows)}

For scale: the paper reports -79.10 nats (log p(x)) for its best IAF on dynamically binarized
MNIST (depth 8, width 1920) and -79.88 nats on this static binarization, with models trained to
convergence on GPUs, far beyond this budget. The rows above compare posteriors at equal cost;
they are not converged results and not comparable in absolute value.
"""


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    posteriors = [parse_config(name, FLAGS.iaf_width) for name in FLAGS.configs]
    seeds = [int(s) for s in FLAGS.seeds]
    if not FLAGS.render_only and not FLAGS.data_dir:
        raise app.UsageError("--data_dir is required unless --render_only")
    check_work_dir()
    # The page names the command that ran the table, also when --render_only redraws it.
    command_path = os.path.join(FLAGS.work_dir, "command.txt")
    if not FLAGS.render_only:
        with open(command_path, "w") as f:
            f.write("python " + shlex.join(sys.argv))
    with open(command_path) if os.path.exists(command_path) else open(os.devnull) as f:
        command = f.read().strip() or "python " + shlex.join(sys.argv)
    # Seeds outermost: an interrupted table has every configuration at the same seed count.
    results = {}
    for seed in seeds:
        for posterior in posteriors:
            path = os.path.join(run_dir(posterior.name, seed), "row.json")
            if not FLAGS.render_only:
                results[posterior.name, seed] = run_one(posterior, seed)
            elif os.path.exists(path):
                with open(path) as f:
                    results[posterior.name, seed] = json.load(f)
    rows = [(p, [results[p.name, s] for s in seeds if (p.name, s) in results]) for p in posteriors]
    missing = [
        f"{p.name} seed {s}" for p in posteriors for s in seeds if (p.name, s) not in results
    ]
    text = report(rows, command, missing)
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    app.run(main)
