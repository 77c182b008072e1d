"""Conv IAF benchmark: a ConvMADE IAF step vs the same conv stack without masks, in one process.

The paper's CIFAR-10 layer (Kingma et al. 2016, §4.1): latent [16, 16, 32], context feature map of
160 channels, two hidden 3x3 convolutions of 160 filters, batch 32.

    python bench/bench_conv.py                    # full table (about two minutes on 2 CPU cores)
    python bench/bench_conv.py --raster_passes=8  # quicker raster-inverse extrapolation

Prints a markdown table, each time the median of `--repeats` timed calls of a `tf.function`
after two warm-up calls, the repeats interleaved across cases; the minimum is printed too, and
on shared CPU cores (where other jobs only ever add time) the ratio of minima is the steadier one:

- forward step (one network pass + the affine update) and training step (sample + log_prob +
  gradient w.r.t. the network's variables) of the masked conv IAF against the unmasked stack, the
  cost floor: identical layers (plain `tf_keras` Conv2D, same shapes, same context 1x1 conv, same
  bijector code), only without masks;
- the sequential inverse: "channel" order runs its 32 passes and is timed in full; "raster" order
  needs H*W*C = 8192 passes, so `--raster_passes` of them are timed (the same loop body as the
  bijector's inverse) and the total is extrapolated linearly, labelled as such.
"""

from __future__ import annotations

import datetime
import os
import platform

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags
from timing import time_fns  # bench/timing.py

from tfp_iaf import AutoregressiveNetwork, ConvMADE, InverseAutoregressiveFlow, tf_keras
from tfp_iaf.autoregressive import output_initializer

tfd = tfp.distributions

flags.DEFINE_integer("height", 16, "Latent height.")
flags.DEFINE_integer("width", 16, "Latent width.")
flags.DEFINE_integer("channels", 32, "Latent channels.")
flags.DEFINE_integer("context", 160, "Context channels.")
flags.DEFINE_integer("filters", 160, "Filters of each of the two hidden convolutions.")
flags.DEFINE_integer("batch", 32, "Batch size.")
flags.DEFINE_integer("repeats", 21, "Timed repeats per case (median reported).")
flags.DEFINE_integer("raster_passes", 32, "Raster-inverse passes timed for the extrapolation.")
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


def inverse_case(order, h, passes=None):
    """The sequential inverse; with `passes`, only that many passes of the same loop body."""
    iaf, event_shape = make_step(True, order)
    y = tf.random.normal([FLAGS.batch, *event_shape])
    iaf.forward(y, context=h)

    @tf.function
    def inverse():
        if passes is None:
            return iaf.inverse(tf.identity(y), context=h)

        def body(x, _):  # the bijector's own loop body (iaf.py, _inverse_and_ildj)
            shift, log_scale = iaf.shift_and_log_scale(x, h)
            return (y - shift) * tf.exp(-log_scale), log_scale

        return tf.while_loop(
            lambda *_: True, body, (tf.zeros_like(y), tf.zeros_like(y)), maximum_iterations=passes
        )

    return inverse, iaf.network.num_inverse_passes


def main(argv):
    del argv
    tf.random.set_seed(0)
    h = tf.random.normal([FLAGS.batch, FLAGS.height, FLAGS.width, FLAGS.context])
    unmasked_forward, unmasked_train = step_cases(False, h)
    masked_forward, masked_train = step_cases(True, h)
    (uf, uf_min), (mf, mf_min), (ut, ut_min), (mt, mt_min) = time_ms(
        [unmasked_forward, masked_forward, unmasked_train, masked_train], FLAGS.repeats
    )
    channel_inverse, channel_passes = inverse_case("channel", h)
    raster_inverse, raster_passes = inverse_case("raster", h, FLAGS.raster_passes)
    (channel_ms, _), (part_ms, _) = time_ms(
        [channel_inverse, raster_inverse], max(3, FLAGS.repeats // 2)
    )
    part = FLAGS.raster_passes
    raster_ms = part_ms * raster_passes / part

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
    print("\n| inverse (masked) | passes | time (ms) | per pass (ms) | / masked forward step |")
    print("|---|---:|---:|---:|---:|")
    rows = (
        ("channel order, measured", channel_passes, f"{channel_ms:.0f}", channel_ms),
        (f"raster order, {part} passes measured", part, f"{part_ms:.0f}", part_ms),
        (
            "raster order, **extrapolated** to all passes",
            raster_passes,
            f"~{raster_ms:.3g}",
            raster_ms,
        ),
    )
    for label, passes, shown, total_ms in rows:
        print(f"| {label} | {passes} | {shown} | {total_ms / passes:.1f} | {total_ms / mf:.0f}x |")


if __name__ == "__main__":
    app.run(main)
