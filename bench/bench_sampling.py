"""Sampling speed: the ResNet VAE's sampler vs a sequential pixel model, measured in one run.

The IAF paper (section 6.2) contrasts 0.05 s per image for its VAE with 52 s for PixelCNN's
pixel-by-pixel sampling. Here, at the same batch size and both measured in full:

- VAE: `ResNetVAE.sample` (every layer from its prior, one parallel pass, decoded to images),
  weights untrained (speed does not depend on them);
- pixel model: a small PixelCNN-style network over `32 x 32 x 3` images, a raster-order
  `ConvMADE` (masked 3x3 convolutions, hidden `[--pixel_hidden] * --pixel_layers`) whose two
  outputs per subpixel are the location and log-scale of a discretized logistic over 256 levels
  in `[-1, 1]`. It is sampled subpixel by subpixel, `32 * 32 * 3 = 3072` sequential steps, with
  the fast incremental method (`ConvMADE.sequential_solve`, `tfp_iaf.conv_inverse.raster_solve`:
  each position's units computed once from cached activations): step `i` draws `u ~ U(0, 1)` and
  sets the subpixel to `round(loc + s * logit(u))` on the 256-level grid (inverse-CDF sampling of
  the discretized logistic, the tails going to the edge levels as in PixelCNN++).

    python -m bench.bench_sampling
"""

from __future__ import annotations

import datetime
import platform

import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags

from bench.timing import time_fns
from tfp_iaf import ConvMADE
from tfp_iaf.vae import ResNetVAE

flags.DEFINE_integer("batch_size", 8, "Images per sampling call.")
flags.DEFINE_integer("hidden_size", 160, "ResNet channels.")
flags.DEFINE_integer("z_size", 32, "Latent channels.")
flags.DEFINE_integer("depth", 2, "VAE stages.")
flags.DEFINE_integer("num_blocks", 2, "VAE layers per stage.")
flags.DEFINE_integer("pixel_hidden", 96, "Pixel model hidden width (a multiple of 3).")
flags.DEFINE_integer("pixel_layers", 2, "Pixel model hidden masked conv layers.")
flags.DEFINE_integer("naive_passes", 32, "Passes of the naive pixel sampler timed (extrapolated).")
flags.DEFINE_integer("repeats", 5, "Timed calls (after one warm-up); the median is reported.")
FLAGS = flags.FLAGS

IMAGE = (32, 32, 3)


def discretized_logistic_sample(u, params):
    """Inverse-CDF sample of a 256-level discretized logistic on `[-1, 1]`, per subpixel."""
    loc, log_scale = params[..., 0], tf.maximum(params[..., 1], -7.0)
    x = loc + tf.exp(log_scale) * (tf.math.log(u) - tf.math.log1p(-u))
    level = tf.clip_by_value(tf.round((x + 1.0) * 127.5), 0.0, 255.0)
    return level / 127.5 - 1.0, log_scale


def main(argv):
    del argv
    b, h, z = FLAGS.batch_size, FLAGS.hidden_size, FLAGS.z_size
    vae = ResNetVAE(
        hidden_size=h, z_size=z, depth=FLAGS.depth, num_blocks=FLAGS.num_blocks, iaf_steps=1
    )
    vae_sample = tf.function(lambda: vae.sample(b, seed=0))

    pixel_model = ConvMADE(IMAGE, [FLAGS.pixel_hidden] * FLAGS.pixel_layers, order="raster")
    pixel_model(tf.zeros([1, *IMAGE]))

    @tf.function
    def pixel_sample():
        u = tf.random.stateless_uniform([b, *IMAGE], [1, 2], minval=1e-5, maxval=1.0 - 1e-5)
        images, _ = pixel_model.sequential_solve(u, None, discretized_logistic_sample)
        return images

    @tf.function
    def naive_pixel_passes():
        """`--naive_passes` passes of the naive sampler: the whole network per subpixel."""
        u = tf.random.stateless_uniform([b, *IMAGE], [1, 2], minval=1e-5, maxval=1.0 - 1e-5)

        def body(x, _):
            return discretized_logistic_sample(u, pixel_model(x))

        return tf.while_loop(
            lambda *_: True,
            body,
            (tf.zeros_like(u), tf.zeros_like(u)),
            maximum_iterations=FLAGS.naive_passes,
        )

    vae_images, pixel_images = vae_sample(), pixel_sample()
    levels = (pixel_images + 1.0) * 127.5  # 0..255, up to float32 rounding
    on_grid = bool(
        tf.reduce_all((levels > -1e-3) & (levels < 255.001))
        & tf.reduce_all(tf.abs(levels - tf.round(levels)) < 1e-3)
    )
    (vae_s, vae_min), (ar_s, ar_min), (naive_part, _) = time_fns(
        [vae_sample, pixel_sample, naive_pixel_passes], FLAGS.repeats, 1
    )
    naive_s = naive_part * 3072 / FLAGS.naive_passes
    print(
        f"Sampling speed, batch {b}; {datetime.date.today()}, TF {tf.__version__}, TFP "
        f"{tfp.__version__}, {platform.machine()}, "
        f"{len(tf.config.list_physical_devices('CPU'))} CPU device(s), "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU; median (min) of {FLAGS.repeats}"
    )
    print(
        f"VAE: ResNetVAE(hidden {h}, z {z}, depth {FLAGS.depth} x {FLAGS.num_blocks} layers), "
        f"sampling mode, decoded to images {vae_images.shape.as_list()}"
    )
    print(
        f"Pixel model: raster ConvMADE over {list(IMAGE)} (3072 sequential subpixels), hidden "
        f"{[FLAGS.pixel_hidden] * FLAGS.pixel_layers} 3x3, discretized logistic (256 levels), "
        f"fast incremental sampling; images {pixel_images.shape.as_list()}, every value on the "
        f"256-level grid: {on_grid}"
    )
    print()
    print("| sampler | s per batch | images/s | measured how |")
    print("|---|---:|---:|---|")
    print(f"| ResNet VAE | {vae_s:.3f} ({vae_min:.3f}) | {b / vae_s:.1f} | timed in full |")
    print(f"| pixel model | {ar_s:.3f} ({ar_min:.3f}) | {b / ar_s:.1f} | timed in full |")
    print(
        f"| pixel model, naive sampler | ~{naive_s:.0f} | {b / naive_s:.3f} | **extrapolated**: "
        f"{FLAGS.naive_passes} of 3072 passes timed ({naive_part:.3f} s) |"
    )
    print()
    print(
        f"Ratio (VAE images/s over pixel-model images/s): {ar_s / vae_s:.1f}x median, "
        f"{ar_min / vae_min:.1f}x min; with the naive sampler ~{naive_s / vae_s:.0f}x"
    )


if __name__ == "__main__":
    app.run(main)
