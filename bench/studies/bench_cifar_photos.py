r"""The CIFAR-10 example, unchanged, on 32x32 crops of real photographs: does a short run inform?

CIFAR-10 cannot be downloaded here, so this runs `examples/cifar10_vae.py` (its flags, its
defaults, its training and evaluation) with `tfds.load("cifar10")` answered by crops of natural
photographs: the colour photos that ship with scikit-image (astronaut, chelsea, coffee, rocket,
motorcycle_left) and matplotlib (grace_hopper). Training crops come from the left
`--train_fraction` of every photo's width, held-out test crops from the rest, so no test pixel is
seen in training. Crops are at the photos' own resolution, so they are smoother than CIFAR's
downsampled scenes: the bits/dim here are not CIFAR-10 numbers.

    pip install -e ".[bench]"   # scikit-image, for its sample photographs
    python -m bench.studies.bench_cifar_photos --num_steps=400 --model_dir=/tmp/photos \
        --output=docs/benchmarks_cifar_photos.md

Every example flag can be given (e.g. `--decoder_scale_init=zero` for the authors' start); the
page records the flags that differ from the example's defaults, the results and the command.
"""

from __future__ import annotations

import os
import shlex
import sys
import time

import matplotlib.cbook
import matplotlib.image
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags

import vae_harness
from bench import report as report_lib

example = report_lib.load_example("cifar10_vae")  # defines the example's flags

flags.DEFINE_float("train_fraction", 0.75, "Training crops from this left part of each photo.")
flags.DEFINE_integer("num_train_crops", 20_000, "Distinct training crops (then repeated).")
flags.DEFINE_integer("num_test_crops", 256, "Held-out test crops.")
flags.DEFINE_string("output", None, "Markdown file to write the results to.")
flags.DEFINE_string("machine", "2-core CPU container, no GPU", "Machine, for the report.")
FLAGS = flags.FLAGS

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")


def photos() -> list[np.ndarray]:
    """The natural colour photographs, uint8 `[H, W, 3]`, each at least 300 pixels a side."""
    import skimage.io  # the bench extra; only the photographs it ships are read

    data = os.path.join(os.path.dirname(os.path.dirname(skimage.io.__file__)), "data")
    files = {"rocket": "rocket.jpg"}
    images = [
        skimage.io.imread(os.path.join(data, files.get(n, f"{n}.png"))) for n in SKIMAGE_PHOTOS
    ]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        images.append(np.asarray(matplotlib.image.imread(f, format="jpg")))
    return [np.asarray(image[..., :3], np.uint8) for image in images]


def crops(images: list[np.ndarray], num: int, split: str, seed: int) -> np.ndarray:
    """`num` random 32x32 crops, spread evenly over `images`, from their `split` part."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num):
        image = images[i % len(images)]
        cut = int(image.shape[1] * FLAGS.train_fraction)
        lo, hi = (0, cut - 32) if split == "train" else (cut, image.shape[1] - 32)
        r = rng.integers(0, image.shape[0] - 32 + 1)
        c = rng.integers(lo, hi + 1)
        out.append(image[r : r + 32, c : c + 32])
    return np.stack(out)


def as_dataset_fn(splits: dict[str, np.ndarray]):
    """A `DatasetBuilder.as_dataset` that serves `splits` as CIFAR-10 examples."""

    def as_dataset(builder, split, **kwargs):
        del builder, kwargs
        images = splits[str(split).split("[")[0]]
        labels = np.zeros(len(images), np.int64)
        return tf.data.Dataset.from_tensor_slices(
            {"id": [str(i).encode() for i in range(len(images))], "image": images, "label": labels}
        )

    return as_dataset


def changed_flags() -> list[str]:
    """The example's flags that differ from its defaults, as `--name=value`."""
    names = [f.name for f in FLAGS.get_flags_for_module("cifar10_vae")]
    return [f"--{n}={FLAGS[n].value}" for n in names if FLAGS[n].value != FLAGS[n].default]


def report(results: dict, seconds: float) -> str:
    r = results
    return f"""## The CIFAR-10 example on crops of real photographs

- {report_lib.date_and_machine(FLAGS.machine)}; TensorFlow {tf.__version__}
  on CPU.
- Command: `python {shlex.join(sys.argv)}`
- Example flags changed from their defaults: `{" ".join(changed_flags()) or "none"}`.
- Data: {FLAGS.num_train_crops} training crops from the left {FLAGS.train_fraction:.0%} of six
  photographs ({", ".join(SKIMAGE_PHOTOS)}, grace_hopper), {r["num_test_examples"]} held-out
  crops from the rest.
- {r["steps"]} training steps in {r["train_seconds"]:.0f} s; evaluation (Polyak-averaged weights,
  k = {r["num_importance_samples"]}) {r["eval_seconds"]:.0f} s; {seconds:.0f} s in all.

| held-out metric | bits/dim |
|---|---:|
| ELBO (mean of the k log weights, averaged weights) | {r["test_elbo_bits_per_dim"]:.3f} |
| log p(x), importance sampled (k = {r["num_importance_samples"]}) | {r["test_bits_per_dim"]:.3f} |

A uniform model scores 8 bits/dim.
"""


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    images = photos()
    splits = {
        "train": crops(images, FLAGS.num_train_crops, "train", seed=1),
        "test": crops(images, FLAGS.num_test_crops, "test", seed=2),
    }
    config = example.Config.from_flags()
    start = time.time()
    with tfds.testing.mock_data(
        num_examples=len(splits["train"]), as_dataset_fn=as_dataset_fn(splits)
    ):
        results = vae_harness.run_or_exit(lambda: example.train_and_evaluate(config))
    text = report(results, time.time() - start)
    print(text)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    app.run(main)
