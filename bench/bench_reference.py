"""Our IAF initialisation and optimiser against the authors' (openai/iaf), at an equal budget.

Trains `tfp_iaf.vae.ResNetVAE` (CIFAR-10's shape, 32x32x3) four times per seed, the same seeds,
batches and step budget for each:

- `iaf_init`: `default` (ours) or `reference` (the authors' AR networks: outputs times 0.1,
  weight-normed masked convolutions data-initialised by `ResNetVAE.initialize`, the context added
  without a projection, unbounded affine log-scales);
- optimiser: `adamax` on the batch-mean bits/dim (ours: Keras Adamax, bias-corrected, eps 1e-7)
  or `reference` on the batch's sum in nats (the authors': no bias correction, eps 1e-8 inside
  the running maximum).

and prints one table row per combination: the ELBO in bits/dim (one posterior sample per image, a
fixed seed, raw weights, no averaging) on 64 of the training crops and on 64 held-out crops at
the end, the training steps whose loss was not finite, and the seconds per run, means over seeds.

Data: CIFAR-10 cannot be downloaded here, so the images are random 32x32 crops of the natural
photograph that ships with matplotlib (`grace_hopper.jpg`), as in bench_decoder_scale.py:
training and held-out crops drawn with different seeds from the same photograph.

    python -m bench.bench_reference --steps=200 --seeds=0,1

Results and the command: docs/benchmarks_reference.md.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
from absl import app, flags

import vae_harness
from bench import resnet_runs
from bench.photos import grace_hopper_crops
from tfp_iaf import vae

flags.DEFINE_float("learning_rate", 2e-3, "Adamax learning rate (the example's default).")
flags.DEFINE_integer("steps", 200, "Training steps per run.")
flags.DEFINE_integer("hidden_size", 32, "ResNet channels.")
flags.DEFINE_integer("z_size", 16, "Latent channels per layer.")
flags.DEFINE_integer("batch_size", 16, "Images per step.")
flags.DEFINE_integer("num_eval", 64, "Training and held-out crops scored at the end.")
flags.DEFINE_bool("gated", False, "Gated IAF steps (default: affine, the authors' kind).")
flags.DEFINE_list("seeds", ["0"], "Seeds of the model and of the crops: one run per seed.")
FLAGS = flags.FLAGS

# (make_optimizer kind, ResNetVAE loss_units): ours, and the authors'.
OPTIMIZERS = {"adamax": ("adamax", "bits_per_dim"), "reference": ("reference", "nats_sum")}


def run(iaf_init: str, optimizer: str, seed: int, test: np.ndarray) -> dict[str, float]:
    """One training run: final train and held-out bits/dim, non-finite steps, seconds."""
    kind, loss_units = OPTIMIZERS[optimizer]
    data = grace_hopper_crops(FLAGS.steps * FLAGS.batch_size, 1000 + seed)
    start = time.time()
    model = resnet_runs.make_model(
        data[: FLAGS.batch_size],
        seed=seed,
        optimizer=vae_harness.make_optimizer(FLAGS.learning_rate, None, kind=kind),
        hidden_size=FLAGS.hidden_size,
        z_size=FLAGS.z_size,
        iaf_gated=FLAGS.gated,
        iaf_init=iaf_init,
        loss_units=loss_units,
    )
    train = resnet_runs.train_steps(
        model, resnet_runs.batches(data, FLAGS.batch_size), FLAGS.steps
    )
    non_finite = sum(not math.isfinite(loss) for _, _, loss in train)
    score = resnet_runs.elbo_bits(model, seed)
    return {
        "train": score(data[: FLAGS.num_eval]),
        "test": score(test),
        "nan": non_finite,
        "seconds": time.time() - start,
    }


def main(argv):
    del argv
    seeds = [int(s) for s in FLAGS.seeds]
    test = grace_hopper_crops(FLAGS.num_eval, 99)
    steps = "gated" if FLAGS.gated else "affine"
    print(
        f"ResNetVAE hidden {FLAGS.hidden_size}, z {FLAGS.z_size}, depth 2 x 2 blocks, 1 {steps}"
        f" IAF step, batch {FLAGS.batch_size}, lr {FLAGS.learning_rate}, {FLAGS.steps} steps,"
        f" seeds {seeds}; ELBO bits/dim on {FLAGS.num_eval} training and {FLAGS.num_eval}"
        " held-out crops (uniform: 8.000)"
    )
    rows, start = [], time.time()
    for iaf_init, optimizer in itertools.product(vae.IAF_INITS, OPTIMIZERS):
        runs = [run(iaf_init, optimizer, seed, test) for seed in seeds]
        per_seed = [(round(r["train"], 3), round(r["test"], 3)) for r in runs]
        print(f"  {iaf_init} / {optimizer}: per-seed (train, held-out) {per_seed}", flush=True)
        rows.append((iaf_init, optimizer, runs))
    print(
        "| iaf_init | optimizer (loss) | train bits/dim | held-out bits/dim | NaN steps | s/run |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for iaf_init, optimizer, runs in rows:
        kind, units = OPTIMIZERS[optimizer]
        mean = {k: np.mean([r[k] for r in runs]) for k in ("train", "test", "seconds")}
        print(
            f"| {iaf_init} | {kind} ({units}) | {mean['train']:.3f} | {mean['test']:.3f} |"
            f" {sum(r['nan'] for r in runs)} | {mean['seconds']:.0f} |"
        )
    print(f"({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
    app.run(main)
