"""Conv IAF benchmark: a ConvMADE IAF step vs the same conv stack without masks, in one process.

The paper's CIFAR-10 layer (Kingma et al. 2016, §4.1): latent [16, 16, 32], context feature map of
160 channels, two hidden 3x3 convolutions of 160 filters, batch 32.

    python -m bench.bench_conv                    # all tables (a few minutes on 2 CPU cores)
    python -m bench.bench_conv --raster_passes=8  # quicker naive raster extrapolation

Prints markdown tables, each time the median of `--repeats` (`--inverse_repeats`) timed calls of
a `tf.function` after two warm-up calls, the repeats interleaved across cases; the minimum is
printed too, and on shared CPU cores (where other jobs only ever add time) the ratio of minima is
the steadier one:

- forward step (one network pass + the affine update) and training step (sample + log_prob +
  gradient w.r.t. the network's variables) of the masked conv IAF against the unmasked stack, the
  cost floor: identical layers (plain `tf_keras` Conv2D, same shapes, same context 1x1 conv, same
  bijector code), only without masks;
- the sequential inverse against the forward step, in "channel" and "raster" order, on the
  paper's latent and on a small one ([8, 8, 16], hidden [64, 64]): the fast inverse
  (`tfp_iaf.conv_inverse`, the default) and the naive one (`ConvMADE(fast_inverse=False)`: a
  full network pass per degree), same weights. Everything is measured in full except the naive
  raster inverse of the paper's latent (8192 passes, minutes): `--raster_passes` of its passes
  are timed and the total extrapolated linearly, labelled as such.
"""

from __future__ import annotations

import datetime
import os
import platform

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags

from bench.timing import time_fns
from tfp_iaf import AutoregressiveNetwork, ConvMADE, InverseAutoregressiveFlow, tf_keras
from tfp_iaf.autoregressive import output_initializer

tfd = tfp.distributions

flags.DEFINE_integer("height", 16, "Latent height.")
flags.DEFINE_integer("width", 16, "Latent width.")
flags.DEFINE_integer("channels", 32, "Latent channels.")
flags.DEFINE_integer("context", 160, "Context channels.")
flags.DEFINE_integer("filters", 160, "Filters of each of the two hidden convolutions.")
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("repeats", 21, "Timed repeats per case (median reported).")
flags.DEFINE_integer("inverse_repeats", 5, "Timed repeats per inverse case.")
flags.DEFINE_integer(
    "raster_passes", 32, "Passes of the naive paper-sized raster inverse timed (extrapolated)."
)
FLAGS = flags.FLAGS


class UnmaskedConvNet(AutoregressiveNetwork):
    """The ConvMADE layer stack with plain Conv2D layers: the cost floor (not autoregressive).

    All positions get degree 1, so the bijector accepts it; only its forward direction (and the
    log_prob of its own samples, which reuses the cached forward pass) is meaningful.
    """

    def __init__(self, event_shape, filters, context_channels, kernel_size=3, **kwargs):
        height, width, channels = event_shape
        super().__init__(
            event_shape,
            2,
            (height, width, context_channels),
            np.ones(event_shape, np.int64),
            **kwargs,
        )
        conv = tf_keras.layers.Conv2D
        self.convs = [
            conv(f, kernel_size, padding="same", dtype=self.dtype, name=f"conv_{i}")
            for i, f in enumerate(filters)
        ]
        # The same near-zero output initialisation as ConvMADE, so both run on alike values.
        self.convs.append(
            conv(
                channels * 2,
                kernel_size,
                padding="same",
                kernel_initializer=output_initializer(),
                dtype=self.dtype,
                name="output",
            )
        )
        self.context_conv = conv(filters[0], 1, use_bias=False, dtype=self.dtype, name="context")

    def call(self, x, context=None):
        h = self.convs[0](x) + self.context_conv(context)
        for conv in self.convs[1:]:
            h = conv(tf.nn.elu(h))
        return tf.reshape(h, [-1, *self.event_shape, 2])


def time_ms(fns, repeats):
    """(median, min) milliseconds per call of each fn, the repeats interleaved (`time_fns`)."""
    return [(1e3 * median, 1e3 * least) for median, least in time_fns(fns, repeats)]


def make_step(masked, order="raster"):
    event_shape = (FLAGS.height, FLAGS.width, FLAGS.channels)
    filters = [FLAGS.filters, FLAGS.filters]
    if masked:
        net = ConvMADE(event_shape, filters, context_channels=FLAGS.context, order=order)
    else:
        net = UnmaskedConvNet(event_shape, filters, FLAGS.context)
    return InverseAutoregressiveFlow(net), event_shape


def step_cases(masked, h):
    """(forward step fn, training step fn) for one IAF step."""
    iaf, event_shape = make_step(masked)
    x = tf.random.normal([FLAGS.batch, *event_shape])
    iaf.forward(x, context=h)  # build the variables eagerly
    dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0.0, 1.0), event_shape), iaf)
    variables = iaf.trainable_variables
    kwargs = {"context": h}

    @tf.function
    def forward():
        return iaf.forward(x, context=h)

    @tf.function
    def train():
        with tf.GradientTape() as tape:
            z = dist.sample(FLAGS.batch, seed=1, bijector_kwargs=kwargs)
            loss = -tf.reduce_mean(dist.log_prob(z, bijector_kwargs=kwargs))
        return tape.gradient(loss, variables)

    return forward, train


def inverse_cases(event_shape, filters, batch, naive_passes=None):
    """Per order ("channel", "raster"): the IAF step's forward, its fast inverse (the default)
    and its naive inverse (`fast_inverse=False`: one full network pass per degree), same weights.

    With `naive_passes`, the naive raster inverse runs only that many passes (the same loop body
    as `AutoregressiveNetwork.sequential_solve`), for a linear extrapolation.

    Returns:
      `{order: (forward, fast, naive, passes, naive_passes_timed)}`.
    """
    height, width, _ = event_shape
    h = tf.random.normal([batch, height, width, FLAGS.context])
    cases = {}
    for order in ("channel", "raster"):
        steps = []
        for fast in (True, False):
            tf.keras.utils.set_random_seed(1)
            net = ConvMADE(
                event_shape,
                filters,
                context_channels=FLAGS.context,
                order=order,
                fast_inverse=fast,
            )
            steps.append(InverseAutoregressiveFlow(net))
        fast_iaf, naive_iaf = steps
        x = tf.random.normal([batch, *event_shape])
        y = fast_iaf.forward(x, context=h)
        naive_iaf.forward(x, context=h)
        naive_iaf.network.set_weights(fast_iaf.network.get_weights())
        passes = fast_iaf.network.num_inverse_passes
        timed = passes if order == "channel" or naive_passes is None else naive_passes

        @tf.function
        def forward(iaf=fast_iaf, x=x):
            return iaf.forward(tf.identity(x), context=h)

        @tf.function
        def fast_inverse(iaf=fast_iaf, y=y):
            return iaf.inverse(tf.identity(y), context=h)

        @tf.function
        def naive_inverse(iaf=naive_iaf, y=y, timed=timed, passes=passes):
            if timed == passes:
                return iaf.inverse(tf.identity(y), context=h)

            def body(x_k, _):  # one pass of AutoregressiveNetwork.sequential_solve
                shift, log_scale = iaf.shift_and_log_scale(x_k, h)
                return (y - shift) * tf.exp(-log_scale), log_scale

            return tf.while_loop(
                lambda *_: True,
                body,
                (tf.zeros_like(y), tf.zeros_like(y)),
                maximum_iterations=timed,
            )

        cases[order] = (forward, fast_inverse, naive_inverse, passes, timed, x)
    return cases


def inverse_table(label, event_shape, filters, batch, repeats, naive_passes=None):
    """Prints one markdown table: the inverses of one latent against its forward step."""
    cases = inverse_cases(event_shape, filters, batch, naive_passes)
    fns = [fn for case in cases.values() for fn in case[:3]]
    times = iter(time_ms(fns, repeats))
    print(
        f"\n{label}: latent {list(event_shape)}, hidden {filters} 3x3, context "
        f"{FLAGS.context} ch, batch {batch}; median (min) ms of {repeats}\n"
    )
    print(
        "| order | passes | forward step | fast inverse | fast / forward | naive inverse "
        "| naive / forward | naive / fast |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    errors = []
    for order, (_, fast, naive, passes, timed, x) in cases.items():
        (f, f_min), (i, i_min), (n, n_min) = next(times), next(times), next(times)
        shown = f"{n:.0f} ({n_min:.0f})"
        if timed != passes:  # extrapolated from `timed` passes
            n, n_min = n * passes / timed, n_min * passes / timed
            shown = f"**~{n:.3g}** (extrapolated from {timed} passes)"
        print(
            f"| {order} | {passes} | {f:.1f} ({f_min:.1f}) | {i:.0f} ({i_min:.0f}) "
            f"| **{i / f:.1f}x** ({i_min / f_min:.1f}x) | {shown} | {n / f:.0f}x | {n / i:.0f}x |"
        )
        x_fast = fast()
        if timed == passes:
            x_naive = naive()
            errors.append(
                f"{order}: max |fast - naive| {_max_abs(x_fast, x_naive):.1e}, round trip max "
                f"|x - inverse(forward(x))| fast {_max_abs(x_fast, x):.1e}, naive "
                f"{_max_abs(x_naive, x):.1e}"
            )
        else:
            errors.append(f"{order}: round trip max error, fast {_max_abs(x_fast, x):.1e}")
    print("\nAccuracy (float32, these weights): " + "; ".join(errors))


def _max_abs(a, b) -> float:
    return float(tf.reduce_max(tf.abs(a - b)))


def main(argv):
    del argv
    tf.random.set_seed(0)
    h = tf.random.normal([FLAGS.batch, FLAGS.height, FLAGS.width, FLAGS.context])
    unmasked_forward, unmasked_train = step_cases(False, h)
    masked_forward, masked_train = step_cases(True, h)
    (uf, uf_min), (mf, mf_min), (ut, ut_min), (mt, mt_min) = time_ms(
        [unmasked_forward, masked_forward, unmasked_train, masked_train], FLAGS.repeats
    )
    shape = f"[{FLAGS.height}, {FLAGS.width}, {FLAGS.channels}]"
    print(
        f"Conv IAF step, latent {shape}, context {FLAGS.context} ch, hidden "
        f"[{FLAGS.filters}, {FLAGS.filters}] 3x3, batch {FLAGS.batch}; "
        f"{datetime.date.today()}, TF {tf.__version__}, TFP {tfp.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU; median (min) of {FLAGS.repeats}\n"
    )
    print(
        "| case | unmasked Conv2D (ms) | masked ConvMADE (ms) | masked / unmasked, median "
        "| masked / unmasked, min |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, a, a_min, b, b_min in (
        ("forward step", uf, uf_min, mf, mf_min),
        ("training step", ut, ut_min, mt, mt_min),
    ):
        print(
            f"| {label} | {a:.1f} ({a_min:.1f}) | {b:.1f} ({b_min:.1f}) | {b / a:.2f}x "
            f"| {b_min / a_min:.2f}x |"
        )
    event_shape = (FLAGS.height, FLAGS.width, FLAGS.channels)
    inverse_repeats = FLAGS.inverse_repeats
    inverse_table(
        "Inverse, the paper's layer",
        event_shape,
        [FLAGS.filters, FLAGS.filters],
        FLAGS.batch,
        inverse_repeats,
        naive_passes=FLAGS.raster_passes,
    )
    inverse_table("Inverse, a small latent", (8, 8, 16), [64, 64], FLAGS.batch, inverse_repeats)


if __name__ == "__main__":
    app.run(main)
