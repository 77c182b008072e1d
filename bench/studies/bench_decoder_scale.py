"""Does a data-dependent start of the decoder's log-scale make a short ResNet VAE run informative?

Trains `tfp_iaf.vae.ResNetVAE` (CIFAR-10's shape, 32x32x3) with Adamax at `--learning_rate` for
`--steps` steps, once per `--decoder_scale_init` (`data`: matched to the first batch by
`ResNetVAE.initialize`; `zero`: the authors' `log s = 0`) and seed, the same seeds, data and
budget for both, and prints one table row per `--eval_every` steps: the held-out ELBO in bits/dim
(one posterior sample per image, a fixed seed, raw weights; a uniform model scores 8) and the
decoder's log-scale, mean over the seeds.

Data: CIFAR-10 cannot be downloaded here, so the images are random 32x32 crops of the natural
photograph that ships with matplotlib (`grace_hopper.jpg`), training and held-out crops drawn
with different seeds from the same photograph.

    python -m bench.studies.bench_decoder_scale --steps=150 --eval_every=25 --seeds=0,1

Results and the command: docs/benchmarks_decoder_scale.md.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import vae_harness
from bench import resnet_runs
from bench.photos import grace_hopper_crops
from tfp_iaf.vae.resnet_vae import DECODER_SCALE_INITS

flags.DEFINE_float("learning_rate", 2e-3, "Adamax learning rate (the example's default).")
flags.DEFINE_integer("steps", 150, "Training steps per run.")
flags.DEFINE_integer("eval_every", 25, "Steps between held-out evaluations.")
flags.DEFINE_integer("hidden_size", 32, "ResNet channels.")
flags.DEFINE_integer("z_size", 16, "Latent channels per layer.")
flags.DEFINE_integer("batch_size", 16, "Images per step.")
flags.DEFINE_integer("num_test", 64, "Held-out crops.")
flags.DEFINE_list("inits", ["zero", "data"], "decoder_scale_init values to compare.")
flags.DEFINE_list("seeds", ["0"], "Seeds of the model and of the crops: one run per seed.")
FLAGS = flags.FLAGS


def run(init: str, seed: int, test: tf.Tensor) -> dict[int, tuple[float, float]]:
    """`{step: (held-out ELBO bits/dim, decoder log-scale)}` of one training run."""
    data = grace_hopper_crops(FLAGS.steps * FLAGS.batch_size, 1000 + seed)
    model = resnet_runs.make_model(
        data[: FLAGS.batch_size],
        seed=seed,
        optimizer=vae_harness.make_optimizer(FLAGS.learning_rate, None),
        hidden_size=FLAGS.hidden_size,
        z_size=FLAGS.z_size,
        decoder_scale_init=init,
    )
    score = resnet_runs.elbo_bits(model, seed)

    def evaluate() -> tuple[float, float]:
        return score(test), float(model.dec_log_scale)

    curve = {0: evaluate()}
    train = resnet_runs.train_steps(
        model, resnet_runs.batches(data, FLAGS.batch_size), FLAGS.steps
    )
    for step, _, _ in train:
        if step % FLAGS.eval_every == 0 or step == FLAGS.steps:
            curve[step] = evaluate()
    return curve


def main(argv):
    del argv
    for init in FLAGS.inits:
        if init not in DECODER_SCALE_INITS:
            raise app.UsageError(f"--inits takes {DECODER_SCALE_INITS}; got {init!r}")
    seeds = [int(s) for s in FLAGS.seeds]
    test = tf.constant(grace_hopper_crops(FLAGS.num_test, 99))
    print(
        f"ResNetVAE hidden {FLAGS.hidden_size}, z {FLAGS.z_size}, depth 2 x 2 blocks, 1 IAF step,"
        f" batch {FLAGS.batch_size}, Adamax lr {FLAGS.learning_rate}, {FLAGS.steps} steps,"
        f" seeds {seeds}; held-out: {FLAGS.num_test} crops, ELBO bits/dim (uniform: 8.000)"
    )
    curves, start = {}, time.time()
    for init in FLAGS.inits:
        runs = [run(init, seed, test) for seed in seeds]
        curves[init] = {
            step: tuple(np.mean([r[step][i] for r in runs]) for i in range(2)) for step in runs[0]
        }
        print(f"  {init}: per-seed final bits/dim {[round(r[max(r)][0], 3) for r in runs]}")
    header = " | ".join(f"{i} bits/dim | {i} log-scale" for i in FLAGS.inits)
    print(f"| step | {header} |")
    print("|---:|" + "---:|" * (2 * len(FLAGS.inits)))
    for step in curves[FLAGS.inits[0]]:
        cells = " | ".join(
            f"{curves[i][step][0]:.3f} | {curves[i][step][1]:.3f}" for i in FLAGS.inits
        )
        print(f"| {step} | {cells} |")
    print(f"({time.time() - start:.0f} s, log-scale: natural log of the logistic's scale)")


if __name__ == "__main__":
    app.run(main)
