"""Variational inference on inference_gym targets: tfp_iaf's IAF surrogate against TFP's own.

Every method is fitted to every target with the same optimiser, steps, Monte Carlo sample size and
seeds (`tfp.vi.monte_carlo_variational_loss`, reparameterised reverse KL, jit-compiled): TFP's
surrogates by a step that applies every update, as `tfp.vi.fit_surrogate_posterior` does, ours
by `tfp_iaf.vi.fit_surrogate_posterior`, as a user fits them. The targets: the ten of `TARGETS`,
every inference_gym 0.0.5 target of these kinds that builds offline; the two of `BIG_TARGETS`
(501 and 2,519 dimensions) with 3 seeds and both IAFs `--big_hidden_units` wide. Methods:

- `mean_field`, `full_rank`: `tfp.experimental.vi.build_affine_surrogate_posterior`, 'diag' and
  'tril';
- `asvi`: `tfp.experimental.vi.build_asvi_surrogate_posterior` of the model's prior (targets with
  one);
- `tfp_iaf_route`: `tfp.experimental.vi.build_split_flow_surrogate_posterior` with `--num_steps`
  steps `tfb.Invert(tfb.MaskedAutoregressiveFlow(tfb.AutoregressiveNetwork(...)))`, the order
  reversed between steps, hidden units and activation as ours;
- `tfp_iaf`: `tfp_iaf.vi.surrogate_for(model)` with the same steps and hidden units; the
  `VARIANTS` the same with one or two defaults changed (the ablation).

Per target and method, over `--seeds` seeds (mean +- standard error unless said):

- the ELBO from `--eval_samples` samples;
- the largest standardised mean error `|mean - gt_mean| / gt_sd`, and the largest
  `|sd / gt_sd - 1|`, over every scalar of inference_gym's ground truth (constrained space);
- the importance-sampled log-evidence `log mean(p / q)`;
- the Pareto k-hat of the importance weights (median over seeds, a failed run counted +inf);
- failed runs: a fit stopped as diverged, a non-finite ELBO or a NaN k-hat.

and a summary: per target, tfp_iaf's mean ELBO minus the best TFP surrogate's (among those
finite in every seed), tfp_iaf's finite runs and its k-hat.
- milliseconds per training step (median over seeds, after the first `WARMUP` steps).

    python -m bench.bench_vi                       # the table of docs/benchmarks_vi.md
    python -m bench.bench_vi --seeds=1 --steps=200 --targets=EightSchools   # a quick look

Results are kept per (target, method, seed) in `--work_dir`, so a rerun resumes.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags
from inference_gym import using_tensorflow as gym

from bench.report import date_and_machine, load_run, save_run
from tfp_iaf import vi
from tfp_iaf.vi import structure

tfb, tfd = tfp.bijectors, tfp.distributions

TARGETS = [
    "EightSchools",
    "NealsFunnel",
    "BrownianMotionMissingMiddleObservations",
    "BrownianMotionUnknownScalesMissingMiddleObservations",
    "IllConditionedGaussian",
    "ConvectionLorenzBridge",
    "ConvectionLorenzBridgeUnknownScales",
    "SyntheticItemResponseTheory",
    "StochasticVolatilitySP500",
    "SyntheticPlasmaSpectroscopy",
]
# Hundreds to thousands of dimensions: fewer seeds and a narrower network (`--big_hidden_units`,
# the same for both IAFs), so the suite stays within hours on 2 cores.
BIG_TARGETS = {"SyntheticItemResponseTheory": 3, "StochasticVolatilitySP500": 3}
# The same model (and ground truth) in another of inference_gym's forms: StochasticVolatilitySP500
# draws its 2,516 log-volatilities as 2,516 scalar parts by default, a graph that XLA took over
# 17 GiB and 12 minutes to compile here before it was stopped (for any surrogate: the model's
# graph is the same); as a Markov chain they are one vector part.
TARGET_KWARGS = {"StochasticVolatilitySP500": {"use_markov_chain": True}}
TFP_METHODS = ["mean_field", "full_rank", "asvi", "tfp_iaf_route"]
METHODS = [*TFP_METHODS, "tfp_iaf"]
# The spline inside the affine update, `y = sigma (s(x) + a)` (docs/benchmarks_flows.md).
SPLINE_AFFINE = {
    "kind": "composed",
    "parts": ["spline", {"kind": "affine", "log_scale_bound": None, "scaled_shift": True}],
}
# tfp_iaf with one default changed, for the ablation in docs/benchmarks_vi.md.
VARIANTS = {
    "tfp_iaf_bounded": {"log_scale_bound": 5.0},
    "tfp_iaf_no_affine": {"affine": None},
    "tfp_iaf_standard": {"parametrization": "standard"},
    "tfp_iaf_scale_1": {"initial_scale": 1.0},
    "tfp_iaf_standard_scale_1": {"parametrization": "standard", "initial_scale": 1.0},
    # The neural-spline step in place of the affine one (docs/benchmarks_flows.md).
    "tfp_iaf_spline": {"transform": "spline"},
    # The spline inside the affine step: `y = sigma (s(x) + a)`.
    "tfp_iaf_spline_affine": {"transform": SPLINE_AFFINE},
    # The fit's options (`"fit"`): the variables left at the last step's values, as TFP's fit
    # leaves them (the default before 2026-12-08), or averaged over another tail.
    "tfp_iaf_last_iterate": {"fit": {"average_last": 0.0}},
    "tfp_iaf_spline_affine_last_iterate": {
        "transform": SPLINE_AFFINE,
        "fit": {"average_last": 0.0},
    },
    "tfp_iaf_average_10": {"fit": {"average_last": 0.1}},
    "tfp_iaf_average_25": {"fit": {"average_last": 0.25}},
    "tfp_iaf_average_50": {"fit": {"average_last": 0.5}},
    # Before the averaging: the diagonal step alone, and TFP's initial scale.
    "tfp_iaf_last_iterate_affine_only": {"num_steps": 0, "fit": {"average_last": 0.0}},
    "tfp_iaf_last_iterate_scale_001": {"initial_scale": 0.01, "fit": {"average_last": 0.0}},
}
WARMUP = 20

FLAGS = flags.FLAGS
flags.DEFINE_list("targets", TARGETS, "inference_gym targets.")
flags.DEFINE_list("methods", METHODS, "Surrogates to fit.")
flags.DEFINE_integer("seeds", 5, "Seeds per (target, method).")
flags.DEFINE_integer("steps", 2000, "Training steps.")
flags.DEFINE_integer("sample_size", 16, "Monte Carlo samples per step.")
flags.DEFINE_float("learning_rate", 1e-2, "Adam's (initial) learning rate.")
flags.DEFINE_enum(
    "schedule", "constant", ["constant", "cosine"], "Learning rate: constant, or cosine to 0."
)
flags.DEFINE_integer("num_steps", 2, "Flow steps of both IAF surrogates.")
flags.DEFINE_integer("hidden_units", 0, "Hidden width of both IAFs' 2-layer MADEs; 0: ours.")
flags.DEFINE_integer(
    "big_hidden_units", 256, "Hidden width of both IAFs on the big targets (BIG_TARGETS)."
)
flags.DEFINE_integer("eval_samples", 4000, "Samples for the ELBO, errors and k-hat.")
flags.DEFINE_string("work_dir", "runs/bench_vi", "Per-run results (resumable).")
flags.DEFINE_integer(
    "backtrack_after", 5, "Our fit's `backtrack_after`; 0: None (skip only, no backtracking)."
)
flags.DEFINE_bool(
    "report_only", False, "Print the tables of the runs in `--work_dir`; run nothing."
)
flags.DEFINE_bool(
    "timing", False, "Only time the training steps of TFP's IAF route and ours, interleaved."
)
flags.DEFINE_integer("timing_blocks", 21, "With --timing: timed blocks per method.")
flags.DEFINE_list(
    "timing_methods",
    ["tfp_iaf"],
    "With --timing: the methods timed against TFP's IAF route (e.g. tfp_iaf,tfp_iaf_no_affine).",
)
flags.DEFINE_string("machine", "2-core x86_64 CPU container, no GPU", "Machine description.")


def make_target(target: str):
    """The inference_gym model `target`, in the form of `TARGET_KWARGS`."""
    return getattr(gym.targets, target)(**TARGET_KWARGS.get(target, {}))


def constraining(model) -> tfb.Bijector:
    """The model's event-space bijector as one (structured) bijector."""
    shapes = structure.as_shapes(model.event_shape)
    return structure.constraining_bijector(model.default_event_space_bijector, shapes)


def unconstrained_size(model) -> int:
    return vi.flat_to_event(model.event_shape, model.default_event_space_bijector)[1]


def hidden_width(model) -> int:
    if type(model).__name__ in BIG_TARGETS:
        return FLAGS.big_hidden_units
    return FLAGS.hidden_units or max(32, 2 * unconstrained_size(model))


def seeds(target: str) -> int:
    return min(FLAGS.seeds, BIG_TARGETS.get(target, FLAGS.seeds))


def build(method: str, model, seed: int):
    """The surrogate of `method` for `model`, initialised from `seed`; None if not applicable."""
    bijector, shape = constraining(model), model.event_shape
    width = hidden_width(model)
    stateless = tf.constant([seed, 0], tf.int32)
    if method in ("mean_field", "full_rank"):
        # On the flat unconstrained vector: over a structure of 32 scalars (BrownianMotion)
        # 'tril' builds a 32 x 32 grid of linear operators, which XLA takes minutes to compile.
        to_event, size = vi.flat_to_event(shape, bijector)
        flat = tfp.experimental.vi.build_affine_surrogate_posterior(
            [size], operators="diag" if method == "mean_field" else "tril", seed=stateless
        )
        return tfd.TransformedDistribution(flat, to_event)
    if method == "asvi":
        if not hasattr(model, "prior_distribution"):
            return None
        return tfp.experimental.vi.build_asvi_surrogate_posterior(
            model.prior_distribution(), seed=stateless
        )
    if method == "tfp_iaf_route":
        steps = []
        for t in range(FLAGS.num_steps):
            if t:
                steps.append(tfb.Invert(tfb.Permute(list(range(unconstrained_size(model)))[::-1])))
            network = tfb.AutoregressiveNetwork(
                params=2, hidden_units=[width, width], activation="elu"
            )
            steps.append(tfb.Invert(tfb.MaskedAutoregressiveFlow(network)))
        tf.random.set_seed(seed)  # the Keras network's initial weights
        q = tfp.experimental.vi.build_split_flow_surrogate_posterior(
            shape, tfb.Chain(steps[::-1]), constraining_bijector=bijector
        )
        q.sample(seed=stateless)  # builds the networks
        return q
    if is_ours(method):
        kwargs = dict(num_steps=FLAGS.num_steps, hidden_units=[width, width], seed=seed)
        kwargs.update({k: v for k, v in VARIANTS.get(method, {}).items() if k != "fit"})
        return vi.surrogate_for(model, **kwargs)
    raise ValueError(f"unknown method {method!r}")


def training_step(model, q, method: str, seed: int):
    """The jit-compiled training step of `q` (its argument: the step's stateless seed)."""
    # TFP calls a target with a structured sample's parts as arguments; the model takes one.
    target = vi.as_tfp_target(model.unnormalized_log_prob, q.dtype)
    q.sample(seed=tf.constant([seed, 1]))  # creates every variable
    variables = q.trainable_variables
    optimizer = tf.optimizers.Adam(learning_rate())

    # ASVI's joint distributions draw in a vectorized loop that TFP runs one sample at a time
    # under stateless seeds, and XLA crashes on it: it runs as a graph with stateful sampling.
    stateless = method != "asvi"
    tf.random.set_seed(seed)

    @tf.function(jit_compile=stateless)
    def step(step_seed):
        with tf.GradientTape() as tape:
            loss = tfp.vi.monte_carlo_variational_loss(
                target, q, sample_size=FLAGS.sample_size, seed=step_seed if stateless else None
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    return step


def is_ours(method: str) -> bool:
    return method == "tfp_iaf" or method in VARIANTS


def learning_rate():
    if FLAGS.schedule == "cosine":
        return tf.optimizers.schedules.CosineDecay(FLAGS.learning_rate, FLAGS.steps)
    return FLAGS.learning_rate


def fit(model, q, method: str, seed: int) -> tuple[float, bool]:
    """Trains `q`; returns seconds per step and whether the fit stopped as diverged.

    TFP's surrogates train as `tfp.vi.fit_surrogate_posterior` trains them (every step applied),
    timed after the first `WARMUP` steps; ours through `tfp_iaf.vi.fit_surrogate_posterior`, as a
    user fits them (non-finite steps skipped, `FitDiverged` after too many in a row), timed over
    the whole call, its tracing and compilation included.
    """
    if is_ours(method):
        start = time.perf_counter()
        try:
            vi.fit_surrogate_posterior(
                model.unnormalized_log_prob,
                q,
                tf.optimizers.Adam(learning_rate()),
                FLAGS.steps,
                sample_size=FLAGS.sample_size,
                seed=tf.constant([seed, 1000]),
                jit_compile=True,
                backtrack_after=FLAGS.backtrack_after or None,
                **VARIANTS.get(method, {}).get("fit", {}),
            )
        except vi.FitDiverged as error:
            print(f"{method} seed {seed}: {error}", flush=True)
            return (time.perf_counter() - start) / FLAGS.steps, True
        return (time.perf_counter() - start) / FLAGS.steps, False
    step = training_step(model, q, method, seed)
    for i in range(FLAGS.steps):
        if i == WARMUP:
            start = time.perf_counter()
        loss = step(tf.constant([seed, 1000 + i]))
    loss.numpy()
    return (time.perf_counter() - start) / (FLAGS.steps - WARMUP), False


def interleaved_times(target: str, methods: list[str], steps: int = 100) -> dict:
    """Per-step times of `methods` on `target`, timed in one process: `--timing_blocks` blocks
    of `steps` steps each, alternating between the methods (after one untimed block each).

    Returns:
      `{"wall": [[ms per step per block] per method], "cpu": [...]}`: wall-clock and process
      CPU milliseconds per step (CPU time counts every thread, and is not inflated by other
      processes waiting for the same cores).
    """
    model = make_target(target)
    runs = []
    for method in methods:
        step = training_step(model, build(method, model, 0), method, 0)
        runs.append(lambda step=step: [step(tf.constant([0, i])) for i in range(steps)][-1])
    for run in runs:
        run().numpy()
    wall, cpu = [[] for _ in runs], [[] for _ in runs]
    for _ in range(FLAGS.timing_blocks):
        for run, w, c in zip(runs, wall, cpu, strict=True):
            start, start_cpu = time.perf_counter(), time.process_time()
            run().numpy()
            w.append(1e3 * (time.perf_counter() - start) / steps)
            c.append(1e3 * (time.process_time() - start_cpu) / steps)
    return {"wall": wall, "cpu": cpu}


def paired_ratio(ours: list[float], route: list[float]) -> str:
    """Median and quartiles of the block-by-block ratios ours / route."""
    q1, median, q3 = np.percentile(np.divide(ours, route), [25, 50, 75])
    return f"{median:.2f}x [{q1:.2f}, {q3:.2f}]"


def flat(structure) -> np.ndarray:
    return np.concatenate([np.reshape(np.asarray(a), [-1]) for a in tf.nest.flatten(structure)])


def evaluate(model, q, seed: int) -> dict:
    """ELBO, standardised errors (NaN without ground truth), IS evidence and k-hat of `q`.

    A diverged fit (a non-finite log-weight: NaN parameters or samples) gives NaN everywhere,
    and `table` counts it as a failure.
    """
    z, log_w = vi.importance_weights(
        model.unnormalized_log_prob, q, FLAGS.eval_samples, seed=tf.constant([seed, 2])
    )
    log_w = np.asarray(log_w, np.float64)
    if not np.all(np.isfinite(log_w)):
        return dict.fromkeys(["elbo", "mean_error", "sd_error", "log_evidence", "khat"], np.nan)
    mean_error = sd_error = np.nan
    identity = model.sample_transformations["identity"]
    # Some targets (NonIdentifiableQuarticMeasurementModel) have a mean but no spread: no errors.
    if identity.ground_truth_standard_deviation is not None:
        values = tf.nest.map_structure(np.asarray, identity(z))
        mean = flat(tf.nest.map_structure(lambda a: a.mean(0), values))
        sd = flat(tf.nest.map_structure(lambda a: a.std(0), values))
        gt_mean = flat(identity.ground_truth_mean)
        gt_sd = flat(identity.ground_truth_standard_deviation)
        mean_error = float(np.max(np.abs(mean - gt_mean) / gt_sd))
        sd_error = float(np.max(np.abs(sd / gt_sd - 1.0)))
    return {
        "elbo": float(np.mean(log_w)),
        "mean_error": mean_error,
        "sd_error": sd_error,
        "log_evidence": vi.log_evidence(log_w),
        "khat": vi.pareto_khat(log_w),
    }


def run_one(target: str, method: str, seed: int) -> dict | None:
    run = f"{target}-{method}-{FLAGS.steps}-{FLAGS.schedule}-{seed}"
    path = os.path.join(FLAGS.work_dir, f"{run}.json")
    saved = load_run(path)
    if saved is not None or FLAGS.report_only:
        return saved
    model = make_target(target)
    q = build(method, model, seed)
    if q is None:
        return None
    seconds, diverged = fit(model, q, method, seed)
    result = {"ms_per_step": 1e3 * seconds, "diverged": diverged, **evaluate(model, q, seed)}
    save_run(path, result)
    print(f"{target} {method} seed {seed}: {result}", flush=True)
    return result


def failed(run: dict) -> bool:
    """A run fails if its fit stopped as diverged, or its ELBO or k-hat is not a number (a k-hat
    of +inf is a verdict: a bad fit, not a failed one)."""
    return run.get("diverged", False) or not np.isfinite(run["elbo"]) or np.isnan(run["khat"])


def mean_se(values) -> str:
    """Mean +- standard error over the finite values (failed runs are counted, not averaged)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return "-"
    if v.size == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} +- {v.std(ddof=1) / np.sqrt(v.size):.2f}"


def table(target: str, results: dict) -> list[str]:
    rows = [
        f"### {target}",
        "",
        "| method | ELBO | max std. mean error | max abs(sd / gt_sd - 1) | log-evidence (IS) "
        "| k-hat (median) | ms / step | time vs TFP IAF route | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ref = results.get("tfp_iaf_route")
    ref_ms = np.median([r["ms_per_step"] for r in ref]) if ref else None
    for method, runs in results.items():
        ms = float(np.median([r["ms_per_step"] for r in runs]))
        ratio = f"{ms / ref_ms:.2f}x" if ref_ms else "-"
        rows.append(
            f"| {method} | {mean_se([r['elbo'] for r in runs])} "
            f"| {mean_se([r['mean_error'] for r in runs])} "
            f"| {mean_se([r['sd_error'] for r in runs])} "
            f"| {mean_se([r['log_evidence'] for r in runs])} "
            f"| {khat_median(runs)} | {ms:.2f} | {ratio} "
            f"| {sum(map(failed, runs))} of {len(runs)} |"
        )
    return rows + [""]


def khat_median(runs: list[dict]) -> str:
    """The median k-hat over seeds, a failed run counted as +inf (the worst verdict)."""
    khats = [np.inf if failed(r) else r["khat"] for r in runs]
    return f"{np.median(khats):.2f}"


def elbo_mean(runs: list[dict]) -> float:
    """The mean ELBO over seeds; NaN if any run failed (a mean that hides failures is no mean)."""
    if any(map(failed, runs)):
        return np.nan
    return float(np.mean([r["elbo"] for r in runs]))


def summary(all_results: dict) -> list[str]:
    """One row per target: tfp_iaf against the best TFP surrogate whose every seed is finite."""
    rows = [
        "### Summary",
        "",
        "| target | tfp_iaf ELBO - best TFP surrogate's | best TFP surrogate "
        "| tfp_iaf finite runs | tfp_iaf k-hat (median) |",
        "|---|---:|---|---:|---:|",
    ]
    for target, results in all_results.items():
        ours = results.get("tfp_iaf")
        if ours is None:
            continue
        tfp_means = {m: elbo_mean(results[m]) for m in TFP_METHODS if m in results}
        finite = {m: v for m, v in tfp_means.items() if np.isfinite(v)}
        best = max(finite, key=finite.get) if finite else None
        gap = elbo_mean(ours) - finite[best] if best else np.nan
        if best is not None:
            gap_text = f"{gap:+.2f}"
        else:
            gap_text = "no TFP surrogate finite" if tfp_means else "no TFP surrogate run"
        rows.append(
            f"| {target} | {gap_text} | {best or '-'} "
            f"| {len(ours) - sum(map(failed, ours))} of {len(ours)} | {khat_median(ours)} |"
        )
    return rows + [""]


def timing_table() -> list[str]:
    others = FLAGS.timing_methods
    rows = [
        "Interleaved timing: " + date_and_machine(FLAGS.machine),
        f"{FLAGS.timing_blocks} blocks of 100 steps per method, alternating; medians over blocks; "
        "ratio: median [quartiles] of the block-by-block ratios method / route",
        "",
        "| target | route wall ms / step | "
        + " | ".join(f"{m} wall ms / step | wall ratio | CPU ratio" for m in others)
        + " |",
        "|---|---:|" + "---:|---:|---:|" * len(others),
    ]
    for target in FLAGS.targets:
        times = interleaved_times(target, ["tfp_iaf_route", *others])
        (route_wall, *wall), (route_cpu, *cpu) = times["wall"], times["cpu"]
        cells = [
            f"{np.median(w):.3f} | {paired_ratio(w, route_wall)} | {paired_ratio(c, route_cpu)}"
            for w, c in zip(wall, cpu, strict=True)
        ]
        rows.append(f"| {target} | {np.median(route_wall):.3f} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def main(argv):
    del argv
    if FLAGS.timing:
        print("\n".join(timing_table()))
        return
    lines = [
        "VI benchmark: " + date_and_machine(FLAGS.machine),
        f"TF {tf.__version__}, TFP {tfp.__version__}; Adam({FLAGS.learning_rate}, "
        f"{FLAGS.schedule}), "
        f"{FLAGS.steps} steps, {FLAGS.sample_size} samples per step, {FLAGS.seeds} seeds "
        f"({', '.join(f'{t}: {n}' for t, n in BIG_TARGETS.items())}), "
        f"{FLAGS.num_steps} flow steps, evaluation on {FLAGS.eval_samples} samples",
        "",
    ]
    all_results = {}
    for target in FLAGS.targets:
        results = {}
        for method in FLAGS.methods:
            runs = [run_one(target, method, seed) for seed in range(seeds(target))]
            runs = [r for r in runs if r is not None]
            if runs:
                results[method] = runs
        all_results[target] = results
        lines += table(target, results)
    print("\n".join(lines + summary(all_results)))


if __name__ == "__main__":
    app.run(main)
