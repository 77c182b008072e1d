"""Per-unit transforms compared: affine, gated and spline IAF steps, and planar flows.

Every IAF has about the same number of parameters (`--budget`: each one's MADE width chosen to
come nearest it) and `--num_steps` IAF steps; the planar flow as many steps as the budget
allows, at most `--max_planar_steps` (its steps run one after another: 620 steps, the 2-D
budget, took over 8 minutes a fit here). Each is fitted with the same optimiser, steps and
seeds. Three parts (`--parts`):

- `energy`: the four 2-D energies of Rezende & Mohamed (2015, Figure 3), `p(z) ~ exp(-U(z))`,
  fitted by reverse KL as a user fits a posterior (`tfp_iaf.vi.build_iaf_surrogate_posterior`
  with `transform=`, `tfp_iaf.vi.fit_surrogate_posterior`; planar: `tfp_iaf.PlanarFlow` after
  the same learned diagonal scale). Reported: the ELBO and `KL(q || p) = log Z - ELBO`, `log Z`
  by quadrature on a grid; a figure of each flow's density beside the true one.
- `density`: density estimation in the MAF direction (the flow's fast pass maps data to the
  base: `TransformedDistribution(N(0, I), Invert(flow))`), maximum likelihood, test
  log-likelihood: a ring of 8 Gaussians in 2-D, and with `--data_dir` the binarized MNIST images
  projected on their first 8 principal components.
- `timing`: time per training step and per sample of each IAF transform against the affine
  one, interleaved in one process.

    python -m bench.bench_flows                        # every part, then the tables
    python -m bench.bench_flows --parts=energy --seeds=1 --steps=500   # a quick look
    python -m bench.bench_flows --report_only          # tables and figure from saved runs

Results are kept per (part, case, transform, seed) in `--work_dir`, so a rerun resumes.
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags

import tfp_iaf
from bench import report
from tfp_iaf import tf_keras, vi

tfb, tfd = tfp.bijectors, tfp.distributions

TRANSFORMS = ["affine", "gated", "spline", "spline_affine", "planar"]
ENERGIES = ["U1", "U2", "U3", "U4"]
# The spline inside the affine step, `y = sigma (s(x) + a)` (the VI suite's spline surrogate).
SPLINE_AFFINE = {
    "kind": "composed",
    "parts": ["spline", {"kind": "affine", "log_scale_bound": None, "scaled_shift": True}],
}
# What each transform's surrogate passes to `build_iaf_surrogate_posterior`.
SURROGATE_KWARGS = {
    "affine": {},
    "gated": {"gated": True},
    "spline": {"transform": "spline"},
    "spline_affine": {"transform": SPLINE_AFFINE},
}

FLAGS = flags.FLAGS
flags.DEFINE_list("parts", ["energy", "density", "timing"], "Parts to run.")
flags.DEFINE_list("transforms", TRANSFORMS, "Transforms to compare.")
flags.DEFINE_integer("seeds", 3, "Seeds per case and transform.")
flags.DEFINE_integer("steps", 2000, "Optimisation steps per fit.")
flags.DEFINE_integer("num_steps", 4, "IAF steps of every IAF flow.")
flags.DEFINE_integer("budget", 3200, "Parameters per 2-D flow (the spline's at width 12).")
flags.DEFINE_integer(
    "max_planar_steps", 32, "Planar steps at most (Rezende & Mohamed took 32; see the docstring)."
)
flags.DEFINE_integer("mnist_budget", 40000, "Parameters per 8-D flow (MNIST projections).")
flags.DEFINE_float(
    "initial_scale",
    1.0,
    "Every flow's initial diagonal scale: 1, Rezende & Mohamed's N(0, I) start (at tfp_iaf.vi's "
    "default, 0.1, from the origin inside U1's ring, the IAFs found one of its two modes).",
)
flags.DEFINE_integer("eval_samples", 20000, "Samples for the ELBO.")
flags.DEFINE_string("data_dir", None, "tfds data_dir holding binarized_mnist (else skipped).")
flags.DEFINE_string("work_dir", "runs/bench_flows", "Per-run results (resumable).")
flags.DEFINE_string("figure", "docs/images/flows_energy.png", "Where the energy figure goes.")
flags.DEFINE_bool("report_only", False, "Only print the tables from saved runs.")
flags.DEFINE_string("machine", "2-core x86_64 CPU container, no GPU", "Machine description.")


# The energies. U2-U4 leave z1 free (exp(-U) is not integrable over the plane): as in the
# figure's window, a wall outside |z1| > 4 bounds them.


def _w1(z1):
    return tf.sin(2.0 * np.pi * z1 / 4.0)


def energy(name: str, z: tf.Tensor) -> tf.Tensor:
    """`U(z)` for `z: [..., 2]`."""
    z1, z2 = z[..., 0], z[..., 1]
    if name == "U1":
        ring = 0.5 * tf.square((tf.norm(z, axis=-1) - 2.0) / 0.4)
        bumps = tf.stack([-0.5 * tf.square((z1 - 2.0) / 0.6), -0.5 * tf.square((z1 + 2.0) / 0.6)])
        return ring - tf.reduce_logsumexp(bumps, axis=0)
    wall = 0.5 * tf.square(tf.nn.relu(tf.abs(z1) - 4.0) / 0.2)
    if name == "U2":
        return 0.5 * tf.square((z2 - _w1(z1)) / 0.4) + wall
    if name == "U3":
        w2 = 3.0 * tf.exp(-0.5 * tf.square((z1 - 1.0) / 0.6))
        a, b = (z2 - _w1(z1)) / 0.35, (z2 - _w1(z1) + w2) / 0.35
    else:
        w3 = 3.0 * tf.sigmoid((z1 - 1.0) / 0.3)
        a, b = (z2 - _w1(z1)) / 0.4, (z2 - _w1(z1) + w3) / 0.35
    return -tf.reduce_logsumexp(tf.stack([-0.5 * tf.square(a), -0.5 * tf.square(b)]), 0) + wall


def grid(half_width: float, points: int) -> tuple[np.ndarray, float]:
    """`[points^2, 2]` grid points over `[-half_width, half_width]^2`, and the cell area."""
    axis = np.linspace(-half_width, half_width, points)
    z1, z2 = np.meshgrid(axis, axis, indexing="xy")
    return np.stack([z1.ravel(), z2.ravel()], -1).astype(np.float32), (axis[1] - axis[0]) ** 2


def log_normaliser(name: str) -> float:
    """`log Z = log int exp(-U)`, by the midpoint rule on [-8, 8]^2 (1601^2 points)."""
    z, area = grid(8.0, 1601)
    neg_u = -energy(name, tf.constant(z, tf.float64)).numpy()
    return float(np.log(area) + np.logaddexp.reduce(neg_u))


# The flows, at one parameter budget.


def count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def iaf_surrogate(transform: str, size: int, width: int, seed: int):
    return vi.build_iaf_surrogate_posterior(
        [size],
        num_steps=FLAGS.num_steps,
        hidden_units=[width, width],
        initial_scale=FLAGS.initial_scale,
        seed=seed,
        **SURROGATE_KWARGS[transform],
    )


def planar_surrogate(size: int, num_steps: int, seed: int):
    """`N(0, I)`, the learned diagonal scale the IAF surrogates start with, then planar steps."""
    tf_keras.utils.set_random_seed(seed)
    loc = tf.Variable(tf.zeros([size]), name="loc")
    scale = tfp.util.TransformedVariable(
        FLAGS.initial_scale * tf.ones([size]), tfb.Softplus(), name="scale"
    )
    planar = tfp_iaf.PlanarFlow(size, num_steps=num_steps)
    planar.forward(tf.zeros([1, size]))  # creates its variables
    base = tfd.Sample(tfd.Normal(0.0, 1.0), [size])
    chain = tfb.Chain([planar, tfb.Shift(loc), tfb.Scale(scale)])
    return tfd.TransformedDistribution(base, chain)


@functools.cache
def flow_size(transform: str, size: int, budget: int) -> int:
    """The MADE width (IAFs) or planar steps whose parameter count comes nearest `budget`."""
    if transform == "planar":
        return min(max(1, round((budget - 2 * size) / (2 * size + 1))), FLAGS.max_planar_steps)

    def params(width):  # grows with the width
        return count(iaf_surrogate(transform, size, width, 0).trainable_variables)

    low, high = max(size - 1, 2), max(size - 1, 2)
    while params(high) < budget:  # doubling, then bisection: params(low) < budget <= high's
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if params(middle) < budget else (low, middle)
    return min((low, high), key=lambda w: abs(params(w) - budget))


def surrogate(transform: str, size: int, budget: int, seed: int):
    n = flow_size(transform, size, budget)
    if transform == "planar":
        return planar_surrogate(size, n, seed)
    return iaf_surrogate(transform, size, n, seed)


def optimizer(learning_rate: float):
    schedule = tf_keras.optimizers.schedules.CosineDecay(learning_rate, FLAGS.steps)
    return tf_keras.optimizers.Adam(schedule)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


# The parts. Each run returns a dict of numbers, saved as JSON.


def energy_run(name: str, transform: str, seed: int) -> dict:
    q = surrogate(transform, 2, FLAGS.budget, seed)
    seconds, _ = timed(
        lambda: vi.fit_surrogate_posterior(
            lambda z: -energy(name, z),
            q,
            optimizer(1e-2),
            FLAGS.steps,
            sample_size=256,
            jit_compile=True,
            seed=seed,
        )
    )
    z = q.sample(FLAGS.eval_samples, seed=(seed, 1))
    terms = (-energy(name, z) - q.log_prob(z)).numpy()
    points, _ = grid(4.0, 161)
    density = np.exp(q.log_prob(tf.constant(points)).numpy()).reshape(161, 161)
    return {
        "elbo": float(np.mean(terms)),
        "elbo_se": float(np.std(terms) / np.sqrt(terms.size)),
        "parameters": count(q.trainable_variables),
        "seconds": seconds,
        "density": density.tolist(),
    }


def ring_of_gaussians(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * rng.integers(8, size=n) / 8
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], -1)
    return (centres + 0.25 * rng.standard_normal((n, 2))).astype(np.float32)


def ring_log_prob(x: np.ndarray) -> np.ndarray:
    angles = 2 * np.pi * np.arange(8) / 8
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], -1)
    d2 = np.sum(np.square(x[:, None, :] - centres[None]), -1) / 0.25**2
    return np.logaddexp.reduce(-0.5 * d2, axis=1) - np.log(8 * 2 * np.pi * 0.25**2)


@functools.cache
def mnist_projections() -> tuple[np.ndarray, np.ndarray]:
    """Binarized MNIST (train, test) on the train set's first 8 principal components."""
    import tensorflow_datasets as tfds  # only this case needs it

    def images(split):
        data = tfds.load("binarized_mnist", split=split, data_dir=FLAGS.data_dir, download=False)
        return np.concatenate([b["image"].numpy().reshape(-1, 784) for b in data.batch(10000)])

    train, test = images("train").astype(np.float64), images("test").astype(np.float64)
    mean = train.mean(0)
    _, _, components = np.linalg.svd(train - mean, full_matrices=False)
    project = components[:8].T
    return ((train - mean) @ project).astype(np.float32), ((test - mean) @ project).astype(
        np.float32
    )


def density_data(case: str):
    """`(train, test, true test log-likelihood or None)`."""
    if case == "ring":
        test = ring_of_gaussians(10000, 1)
        return ring_of_gaussians(20000, 0), test, float(np.mean(ring_log_prob(test)))
    train, test = mnist_projections()
    return train, test, None


def maf_direction(transform: str, size: int, budget: int, seed: int):
    """`q(x) = N(f(x); 0, I) |f'(x)|`, `f` the flow's forward (fast) pass."""
    sampler = surrogate(transform, size, budget, seed)  # base -> flow
    return tfd.TransformedDistribution(sampler.distribution, tfb.Invert(sampler.bijector))


def density_run(case: str, transform: str, seed: int) -> dict:
    train, test, truth = density_data(case)
    mean, sd = train.mean(0), train.std(0)
    standard = lambda x: (x - mean) / sd  # noqa: E731
    log_jacobian = -float(np.sum(np.log(sd)))  # of the standardisation, per example
    budget = FLAGS.budget if case == "ring" else FLAGS.mnist_budget
    q = maf_direction(transform, train.shape[1], budget, seed)
    variables = q.trainable_variables
    opt = optimizer(5e-3)
    data = tf.constant(standard(train))
    rng = np.random.default_rng(seed)

    @tf.function(jit_compile=True)
    def step(batch):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(q.log_prob(batch))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    def fit():
        for _ in range(FLAGS.steps):
            step(tf.gather(data, rng.integers(train.shape[0], size=512)))

    seconds, _ = timed(fit)
    log_lik = q.log_prob(tf.constant(standard(test))).numpy() + log_jacobian
    return {
        "test_log_likelihood": float(np.mean(log_lik)),
        "test_log_likelihood_se": float(np.std(log_lik) / np.sqrt(log_lik.size)),
        "finite": bool(np.all(np.isfinite(log_lik))),
        "truth": truth,
        "parameters": count(variables),
        "seconds": seconds,
    }


def timing_run(size: int = 16, width: int = 64, blocks: int = 21, calls: int = 20) -> dict:
    """Milliseconds per training step (16 samples) and per 1,000 samples, interleaved."""
    fns = {}
    for transform in [t for t in FLAGS.transforms if t != "planar"]:
        q = iaf_surrogate(transform, size, width, 0)
        variables, opt = q.trainable_variables, tf_keras.optimizers.Adam(1e-3)

        @tf.function(jit_compile=True)
        def train(q=q, variables=variables, opt=opt):
            with tf.GradientTape() as tape:
                z = q.sample(16, seed=(1, 2))
                loss = tf.reduce_mean(q.log_prob(z) + 0.5 * tf.reduce_sum(z * z, -1))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss

        sample = tf.function(lambda q=q: q.sample(1000, seed=(3, 4)), jit_compile=True)
        fns[transform] = {"train": train, "sample": sample}
    times = {t: {k: [] for k in fn} for t, fn in fns.items()}
    for _ in range(blocks):
        for transform, kinds in fns.items():
            for kind, fn in kinds.items():
                fn()  # compiled and warm before the first timed block
                seconds, _ = timed(lambda fn=fn: [fn() for _ in range(calls)][-1].numpy())
                times[transform][kind].append(1e3 * seconds / calls)
    return {t: {k: float(np.median(v)) for k, v in kinds.items()} for t, kinds in times.items()}


def cached(path: str, fn) -> dict | None:
    saved = report.load_run(path)
    if saved is not None or FLAGS.report_only:
        return saved
    result = fn()
    report.save_run(path, result)
    print(f"{path}: { {k: v for k, v in result.items() if k != 'density'} }", flush=True)
    return result


def run_all() -> dict:
    runs = {"energy": {}, "density": {}, "timing": None}
    cases = {"energy": ENERGIES, "density": ["ring", *(["mnist8"] if FLAGS.data_dir else [])]}
    for part in ("energy", "density"):
        if part not in FLAGS.parts:
            continue
        run_fn = energy_run if part == "energy" else density_run
        for case in cases[part]:
            for transform in FLAGS.transforms:
                for seed in range(FLAGS.seeds):
                    path = os.path.join(FLAGS.work_dir, part, f"{case}-{transform}-{seed}.json")
                    run = cached(path, lambda f=run_fn, c=case, t=transform, s=seed: f(c, t, s))
                    if run is not None:
                        runs[part].setdefault(case, {}).setdefault(transform, []).append(run)
    if "timing" in FLAGS.parts:
        runs["timing"] = cached(os.path.join(FLAGS.work_dir, "timing.json"), timing_run)
    return runs


# The report.


def mean_se(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    se = float(np.std(values, ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
    return float(np.mean(values)), se


def energy_table(runs: dict) -> list[str]:
    lines = [
        "| energy | log Z | " + " | ".join(f"{t}: ELBO" for t in FLAGS.transforms) + " | best |",
        "|---|---:|" + "---:|" * len(FLAGS.transforms) + "---|",
    ]
    for name, by_transform in runs.items():
        stats = {t: mean_se([r["elbo"] for r in rs]) for t, rs in by_transform.items()}
        ranked = sorted(stats, key=lambda t: -stats[t][0])
        best, second = ranked[0], ranked[1] if len(ranked) > 1 else None
        margin = ""
        if second is not None:
            gap = stats[best][0] - stats[second][0]
            se = np.hypot(stats[best][1], stats[second][1])
            margin = f"{best} by {gap:.3f} ({gap / se:.1f} s.e.)" if se else f"{best}"
        cells = " | ".join(f"{stats[t][0]:.3f} +- {stats[t][1]:.3f}" for t in FLAGS.transforms
                           if t in stats)  # fmt: skip
        lines.append(f"| {name} | {log_normaliser(name):.3f} | {cells} | {margin} |")
    params = {t: rs[0]["parameters"] for t, rs in next(iter(runs.values())).items()}
    lines.append("")
    lines.append("Parameters: " + ", ".join(f"{t} {n:,}" for t, n in params.items()))
    return lines


def density_table(runs: dict) -> list[str]:
    lines = [
        "| data | truth | " + " | ".join(FLAGS.transforms) + " |",
        "|---|---:|" + "---:|" * len(FLAGS.transforms),
    ]
    for case, by_transform in runs.items():
        truth = next(iter(by_transform.values()))[0]["truth"]
        cells = []
        for t in FLAGS.transforms:
            rs = by_transform.get(t, [])
            finite = [r["test_log_likelihood"] for r in rs if r["finite"]]
            m, se = mean_se(finite) if finite else (float("nan"), 0.0)
            note = "" if len(finite) == len(rs) else f" ({len(rs) - len(finite)} not finite)"
            cells.append(f"{m:.3f} +- {se:.3f}{note}")
        truth_cell = "-" if truth is None else f"{truth:.3f}"
        params = ", ".join(f"{t} {rs[0]['parameters']:,}" for t, rs in by_transform.items())
        lines.append(f"| {case} ({params}) | {truth_cell} | " + " | ".join(cells) + " |")
    return lines


def timing_table(timing: dict) -> list[str]:
    lines = ["| transform | ms / training step | vs affine | ms / 1,000 samples | vs affine |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    base = timing["affine"]
    for t, times in timing.items():
        lines.append(
            f"| {t} | {times['train']:.2f} | {times['train'] / base['train']:.2f}x | "
            f"{times['sample']:.2f} | {times['sample'] / base['sample']:.2f}x |"
        )
    return lines


def energy_figure(runs: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    columns = ["true", *FLAGS.transforms]
    fig, axes = plt.subplots(
        len(names), len(columns), figsize=(2.2 * len(columns), 2.2 * len(names))
    )
    points, _ = grid(4.0, 161)
    for i, name in enumerate(names):
        true = np.exp(-energy(name, tf.constant(points)).numpy()).reshape(161, 161)
        for j, column in enumerate(columns):
            ax = np.atleast_2d(axes)[i, j]
            if column == "true":
                image = true
            elif column in runs[name]:
                image = np.asarray(runs[name][column][0]["density"])
            else:  # not run
                image = np.zeros_like(true)
            ax.imshow(image, origin="lower", extent=[-4, 4, -4, 4], cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(column if column == "true" else f"{column} (seed 0)", fontsize=9)
            if j == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main(argv):
    del argv
    runs = run_all()
    print(f"\nFlows benchmark: {report.date_and_machine(FLAGS.machine)}")
    print(f"TF {tf.__version__}, TFP {tfp.__version__}; {FLAGS.steps} steps, {FLAGS.seeds} seeds, "
          f"{FLAGS.num_steps} IAF steps")  # fmt: skip
    if runs["energy"]:
        print("\n### Energies (reverse KL; ELBO, mean +- s.e. over seeds)\n")
        print("\n".join(energy_table(runs["energy"])))
        energy_figure(runs["energy"], FLAGS.figure)
    if runs["density"]:
        print("\n### Density estimation (MAF direction; test log-likelihood, nats/example)\n")
        print("\n".join(density_table(runs["density"])))
    if runs["timing"]:
        print("\n### Time (16-d, MADE [64, 64], medians of interleaved blocks)\n")
        print("\n".join(timing_table(runs["timing"])))


if __name__ == "__main__":
    app.run(main)
