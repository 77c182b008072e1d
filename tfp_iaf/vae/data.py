"""Binary MNIST through TensorFlow Datasets: static (Larochelle) and dynamic binarization.

- `binarized_mnist`: the fixed binarization of Larochelle & Murray (2011), splits
  train 50,000 / validation 10,000 / test 10,000; the set of the IAF paper's -79.88 nats.
- `mnist`: grey-level MNIST, binarized on the fly, `x ~ Bernoulli(pixel / 255)`; splits
  train 60,000 / test 10,000. Training batches are re-binarized every epoch; evaluation splits
  use one fixed binarization (given `seed`), so test numbers are reproducible.

Both yield float32 images `[batch, 28, 28, 1]` in {0, 1}. Nothing is downloaded unless
`download=True`; a missing or unreachable dataset ends with an error saying how to point
`data_dir` (the examples' `--data_dir`) at a prepared copy.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

__all__ = ["DATASETS", "DatasetUnavailableError", "IMAGE_SHAPE", "load_mnist"]

IMAGE_SHAPE = (28, 28, 1)
DATASETS = ("binarized_mnist", "mnist")
_SPLITS = {"binarized_mnist": ("train", "validation", "test"), "mnist": ("train", "test")}
# The tfds sizes, used when a (mock) builder reports none.
_NUM_EXAMPLES = {
    "binarized_mnist": {"train": 50_000, "validation": 10_000, "test": 10_000},
    "mnist": {"train": 60_000, "test": 10_000},
}


class DatasetUnavailableError(RuntimeError):
    """The dataset is neither prepared under `data_dir` nor downloadable."""


def _unavailable_message(name: str, data_dir: str | None, download: bool, error: Exception) -> str:
    where = data_dir if data_dir is not None else "~/tensorflow_datasets (the tfds default)"
    how = (
        "the download failed (no network?)"
        if download
        else "download=False, so nothing was fetched"
    )
    return (
        f"Dataset `{name}` is not available under data_dir={where!r}: {how}. Point `--data_dir` "
        f"(the `data_dir` argument) at a directory holding a prepared copy, i.e. one containing "
        f"`{name}/<version>/` as written by `tfds.builder({name!r}).download_and_prepare()` on a "
        f"machine with network access, or pass `--download` to fetch it. "
        f"({type(error).__name__}: {error})"
    )


def _binarize_dynamic(dataset: tf.data.Dataset, seed: int, rerandomize: bool) -> tf.data.Dataset:
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=rerandomize).batch(2)

    def binarize(image, pair):
        probs = tf.cast(image, tf.float32) / 255.0
        u = tf.random.stateless_uniform(tf.shape(probs), seed=tf.cast(pair, tf.int32))
        return tf.cast(u < probs, tf.float32)

    return tf.data.Dataset.zip((dataset, seeds)).map(binarize, num_parallel_calls=tf.data.AUTOTUNE)


def load_mnist(
    name: str,
    split: str,
    batch_size: int,
    data_dir: str | None = None,
    *,
    download: bool = False,
    shuffle: bool = False,
    repeat: bool = False,
    drop_remainder: bool = False,
    seed: int = 0,
) -> tuple[tf.data.Dataset, int]:
    """Loads one split of binary MNIST as batches of float32 images.

    Args:
      name: "binarized_mnist" (static binarization) or "mnist" (dynamic binarization).
      split: a split of the dataset ("train", "validation" (static only), "test"), optionally
        with a tfds slice, e.g. "train[:10%]".
      batch_size: examples per batch.
      data_dir: the tfds data directory; None for the tfds default.
      download: whether tfds may download and prepare the dataset.
      shuffle: shuffle examples (reshuffled every epoch).
      repeat: repeat forever (for `fit` with `steps_per_epoch`).
      drop_remainder: drop a last, smaller batch.
      seed: seed of the shuffle and of the dynamic binarization.

    Returns:
      `(dataset, num_examples)`: batches `[batch, 28, 28, 1]` in {0, 1}, and the number of
      examples in the split (before repeating; the full split's size for a sliced split).

    Raises:
      ValueError: an unknown `name` or split, or a non-positive `batch_size`.
      DatasetUnavailableError: the dataset is not under `data_dir` and cannot be downloaded.
    """
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {DATASETS}; got {name!r}")
    base_split = split.split("[", 1)[0]
    if base_split not in _SPLITS[name]:
        raise ValueError(f"`split` of {name} must be one of {_SPLITS[name]}; got {split!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}")
    try:
        dataset, info = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=download,
            with_info=True,
            shuffle_files=shuffle,
        )
    except (AssertionError, OSError, tfds.download.DownloadError, tf.errors.NotFoundError) as e:
        raise DatasetUnavailableError(_unavailable_message(name, data_dir, download, e)) from e
    split_info = info.splits[base_split] if base_split in info.splits else None
    num_examples = (
        split_info.num_examples
        if split_info is not None and split_info.num_examples
        else _NUM_EXAMPLES[name][base_split]
    )
    dataset = dataset.map(lambda ex: ex["image"])
    if shuffle:
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if name == "mnist":
        # Training data are re-binarized every epoch; evaluation data once, fixed by `seed`.
        dataset = _binarize_dynamic(dataset, seed, rerandomize=shuffle or repeat)
    else:
        # Static data are already {0, 1}; any nonzero value counts as 1 (mock data are 0..255).
        dataset = dataset.map(lambda image: tf.cast(image > 0, tf.float32))
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE), int(num_examples)
