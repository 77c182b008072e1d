"""Sampling speed: the ResNet VAE's sampler vs sequential autoregressive sampling, one run.

The IAF paper (section 6.2) contrasts 0.05 s per image for its VAE with 52 s for PixelCNN-style
sequential sampling. Here, at the same batch size:

- VAE: `ResNetVAE.sample` (every layer from its prior, one parallel pass), weights untrained
  (speed does not depend on them);
- autoregressive: a raster-order `ConvMADE` over one `[16, 16, z_size]` latent (hidden
  `[hidden_size, hidden_size]`), sampled sequentially: one network pass per latent dimension,
  `16 * 16 * z_size` passes. A tf.while_loop of `--ar_passes` passes, each updating the next
  position, is timed and the full count extrapolated linearly (labelled as such).

    python bench/bench_sampling.py
"""

from __future__ import annotations

import datetime
import platform

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags
from timing import time_fn  # bench/timing.py

from tfp_iaf import ConvMADE
from tfp_iaf.vae import ResNetVAE

flags.DEFINE_integer("batch_size", 8, "Images per sampling call.")
flags.DEFINE_integer("hidden_size", 160, "ResNet channels and ConvMADE widths.")
flags.DEFINE_integer("z_size", 32, "Latent channels.")
flags.DEFINE_integer("depth", 2, "VAE stages.")
flags.DEFINE_integer("num_blocks", 2, "VAE layers per stage.")
flags.DEFINE_integer("ar_passes", 32, "Sequential passes actually timed.")
flags.DEFINE_integer("repeats", 5, "Timed calls (after one warm-up); the median is reported.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    b, h, z = FLAGS.batch_size, FLAGS.hidden_size, FLAGS.z_size
    vae = ResNetVAE(
        hidden_size=h, z_size=z, depth=FLAGS.depth, num_blocks=FLAGS.num_blocks, iaf_steps=1
    )
    sample = tf.function(lambda: vae.sample(b, seed=0))
    vae_s = time_fn(sample, FLAGS.repeats, warmup=1)

    shape = (16, 16, z)
    made = ConvMADE(shape, [h, h], order="raster")
    made(tf.zeros([1, *shape]))
    dims = int(np.prod(shape))
    order = np.argsort(made.degrees.reshape(-1), kind="stable")  # raster position order
    one_hots = tf.constant(np.eye(dims, dtype=np.float32)[order[: FLAGS.ar_passes]])

    @tf.function
    def sequential(num_passes):
        def body(i, x):
            params = made(x)  # one full network pass per latent dimension
            loc, log_scale = params[..., 0], params[..., 1]
            eps = tf.random.stateless_normal(tf.shape(x), [0, i])
            new = loc + tf.exp(log_scale) * eps
            mask = tf.reshape(one_hots[i], shape)
            return i + 1, x + mask * (new - x)

        _, x = tf.while_loop(lambda i, _: i < num_passes, body, (0, tf.zeros([b, *shape])))
        return x

    ar_s = time_fn(lambda: sequential(FLAGS.ar_passes), FLAGS.repeats, warmup=1)
    per_pass = ar_s / FLAGS.ar_passes
    ar_full = per_pass * dims
    print(
        f"Sampling speed, batch {b}; {datetime.date.today()}, TF {tf.__version__}, TFP "
        f"{tfp.__version__}, {platform.machine()}, "
        f"{len(tf.config.list_physical_devices('CPU'))} CPU device(s), "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU; median of {FLAGS.repeats}"
    )
    print(
        f"VAE: ResNetVAE(hidden {h}, z {z}, depth {FLAGS.depth} x {FLAGS.num_blocks} layers), "
        "sampling mode"
    )
    print(f"AR: raster ConvMADE over [16, 16, {z}] ({dims} passes), hidden [{h}, {h}]")
    print()
    print("| sampler | s per batch | images/s | measured how |")
    print("|---|---:|---:|---|")
    print(f"| ResNet VAE | {vae_s:.4f} | {b / vae_s:.1f} | timed |")
    print(
        f"| sequential ConvMADE | {ar_full:.1f} | {b / ar_full:.4f} | extrapolated: "
        f"{FLAGS.ar_passes} passes timed ({ar_s:.3f} s, {1e3 * per_pass:.2f} ms/pass) x "
        f"{dims}/{FLAGS.ar_passes} |"
    )
    print()
    print(f"Ratio (VAE images/s over sequential images/s): {ar_full / vae_s:.0f}x")


if __name__ == "__main__":
    app.run(main)
