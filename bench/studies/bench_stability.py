"""Does the ResNet VAE survive a large learning rate? Affine or gated IAF, clipped or not.

Trains `tfp_iaf.vae.ResNetVAE` (CIFAR-10's shape, 32x32x3) for `--steps` Adamax steps for each
`--iaf` kind, `--clip_norm` (0: off) and seed, and prints one row per run: the first step whose
loss is not finite (if any), the first loss and the last finite one. With `--probe`, the first
diverging step is replayed layer by layer on the weights it started from, with its noise: the
largest |z| and |h| each stochastic layer produced, which shows where the blow-up begins.

Data: CIFAR-10 cannot be downloaded here, so the images are random 32x32 crops of the natural
photograph that ships with matplotlib (`grace_hopper.jpg`): real image statistics, no download.

    python -m bench.studies.bench_stability --learning_rate=0.01 --iaf=gated,affine --clip_norm=0 \
        --seeds=0,1,2,3,4,5 --probe

Results and the commands: docs/benchmarks_stability.md.
"""

from __future__ import annotations

import time

import matplotlib.cbook
import matplotlib.image
import numpy as np
import tensorflow as tf
from absl import app, flags

import vae_harness
from bench import resnet_runs
from tfp_iaf import vae

flags.DEFINE_float("learning_rate", 0.01, "Adamax learning rate.")
flags.DEFINE_list("clip_norm", ["0", "1"], "Global gradient-norm clips to compare (0: off).")
flags.DEFINE_integer("steps", 100, "Training steps per run.")
flags.DEFINE_integer("hidden_size", 64, "ResNet channels.")
flags.DEFINE_integer("z_size", 32, "Latent channels per layer.")
flags.DEFINE_integer("iaf_steps", 1, "IAF steps per layer (0: diagonal posterior).")
flags.DEFINE_list("iaf", ["affine"], "IAF step kinds to compare: affine, gated.")
flags.DEFINE_integer("batch_size", 32, "Images per step.")
flags.DEFINE_bool("probe", False, "Replay the first diverging step layer by layer.")
flags.DEFINE_list(
    "seeds", ["0"], "Seeds of the model and of the crops: one run per seed and clip."
)
FLAGS = flags.FLAGS


def crops(batch_size: int, seed: int):
    """An endless stream of `[batch, 32, 32, 3]` uint8 crops of matplotlib's sample photo."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = np.asarray(matplotlib.image.imread(f, format="jpg"), np.uint8)
    rng = np.random.default_rng(seed)
    while True:
        rows = rng.integers(0, photo.shape[0] - 32, batch_size)
        cols = rng.integers(0, photo.shape[1] - 32, batch_size)
        yield tf.constant(
            np.stack([photo[r : r + 32, c : c + 32] for r, c in zip(rows, cols, strict=True)])
        )


def probe(model: vae.ResNetVAE, x: tf.Tensor, step: int, seed: int) -> None:
    """Prints, layer by layer from the top, the largest |z| and |h| of the pass at `x`."""
    # The noise of that training step: `train_step`'s seed, then one fold per layer.
    seed = tf.random.experimental.stateless_fold_in(tf.constant([seed, step]), 0)
    h = model.x_enc(tf.cast(vae.pixels_to_unit(x), model.compute_dtype))
    ups = []
    for block in model.blocks:
        h, terms = block.up(h)
        ups.append(terms)
    h = tf.broadcast_to(model.h_top, [x.shape[0], *model.top_shape])
    for i in reversed(range(len(model.blocks))):
        z0_scale = float(tf.reduce_max(tf.exp(ups[i][1])))
        h, out = model.blocks[i].down(h, ups[i], tf.random.experimental.stateless_fold_in(seed, i))
        print(
            f"    {model.blocks[i].name}: max |z| {float(tf.reduce_max(tf.abs(out.z))):.3g}"
            f" (bottom-up posterior scale up to {z0_scale:.3g}),"
            f" max |h| after it {float(tf.reduce_max(tf.abs(h))):.3g}"
        )


def run(gated: bool, clip_norm: float | None, seed: int) -> None:
    model = resnet_runs.make_model(
        next(crops(FLAGS.batch_size, seed + 1)),
        seed=seed,
        optimizer=vae_harness.make_optimizer(FLAGS.learning_rate, None, clip_norm),
        hidden_size=FLAGS.hidden_size,
        z_size=FLAGS.z_size,
        iaf_steps=FLAGS.iaf_steps,
        iaf_gated=gated,
    )
    variables = model.trainable_variables
    first_bad, first_loss, loss, start = None, float("nan"), float("nan"), time.time()
    before = [v.numpy() for v in variables]  # the weights each step starts from
    train = resnet_runs.train_steps(model, crops(FLAGS.batch_size, seed + 2), FLAGS.steps)
    for step, x, value in train:
        if not np.isfinite(value):
            first_bad = step
            if FLAGS.probe:
                for v, weights in zip(variables, before, strict=True):
                    v.assign(weights)
                print(f"  the pass of step {first_bad}, from the top:")
                probe(model, x, step - 1, seed)  # the step's 0-based optimizer iteration
            break
        loss = value
        if step == 1:
            first_loss = loss
        before = [v.numpy() for v in variables]
    seconds = time.time() - start
    verdict = f"non-finite at step {first_bad}" if first_bad else "finite"
    print(
        f"| {'gated' if gated else 'affine'} | {clip_norm or 'off'} | {seed} | {verdict}"
        f" | {first_loss:.3f} | {loss:.3f} | {seconds:.0f} |",
        flush=True,
    )


def main(argv):
    del argv
    print(
        f"ResNetVAE hidden {FLAGS.hidden_size}, z {FLAGS.z_size}, IAF steps {FLAGS.iaf_steps},"
        f" batch {FLAGS.batch_size}, Adamax lr {FLAGS.learning_rate}, {FLAGS.steps} steps"
    )
    print("| IAF | clip_norm | seed | loss | first loss (bits/dim) | last finite loss | seconds |")
    print("|---|---|---|---|---|---|---|")
    for kind in FLAGS.iaf:
        if kind not in ("affine", "gated"):
            raise app.UsageError(f"--iaf takes affine and gated; got {kind!r}")
        for clip in FLAGS.clip_norm:
            for seed in FLAGS.seeds:
                run(kind == "gated", float(clip) or None, int(seed))


if __name__ == "__main__":
    app.run(main)
