"""The examples' datasets through TensorFlow Datasets: binary MNIST and CIFAR-10.

Binary MNIST (`load_mnist`), static (Larochelle) or dynamic binarization:

- `binarized_mnist`: the fixed binarization of Larochelle & Murray (2011), splits
  train 50,000 / validation 10,000 / test 10,000; the set of the IAF paper's -79.88 nats.
- `mnist`: grey-level MNIST, binarized on the fly, `x ~ Bernoulli(pixel / 255)`; splits
  train 60,000 / test 10,000. Training batches are re-binarized every epoch; evaluation splits
  use one fixed binarization (given `seed`), so test numbers are reproducible.

Both yield float32 images `[batch, 28, 28, 1]` in {0, 1}. CIFAR-10 (`load_cifar10`) yields its
uint8 images `[batch, 32, 32, 3]` unchanged; splits train 50,000 / test 10,000.

All of them load through `load_dataset`: nothing is downloaded unless `download=True`; a
missing or unreachable dataset ends with an error saying how to point `data_dir` (the examples'
`--data_dir`) at a prepared copy. A download is only attempted for a dataset that is not
already prepared under `data_dir`, and only after a connection to its server opens within a few
seconds (tfds itself retries for minutes without network).

tfds's automatic in-memory cache is turned off: it caches a small split while the first pass
reads it, and the examples read splits partially (one batch to build a model, training that
stops mid-epoch), which discards the half-filled cache with a warning ("calling iterator did not
fully read the dataset being cached") and gains nothing; decoding the images again every epoch
costs little next to the model.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

from tfp_iaf import _checks

__all__ = [
    "DATASETS",
    "DatasetUnavailableError",
    "IMAGE_SHAPE",
    "load_cifar10",
    "load_dataset",
    "load_mnist",
]

IMAGE_SHAPE = (28, 28, 1)
DATASETS = ("binarized_mnist", "mnist")
# Every split of every dataset, with its tfds size (used when a (mock) builder reports none).
_NUM_EXAMPLES = {
    "binarized_mnist": {"train": 50_000, "validation": 10_000, "test": 10_000},
    "mnist": {"train": 60_000, "test": 10_000},
    "cifar10": {"train": 50_000, "test": 10_000},
}


# The server each dataset's tfds builder downloads from, probed before a download.
_DOWNLOAD_HOSTS = {
    "binarized_mnist": "www.cs.toronto.edu",
    "mnist": "storage.googleapis.com",
    "cifar10": "www.cs.toronto.edu",
}
_NETWORK_TIMEOUT_S = 5.0


class DatasetUnavailableError(RuntimeError):
    """The dataset is neither prepared under `data_dir` nor downloadable."""


def _unavailable_message(name: str, data_dir: str | None, download: bool, error: Exception) -> str:
    where = data_dir if data_dir is not None else "~/tensorflow_datasets (the tfds default)"
    how = (
        "the download failed (no network?)"
        if download
        else "download=False, so nothing was fetched"
    )
    retry = (
        "rerun with `--download` once the network is reachable"
        if download
        else "pass `--download`"
    )
    return (
        f"Dataset `{name}` is not available under data_dir={where!r}: {how}. Point `--data_dir` "
        f"(the `data_dir` argument) at a directory holding a prepared copy, i.e. one containing "
        f"`{name}/<version>/` as written by `tfds.builder({name!r}).download_and_prepare()` on a "
        f"machine with network access, or {retry}. "
        f"({type(error).__name__}: {error})"
    )


def _network_reachable(host: str, port: int = 443, timeout: float = _NETWORK_TIMEOUT_S) -> bool:
    """Whether a TCP connection to `host:port` opens within `timeout` seconds (DNS included)."""
    result = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # A thread, because name resolution ignores socket timeouts and can hang on its own.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _load(name: str, split: str, data_dir: str | None, download: bool, shuffle: bool):
    return tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        download=download,
        with_info=True,
        shuffle_files=shuffle,
        read_config=tfds.ReadConfig(try_autocache=False),
    )


def _load_or_download(name: str, split: str, data_dir: str | None, download: bool, shuffle: bool):
    """`tfds.load`, downloading only what is not prepared, and only when the server answers."""
    unavailable = (AssertionError, OSError, tfds.download.DownloadError, tf.errors.NotFoundError)
    try:
        return _load(name, split, data_dir, download=False, shuffle=shuffle)
    except unavailable as e:
        if not download:
            raise DatasetUnavailableError(_unavailable_message(name, data_dir, False, e)) from e
    host = _DOWNLOAD_HOSTS[name]
    if not _network_reachable(host):
        error = ConnectionError(
            f"could not connect to {host}:443 (limit {_NETWORK_TIMEOUT_S:g} s), so no "
            "download was attempted"
        )
        raise DatasetUnavailableError(_unavailable_message(name, data_dir, True, error))
    try:
        return _load(name, split, data_dir, download=True, shuffle=shuffle)
    except unavailable as e:
        raise DatasetUnavailableError(_unavailable_message(name, data_dir, True, e)) from e


def _binarize_static(dataset: tf.data.Dataset, seed: int, rerandomize: bool) -> tf.data.Dataset:
    # Static data are already {0, 1}; any nonzero value counts as 1 (mock data are 0..255).
    return dataset.map(lambda image: tf.cast(image > 0, tf.float32))


def _binarize_dynamic(dataset: tf.data.Dataset, seed: int, rerandomize: bool) -> tf.data.Dataset:
    # Training data are re-binarized every epoch; evaluation data once, fixed by `seed`.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=rerandomize).batch(2)

    def binarize(image, pair):
        probs = tf.cast(image, tf.float32) / 255.0
        u = tf.random.stateless_uniform(tf.shape(probs), seed=tf.cast(pair, tf.int32))
        return tf.cast(u < probs, tf.float32)

    return tf.data.Dataset.zip((dataset, seeds)).map(binarize, num_parallel_calls=tf.data.AUTOTUNE)


def _uint8_images(dataset: tf.data.Dataset, seed: int, rerandomize: bool) -> tf.data.Dataset:
    return dataset


# What each dataset's images go through before batching.
_PREPROCESS = {
    "binarized_mnist": _binarize_static,
    "mnist": _binarize_dynamic,
    "cifar10": _uint8_images,
}


def load_dataset(
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
    """Loads one split of an example's dataset as batches of images.

    Args:
      name: "binarized_mnist" (static binarization), "mnist" (dynamic binarization) or
        "cifar10".
      split: a split of the dataset ("train", "validation" (binarized_mnist only), "test"),
        optionally with a tfds slice, e.g. "train[:10%]".
      batch_size: examples per batch.
      data_dir: the tfds data directory; None for the tfds default.
      download: whether tfds may download and prepare the dataset when it is not prepared
        under `data_dir` (attempted only if its server answers within 5 s).
      shuffle: shuffle examples (reshuffled every epoch).
      repeat: repeat forever (for `fit` with `steps_per_epoch`).
      drop_remainder: drop a last, smaller batch.
      seed: seed of the shuffle and of the dynamic binarization.

    Returns:
      `(dataset, num_examples)`: batches of images (MNIST: float32 `[batch, 28, 28, 1]` in
      {0, 1}; CIFAR-10: uint8 `[batch, 32, 32, 3]`), and the number of examples in the split
      (before repeating; the full split's size for a sliced split).

    Raises:
      ValueError: an unknown `name` or split, or a non-positive `batch_size`.
      DatasetUnavailableError: the dataset is not under `data_dir` and cannot be downloaded.
    """
    if name not in _NUM_EXAMPLES:
        raise ValueError(f"`name` must be one of {tuple(_NUM_EXAMPLES)}; got {name!r}")
    splits = tuple(_NUM_EXAMPLES[name])
    base_split = split.split("[", 1)[0]
    if base_split not in splits:
        raise ValueError(f"`split` of {name} must be one of {splits}; got {split!r}")
    batch_size = _checks.positive_int("batch_size", batch_size)
    dataset, info = _load_or_download(name, split, data_dir, download, shuffle)
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
    dataset = _PREPROCESS[name](dataset, seed, rerandomize=shuffle or repeat)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE), int(num_examples)


def load_mnist(
    name: str, split: str, batch_size: int, data_dir: str | None = None, **options: Any
) -> tuple[tf.data.Dataset, int]:
    """Loads one split of binary MNIST as batches of float32 images `[batch, 28, 28, 1]`.

    Args:
      name: "binarized_mnist" (static binarization) or "mnist" (dynamic binarization).
      split: "train", "validation" (static only) or "test", optionally with a tfds slice.
      batch_size: examples per batch.
      data_dir: the tfds data directory; None for the tfds default.
      **options: `download`, `shuffle`, `repeat`, `drop_remainder`, `seed`, as for
        `load_dataset`.

    Returns:
      `(dataset, num_examples)` as for `load_dataset`: images in {0, 1}.

    Raises:
      ValueError: an unknown `name` or split, or a non-positive `batch_size`.
      DatasetUnavailableError: the dataset is not under `data_dir` and cannot be downloaded.
    """
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {DATASETS}; got {name!r}")
    return load_dataset(name, split, batch_size, data_dir, **options)


def load_cifar10(
    split: str, batch_size: int, data_dir: str | None = None, **options: Any
) -> tuple[tf.data.Dataset, int]:
    """Loads one split of CIFAR-10 as batches of uint8 images `[batch, 32, 32, 3]` (0..255).

    Args:
      split: "train" or "test", optionally with a tfds slice, e.g. "test[:1000]".
      batch_size: examples per batch.
      data_dir: the tfds data directory; None for the tfds default.
      **options: `download`, `shuffle`, `repeat`, `drop_remainder`, `seed`, as for
        `load_dataset`.

    Returns:
      `(dataset, num_examples)` as for `load_dataset`.

    Raises:
      ValueError: an unknown split, or a non-positive `batch_size`.
      DatasetUnavailableError: CIFAR-10 is not under `data_dir` and cannot be downloaded.
    """
    return load_dataset("cifar10", split, batch_size, data_dir, **options)
