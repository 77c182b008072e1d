"""Binary MNIST and CIFAR-10 loading on tfds mock data (never the network)."""

import socket
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

import vae_harness as harness
from vae_harness import data


@pytest.mark.parametrize("name", ["binarized_mnist", "mnist"])
def test_batches_are_binary_float_images(name, tmp_path):
    with tfds.testing.mock_data(num_examples=7):
        ds, n = harness.load_mnist(name, "test", 3, data_dir=str(tmp_path))
        batches = [b.numpy() for b in ds]
    assert n == 10_000  # the split's size as tfds reports it
    assert [b.shape for b in batches] == [(3, 28, 28, 1)] * 2 + [(1, 28, 28, 1)]
    values = np.unique(np.concatenate(batches))
    assert values.dtype == np.float32 and set(values) <= {0.0, 1.0} and len(values) == 2


def test_dynamic_binarization_fixed_for_evaluation_fresh_for_training(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        test, _ = harness.load_mnist("mnist", "test", 4, data_dir=str(tmp_path), seed=1)
        first, second = (next(iter(test)).numpy() for _ in range(2))
        train, _ = harness.load_mnist(
            "mnist", "train", 4, data_dir=str(tmp_path), repeat=True, seed=1
        )
        it = iter(train)
        epoch1, epoch2 = next(it).numpy(), next(it).numpy()
    np.testing.assert_array_equal(first, second)  # same binarization on every pass
    assert not np.array_equal(epoch1, epoch2)  # same images, re-binarized each epoch


def test_static_binarization_is_the_same_every_epoch(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        train, _ = harness.load_mnist("binarized_mnist", "train", 4, str(tmp_path), repeat=True)
        it = iter(train)
        np.testing.assert_array_equal(next(it).numpy(), next(it).numpy())


def test_drop_remainder_and_slices(tmp_path):
    with tfds.testing.mock_data(num_examples=5):
        ds, _ = harness.load_mnist(
            "binarized_mnist", "validation", 2, str(tmp_path), drop_remainder=True
        )
        assert [b.shape[0] for b in ds] == [2, 2]


def test_missing_data_says_how_to_point_data_dir(tmp_path):
    with pytest.raises(
        harness.DatasetUnavailableError, match=r"download=False.*Point `--data_dir`"
    ):
        harness.load_mnist("binarized_mnist", "test", 10, data_dir=str(tmp_path), download=False)


def test_failed_download_says_how_to_point_data_dir(tmp_path, monkeypatch):
    calls = []

    def unreachable(*args, download, **kwargs):
        calls.append(download)
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(tfds, "load", unreachable)
    monkeypatch.setattr(data, "_network_reachable", lambda host: True)
    with pytest.raises(
        harness.DatasetUnavailableError, match=r"download failed.*Point `--data_dir`.*unreachable"
    ):
        harness.load_mnist("mnist", "train", 10, data_dir=str(tmp_path), download=True)
    assert calls == [False, True]  # the prepared copy first, then the download


def test_download_without_network_fails_fast_without_calling_tfds_download(tmp_path, monkeypatch):
    calls, probed = [], []

    def not_prepared(*args, download, **kwargs):
        calls.append(download)
        raise AssertionError("Dataset binarized_mnist: could not find data in " + str(tmp_path))

    monkeypatch.setattr(tfds, "load", not_prepared)
    monkeypatch.setattr(data, "_network_reachable", lambda host: probed.append(host) or False)
    start = time.monotonic()
    with pytest.raises(
        harness.DatasetUnavailableError,
        match=r"download failed.*Point `--data_dir`.*could not connect to "
        r"www\.cs\.toronto\.edu:443 \(limit 5 s\), so no download was attempted",
    ):
        harness.load_mnist("binarized_mnist", "test", 10, data_dir=str(tmp_path), download=True)
    assert time.monotonic() - start < 2.0
    assert calls == [False] and probed == ["www.cs.toronto.edu"]


def test_prepared_dataset_with_download_never_probes_the_network(tmp_path, monkeypatch):
    def no_network(host):
        raise AssertionError("probed the network for a prepared dataset")

    monkeypatch.setattr(data, "_network_reachable", no_network)
    with tfds.testing.mock_data(num_examples=3):
        ds, _ = harness.load_mnist("mnist", "test", 3, data_dir=str(tmp_path), download=True)
        assert next(iter(ds)).shape == (3, 28, 28, 1)


def test_network_check_is_bounded_by_its_timeout(monkeypatch):
    def refused(address, timeout):
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    assert data._network_reachable("example.org", timeout=0.5) is False

    def hangs(address, timeout):
        time.sleep(3.0)
        raise TimeoutError

    monkeypatch.setattr(socket, "create_connection", hangs)
    start = time.monotonic()
    assert data._network_reachable("example.org", timeout=0.2) is False
    assert time.monotonic() - start < 1.0


def test_tfds_autocache_is_off_so_partial_reads_warn_nothing(tmp_path, monkeypatch):
    # tfds caches small splits on their first pass; reading one batch (or stopping training
    # mid-epoch) then discards the half-filled cache with a warning. The loader opts out.
    seen, load = [], tfds.load

    def spy(*args, **kwargs):
        seen.append(kwargs["read_config"].try_autocache)
        return load(*args, **kwargs)

    monkeypatch.setattr(tfds, "load", spy)
    with tfds.testing.mock_data(num_examples=4):
        ds, _ = harness.load_mnist("binarized_mnist", "train", 2, str(tmp_path), repeat=True)
    assert seen == [False]
    assert b"CacheDataset" not in ds._as_serialized_graph().numpy()


@pytest.mark.parametrize(
    "args, match",
    [
        (("fashion_mnist", "test", 10), r"`name` must be one of .*; got 'fashion_mnist'"),
        (("mnist", "validation", 10), r"`split` of mnist must be one of .*; got 'validation'"),
        (("mnist", "test", 0), r"`batch_size` must be a positive integer; got 0"),
    ],
)
def test_argument_errors(args, match):
    with pytest.raises(ValueError, match=match):
        harness.load_mnist(*args)


def test_cifar10_batches_are_uint8_images(tmp_path):
    with tfds.testing.mock_data(num_examples=5):
        ds, n = harness.load_cifar10("test", 2, str(tmp_path))
        batches = [b.numpy() for b in ds]
        train, n_train = harness.load_cifar10(
            "train", 2, str(tmp_path), shuffle=True, repeat=True, drop_remainder=True
        )
        repeated = [b.numpy() for b in train.take(4)]
    assert (n, n_train) == (10_000, 50_000)  # the splits' sizes as tfds reports them
    assert [b.shape for b in batches] == [(2, 32, 32, 3)] * 2 + [(1, 32, 32, 3)]
    assert all(b.dtype == np.uint8 for b in batches) and np.ptp(np.concatenate(batches)) > 0
    assert [b.shape for b in repeated] == [(2, 32, 32, 3)] * 4  # past the 5 examples


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match=r"`name` must be one of .*'cifar10'\); got 'svhn'"):
        harness.load_dataset("svhn", "test", 10)


def test_cifar10_errors(tmp_path):
    with pytest.raises(
        ValueError, match=r"`split` of cifar10 must be one of .*; got 'validation'"
    ):
        harness.load_cifar10("validation", 10)
    with pytest.raises(harness.DatasetUnavailableError, match=r"`cifar10`.*Point `--data_dir`"):
        harness.load_cifar10("test", 10, data_dir=str(tmp_path))
