"""NeuTra HMC against plain NUTS on inference_gym targets with ground truth.

Per target and seed:

1. the surrogate: `tfp_iaf.vi.surrogate_for(model)` (the defaults), fitted by
   `tfp_iaf.vi.fit_surrogate_posterior` (`--fit_steps` steps, Adam `--learning_rate` with a
   cosine decay, `--sample_size` samples a step, XLA); its Pareto k-hat from 4,000 samples;
2. `neutra`: `tfp_iaf.mcmc.sample_neutra` on it, every argument but the sizes and the seed at
   its default (NUTS, dual-averaging step size);
3. `nuts`: the same call with the untrained identity surrogate, the model's event-space
   bijector over `N(0, I)`: plain NUTS in the unconstrained space, with the same code,
   adaptation and results, its chains started where NeuTra's start (the fitted surrogate's
   draws: the same seed draws the same base points), so that only the geometry differs;
4. `nuts_step_size_only`: the same without the mass matrix (`adapt_mass_matrix=False`): NUTS
   with a dual-averaging step size only, as TFP's examples wire it;
5. `neutra_poor` (`--poor_fit_steps` > 0): NeuTra on the same surrogate fitted only that many
   steps: what a fit with k-hat far above 0.7 does to it.

Reported per method, mean over seeds: gradients per chain (burn-in included), divergences among
the kept draws (all chains), the smallest ESS over every scalar of the model's value (across
chains), ESS per gradient (smallest ESS / gradients of all chains) without and with the fit's
(`fit_steps * sample_size`, counted once), the largest standardised mean error
`|mean - gt_mean| / gt_sd` and sd error `|sd / gt_sd - 1|` over every scalar, the largest R-hat,
seconds (the sampling call, compilation included; the fit's separately) and the smallest ESS
per second of both. Then per seed the ratio of NeuTra's ESS per gradient over each plain NUTS's,
without and with the fit's gradients.

    python -m bench.bench_mcmc                          # docs/benchmarks_mcmc.md's tables
    python -m bench.bench_mcmc --targets=NealsFunnel --seeds=1    # a quick look

Results are kept per (target, method, seed) in `--work_dir`, so a rerun resumes.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags
from inference_gym import using_tensorflow as gym

from bench.report import date_and_machine, load_run, save_run
from tfp_iaf import mcmc, vi

tfd = tfp.distributions

TARGETS = [
    "NealsFunnel",
    "EightSchools",
    "IllConditionedGaussian",
    "BrownianMotionMissingMiddleObservations",
    "BrownianMotionUnknownScalesMissingMiddleObservations",
]
METHODS = ["neutra", "nuts", "nuts_step_size_only", "neutra_poor"]

FLAGS = flags.FLAGS
flags.DEFINE_list("targets", TARGETS, "inference_gym targets (with ground truth).")
flags.DEFINE_integer("seeds", 3, "Seeds per target.")
flags.DEFINE_integer("num_chains", 8, "Chains.")
flags.DEFINE_integer("num_results", 500, "Kept draws per chain.")
flags.DEFINE_integer("num_burnin_steps", 500, "Burn-in steps per chain.")
flags.DEFINE_integer("fit_steps", 2000, "The surrogate's fit: steps.")
flags.DEFINE_integer("sample_size", 16, "The surrogate's fit: Monte Carlo samples per step.")
flags.DEFINE_float("learning_rate", 1e-2, "The surrogate's fit: Adam's initial learning rate.")
flags.DEFINE_integer("poor_fit_steps", 50, "neutra_poor's fit steps; 0: no neutra_poor.")
flags.DEFINE_string("work_dir", "runs/bench_mcmc", "Per-run results (resumable).")
flags.DEFINE_bool("report_only", False, "Print the tables of the runs in `--work_dir`.")
flags.DEFINE_string("machine", "2-core x86_64 CPU container, no GPU", "Machine description.")


def fitted_surrogate(model, seed: int, steps: int):
    """`surrogate_for(model)` fitted `steps` steps; returns it, its k-hat and seconds."""
    q = vi.surrogate_for(model, seed=seed)
    start = time.perf_counter()
    if steps:
        vi.fit_surrogate_posterior(
            model.unnormalized_log_prob,
            q,
            tf.optimizers.Adam(tf.optimizers.schedules.CosineDecay(FLAGS.learning_rate, steps)),
            steps,
            sample_size=FLAGS.sample_size,
            seed=tf.constant([seed, 1000]),
            jit_compile=True,
        )
    seconds = time.perf_counter() - start
    _, log_w = vi.importance_weights(
        model.unnormalized_log_prob, q, 4000, seed=tf.constant([seed, 2])
    )
    return q, vi.pareto_khat(np.asarray(log_w, np.float64)), seconds


def identity_surrogate(model):
    """The model's event-space bijector over N(0, I): NeuTra with it is plain NUTS."""
    to_event, size = vi.flat_to_event(model.event_shape, model.default_event_space_bijector)
    dtype = tf.nest.flatten(model.dtype)[0]
    base = tfd.Sample(tfd.Normal(tf.zeros([], dtype), 1.0), [size])
    return tfd.TransformedDistribution(base, to_event)


def flat_draws(states) -> np.ndarray:
    """`[draws, chains, scalars]`: every part of the model's value, flattened."""
    parts = [np.asarray(s) for s in tf.nest.flatten(states)]
    return np.concatenate([p.reshape(p.shape[0], p.shape[1], -1) for p in parts], axis=-1)


def flat(structure) -> np.ndarray:
    return np.concatenate([np.reshape(np.asarray(a), [-1]) for a in tf.nest.flatten(structure)])


def measure(model, result, khat: float, fit_seconds: float, fit_steps: int, seconds) -> dict:
    identity = model.sample_transformations["identity"]
    draws = flat_draws(identity(result.states)).reshape(-1, flat_draws(result.states).shape[-1])
    gt_mean, gt_sd = (
        flat(identity.ground_truth_mean),
        flat(identity.ground_truth_standard_deviation),
    )
    gradients = float(np.mean(result.num_gradient_evaluations))
    min_ess = float(np.min(flat(result.ess)))
    all_gradients = FLAGS.num_chains * gradients
    return {
        "gradients_per_chain": gradients,
        "divergences": int(np.sum(result.num_divergences)),
        "min_ess": min_ess,
        "ess_per_gradient": min_ess / all_gradients,
        "ess_per_gradient_with_fit": min_ess / (all_gradients + fit_steps * FLAGS.sample_size),
        "mean_error": float(np.max(np.abs(draws.mean(0) - gt_mean) / gt_sd)),
        "sd_error": float(np.max(np.abs(draws.std(0) / gt_sd - 1.0))),
        "max_rhat": float(np.max(flat(result.rhat))),
        "acceptance": float(np.mean(result.acceptance_rate)),
        "step_size": float(result.step_size),
        "seconds": seconds,
        "fit_seconds": fit_seconds,
        "fit_steps": fit_steps,
        "khat": khat,
    }


_FITTED = {}


def fitted(model, target: str, seed: int, steps: int):
    """`fitted_surrogate`, once per (target, seed, steps) in this process."""
    key = (target, seed, steps)
    if key not in _FITTED:
        _FITTED[key] = fitted_surrogate(model, seed, steps)
    return _FITTED[key]


def run_one(target: str, method: str, seed: int) -> dict | None:
    name = (
        f"{target}-{method}-{seed}-{FLAGS.num_chains}x{FLAGS.num_burnin_steps}+{FLAGS.num_results}"
    )
    path = os.path.join(FLAGS.work_dir, f"{name}.json")
    saved = load_run(path)
    if saved is not None or FLAGS.report_only:
        return saved
    model = getattr(gym.targets, target)()
    init_state = None
    if method.startswith("nuts"):
        q_fit, _, _ = fitted(model, target, seed, FLAGS.fit_steps)
        # sample_neutra's own first draw for NeuTra: the same base points, mapped by the fit.
        base_seed = tfp.random.split_seed(tfp.random.sanitize_seed(seed), 3)[0]
        init_state = q_fit.bijector.forward(
            q_fit.distribution.sample(FLAGS.num_chains, seed=base_seed)
        )
        q, khat, fit_seconds, fit_steps = identity_surrogate(model), float("nan"), 0.0, 0
    else:
        fit_steps = FLAGS.fit_steps if method == "neutra" else FLAGS.poor_fit_steps
        q, khat, fit_seconds = fitted(model, target, seed, fit_steps)
    start = time.perf_counter()
    result = mcmc.sample_neutra(
        model.unnormalized_log_prob,
        q,
        FLAGS.num_results,
        num_chains=FLAGS.num_chains,
        num_burnin_steps=FLAGS.num_burnin_steps,
        init_state=init_state,
        adapt_mass_matrix=method != "nuts_step_size_only",
        seed=seed,
    )
    seconds = time.perf_counter() - start
    run = measure(model, result, khat, fit_seconds, fit_steps, seconds)
    print(name, json.dumps(run), flush=True)
    save_run(path, run)
    return run


def mean(runs: list[dict], key: str, fmt: str) -> str:
    return format(float(np.mean([r[key] for r in runs])), fmt)


def ess_per_second(runs: list[dict]) -> float:
    """Mean over seeds of the smallest ESS per second of sampling and fitting."""
    return float(np.mean([r["min_ess"] / (r["seconds"] + r["fit_seconds"]) for r in runs]))


def table(target: str, results: dict) -> list[str]:
    lines = [
        f"### {target}",
        "",
        "| method | k-hat | grads / chain | divergences | min ESS | ESS / grad | ESS / grad "
        "with fit | max mean err | max sd err | max R-hat | sampling s | fit s | ESS / s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        if not runs:
            continue
        khat = (
            "-"
            if method.startswith("nuts")
            else format(float(np.median([r["khat"] for r in runs])), ".2f")
        )
        lines.append(
            f"| {method} | {khat} | {mean(runs, 'gradients_per_chain', ',.0f')} | "
            f"{mean(runs, 'divergences', '.1f')} | {mean(runs, 'min_ess', ',.0f')} | "
            f"{mean(runs, 'ess_per_gradient', '.2e')} | "
            f"{mean(runs, 'ess_per_gradient_with_fit', '.2e')} | "
            f"{mean(runs, 'mean_error', '.3f')} | {mean(runs, 'sd_error', '.3f')} | "
            f"{mean(runs, 'max_rhat', '.3f')} | {mean(runs, 'seconds', '.0f')} | "
            f"{mean(runs, 'fit_seconds', '.0f')} | {ess_per_second(runs):.0f} |"
        )
    return lines


def ratios(target: str, results: dict) -> list[str]:
    """Per baseline and seed: NeuTra's ESS per gradient over the baseline's, without and with
    the fit's gradients, and NeuTra's largest mean error and R-hat."""
    lines = []
    for baseline in ("nuts", "nuts_step_size_only"):
        cells = []
        for plain, neutra in zip(results.get(baseline, []), results["neutra"], strict=False):
            per_gradient = plain["ess_per_gradient"]
            cells.append(
                f"{neutra['ess_per_gradient'] / per_gradient:.0f}x / "
                f"{neutra['ess_per_gradient_with_fit'] / per_gradient:.0f}x "
                f"(err {neutra['mean_error']:.3f}, R-hat {neutra['max_rhat']:.3f})"
            )
        if cells:
            lines.append(f"| {target} | {baseline} | {' | '.join(cells)} |")
    return lines


def main(argv):
    del argv
    print(date_and_machine(FLAGS.machine))
    print(
        f"{FLAGS.num_chains} chains, {FLAGS.num_burnin_steps} burn-in + {FLAGS.num_results} "
        f"kept steps; fit {FLAGS.fit_steps} steps x {FLAGS.sample_size} samples; "
        f"{FLAGS.seeds} seeds",
        flush=True,
    )
    methods = [m for m in METHODS if m != "neutra_poor" or FLAGS.poor_fit_steps]
    all_results = {}
    for target in FLAGS.targets:
        all_results[target] = {m: [] for m in methods}
        for seed in range(FLAGS.seeds):
            for method in methods:
                run = run_one(target, method, seed)
                if run is not None:
                    all_results[target][method].append(run)
    for target, results in all_results.items():
        print("\n".join(["", *table(target, results)]))
    print(
        "\n| target | baseline | per seed: ESS per gradient, NeuTra / baseline, without / with "
        "the fit's (NeuTra's max mean error, max R-hat) |"
    )
    print("|---|---|---|")
    for target, results in all_results.items():
        print("\n".join(ratios(target, results)))


if __name__ == "__main__":
    app.run(main)
