"""The linear IAF's inverse: one triangular solve against the generic pass-by-pass solve.

`LinearAutoregressive(D)` in an affine `InverseAutoregressiveFlow`, batch 2, no context, float32:
the forward step, the inverse by `LinearAutoregressive.sequential_solve` (one triangular solve),
and the inverse by the generic `AutoregressiveNetwork.sequential_solve` (`D` network passes,
each computing the whole `D x D` map; one call, as it takes minutes at D = 2048), eager; the
first two are medians of `--repeats` timed calls.

    python -m bench.bench_linear                       # D = 256 and 2048
"""

from __future__ import annotations

import functools
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import tfp_iaf
from bench.report import date_and_machine
from bench.timing import time_fns

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["256", "2048"], "Event sizes D.")
flags.DEFINE_integer("repeats", 3, "Timed calls per case.")
flags.DEFINE_string("machine", "2-core x86_64 CPU container, no GPU", "Machine description.")


def measure(d: int) -> str:
    """One table row for event size `d`."""
    net = tfp_iaf.LinearAutoregressive(d, order="right-to-left")
    flow = tfp_iaf.InverseAutoregressiveFlow(net)
    x = tf.random.stateless_normal([2, d], (1, 2))
    flow.forward(x)
    for v in net.trainable_variables:  # away from the near-identity start
        v.assign(v + 0.01 * tf.random.stateless_normal(v.shape, (3, 4)))
    y = flow.forward(x)
    generic = functools.partial(tfp_iaf.AutoregressiveNetwork.sequential_solve, net)

    def generic_inverse():
        net.sequential_solve = generic
        try:
            return flow.inverse(tf.identity(y))
        finally:
            del net.sequential_solve

    (fwd, _), (fast, _) = time_fns(
        [lambda: flow.forward(tf.identity(x)), lambda: flow.inverse(tf.identity(y))],
        repeats=FLAGS.repeats,
        warmup=1,
    )
    start = time.perf_counter()  # the generic solve once: minutes at D = 2048
    slow_x = generic_inverse().numpy()
    slow = time.perf_counter() - start
    error = float(np.max(np.abs(slow_x - flow.inverse(tf.identity(y)))))
    return (
        f"| {d} | {1e3 * fwd:.2f} | {1e3 * fast:.2f} | {1e3 * slow:.0f} "
        f"| {slow / fast:.0f}x | {error:.1e} |"
    )


def main(argv):
    del argv
    print("Linear IAF inverse: " + date_and_machine(FLAGS.machine))
    print(
        "| D | forward (ms) | inverse, triangular solve (ms) | inverse, generic, 1 call (ms) "
        "| generic / solve | max abs(generic - solve) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for d in FLAGS.sizes:
        print(measure(int(d)), flush=True)


if __name__ == "__main__":
    app.run(main)
