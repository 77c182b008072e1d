"""Dense IAF benchmark: tfp_iaf vs TFP's built-in IAF, in one process, plus the matmul peak.

The paper's MNIST posterior: latent 32, context 32, a 2-layer MADE of width 1920 per step,
8 steps with the order reversed between steps, batch 100.

    python -m bench.bench_dense                 # full table (a few minutes on 2 CPU cores)
    python -m bench.bench_dense --width=320     # a quicker, smaller run
    python -m bench.bench_dense --nopeak_memory # no memory child processes (the GPU suite)

Prints a markdown table: (a) a training step (sample + log_prob + gradient), (b) log_prob of fresh
points (the sequential inverse), each as the median of `--repeats` timed calls of a
`tf.function`, the ratio tfp_iaf / TFP, achieved GFLOP/s against a plain fp32 matmul measured in
the same run, and peak memory (max RSS of a separate child process running only that case).
"""

from __future__ import annotations

import datetime
import platform
import sys

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags

import tfp_iaf
from bench.timing import child_vm_hwm_mib, matmul_gflops, time_fn, vm_hwm_mib

tfb, tfd = tfp.bijectors, tfp.distributions

flags.DEFINE_integer("latent", 32, "Latent size.")
flags.DEFINE_integer("context", 32, "Context size.")
flags.DEFINE_integer("width", 1920, "MADE hidden width (2 layers).")
flags.DEFINE_integer("depth", 8, "Number of IAF steps.")
flags.DEFINE_integer("batch", 100, "Batch size.")
flags.DEFINE_integer("repeats", 7, "Timed repeats per case (median reported).")
flags.DEFINE_bool("peak_memory", True, "Measure peak memory (a child process per case).")
flags.DEFINE_string("only", None, "Run one case only (used for the memory child processes).")
FLAGS = flags.FLAGS

CASES = ("tfp_iaf/train", "tfp/train", "tfp_iaf/log_prob", "tfp/log_prob")


def build_tfp_iaf():
    stack = tfp_iaf.dense_iaf_stack(
        FLAGS.latent, FLAGS.depth, [FLAGS.width] * 2, context_size=FLAGS.context
    )
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(FLAGS.latent)), stack)

    def kwargs(h):
        return {"context": h}

    return dist, stack, kwargs


def build_tfp():
    """TFP's own IAF: Invert(MaskedAutoregressiveFlow(AutoregressiveNetwork)), chained."""
    steps = []
    for t in range(FLAGS.depth):
        made = tfb.AutoregressiveNetwork(
            params=2,
            event_shape=[FLAGS.latent],
            hidden_units=[FLAGS.width] * 2,
            conditional=True,
            conditional_event_shape=[FLAGS.context],
            input_order="left-to-right" if t % 2 == 0 else "right-to-left",
            activation="elu",
        )
        steps.append(tfb.Invert(tfb.MaskedAutoregressiveFlow(made, name=f"maf{t}"), name=f"i{t}"))
    chain = tfb.Chain(steps[::-1])  # Chain applies its last bijector first.
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(FLAGS.latent)), chain)

    # Chain needs the context routed to every step by name (TFP issue #1410).
    def kwargs(h):
        return {f"i{t}": {"conditional_input": h} for t in range(FLAGS.depth)}

    return dist, chain, kwargs


def make_case(name):
    lib, kind = name.split("/")
    dist, bij, kwargs = build_tfp_iaf() if lib == "tfp_iaf" else build_tfp()
    h = tf.random.normal([FLAGS.batch, FLAGS.context])
    # Build the variables once, eagerly.
    dist.sample(FLAGS.batch, seed=1, bijector_kwargs=kwargs(h))
    variables = bij.trainable_variables
    if kind == "train":

        @tf.function
        def fn():
            with tf.GradientTape() as tape:
                z = dist.sample(FLAGS.batch, seed=1, bijector_kwargs=kwargs(h))
                loss = -tf.reduce_mean(dist.log_prob(z, bijector_kwargs=kwargs(h)))
            return tape.gradient(loss, variables)

    else:
        points = tf.random.normal([FLAGS.batch, FLAGS.latent])

        @tf.function
        def fn():
            return dist.log_prob(points, bijector_kwargs=kwargs(h))

    return fn, len(variables)


def network_flops():
    """Multiply-adds x2 of one MADE pass over the batch (masked kernels counted dense)."""
    w, d, c, b = FLAGS.width, FLAGS.latent, FLAGS.context, FLAGS.batch
    macs = d * w + w * w + w * 2 * d + c * (w + w + 2 * d)
    return 2 * b * macs


def peak_rss_mib(case):
    """Max RSS of a child process that builds and runs only `case`."""
    args = [f"--only={case}"]
    args += [
        f"--{k}={getattr(FLAGS, k)}" for k in ("latent", "context", "width", "depth", "batch")
    ]
    return child_vm_hwm_mib(__file__, args)


def main(argv):
    del argv
    if FLAGS.only:
        if FLAGS.only != "baseline":  # the baseline imports everything and runs nothing
            fn, _ = make_case(FLAGS.only)
            time_fn(fn, 1)
        print(vm_hwm_mib())
        return
    baseline = peak_rss_mib("baseline") if FLAGS.peak_memory else None
    peak = matmul_gflops()
    seconds = {}
    for case in CASES:
        fn, num_vars = make_case(case)
        seconds[case] = time_fn(fn, FLAGS.repeats)
        print(f"{case}: {seconds[case] * 1e3:.1f} ms ({num_vars} variables)", file=sys.stderr)
    # (a): one forward pass per step, backward ~2x forward; (b): sequential passes per step.
    flops = {
        "train": 3 * network_flops() * FLAGS.depth,
        "log_prob": FLAGS.latent * network_flops() * FLAGS.depth,
    }
    print(
        f"\nDense IAF benchmark, {datetime.date.today()}, {platform.node()} "
        f"({tf.config.threading.get_intra_op_parallelism_threads() or 'default'} intra-op threads,"
        f" {len(tf.config.list_physical_devices('CPU'))} CPU device, TF {tf.__version__}, "
        f"TFP {tfp.__version__})"
    )
    print(
        f"latent {FLAGS.latent}, context {FLAGS.context}, MADE {FLAGS.width}x2, "
        f"depth {FLAGS.depth}, batch {FLAGS.batch}; fp32 matmul peak {peak:.1f} GFLOP/s\n"
    )
    print(
        "| case | tfp_iaf (ms) | TFP (ms) | ratio | tfp_iaf GFLOP/s | TFP GFLOP/s "
        "| tfp_iaf peak mem (MiB) | TFP peak mem (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, label in (("train", "(a) training step"), ("log_prob", "(b) log_prob, fresh")):
        ours, theirs = seconds[f"tfp_iaf/{kind}"], seconds[f"tfp/{kind}"]
        mem_ours = mem_theirs = "not measured"
        if FLAGS.peak_memory:
            mem_ours = f"{peak_rss_mib(f'tfp_iaf/{kind}') - baseline:.0f}"
            mem_theirs = f"{peak_rss_mib(f'tfp/{kind}') - baseline:.0f}"
        print(
            f"| {label} | {ours * 1e3:.1f} | {theirs * 1e3:.1f} | {ours / theirs:.2f}x "
            f"| {flops[kind] / ours / 1e9:.1f} | {flops[kind] / theirs / 1e9:.1f} "
            f"| {mem_ours} | {mem_theirs} |"
        )
    if FLAGS.peak_memory:
        print(
            f"\nPeak mem: max RSS of a child process running only that case, minus "
            f"{baseline:.0f} MiB for a child that imports everything and runs nothing."
        )
    print(
        "GFLOP/s counts dense-equivalent work: (a) 3 network passes per step (forward + "
        f"backward), (b) {FLAGS.latent} passes per step (the work of a naive sequential "
        "inverse; tfp_iaf's MADE inverse does about one pass of work, so its figure is nominal)."
    )


if __name__ == "__main__":
    np.random.seed(0)
    tf.random.set_seed(0)
    app.run(main)
