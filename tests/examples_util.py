"""Loading example scripts without their absl flags colliding; checking the PNGs they write."""

import contextlib
import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import flags

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The harness beside the example scripts (`vae_harness`) imports from examples/, as
# `python examples/<name>.py` has it: pytest puts it on the path (`pythonpath`), and this module
# does for a child process that imports it.
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


@contextlib.contextmanager
def loaded_example(name: str):
    """Imports `examples/<name>.py` as module `name`; on exit, removes it and its absl flags.

    Examples define flags at import, and two examples may define the same flag name (e.g.
    `--free_bits`), so each module's flags live only while its tests run.
    """
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for flag in flags.FLAGS.get_flags_for_module(name):
            delattr(flags.FLAGS, flag.name)
        sys.modules.pop(name, None)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_png(path) -> np.ndarray:
    """The pixels `[height, width, channels]` (uint8) of the PNG file at `path`."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return tf.io.decode_png(data).numpy()


def check_image_grid(
    path, num_images: int, image_shape: tuple, num_cols: int = 10, title: bool = True
) -> None:
    """`path` is `save_image_grid`'s PNG of `num_images` images `image_shape`, not blank.

    The grid has `num_cols` columns (fewer for fewer images) and a 1-pixel white line around
    every cell, magnified by a whole factor to at least 560 pixels wide; with `title`, below a
    white band of `vae_harness.images.TITLE_HEIGHT` pixels that holds dark text. Grey images (one
    channel) are written with R = G = B.
    """
    from vae_harness.images import TITLE_HEIGHT

    h, w, c = image_shape
    cols = min(num_cols, num_images)
    rows = -(-num_images // cols)
    png = decode_png(path)
    width = cols * (w + 1) + 1
    scale = png.shape[1] // width
    band = TITLE_HEIGHT if title else 0
    assert scale >= 1 and scale * width >= 560 > (scale - 1) * width, (png.shape, width)
    assert png.shape[:2] == (band + scale * (rows * (h + 1) + 1), scale * width), png.shape
    rgb = png[..., :3].astype(np.int32)
    if png.shape[-1] == 4:
        assert np.all(png[..., 3] == 255)  # opaque
    if title:
        assert rgb[:band].min() < 128, f"{path}: no title text"
    grid = rgb[band:]
    blocks = grid.reshape(grid.shape[0] // scale, scale, width, scale, 3)
    assert np.all(blocks == blocks[:, :1, :, :1]), f"{path}: the grid was resampled"
    grid = blocks[:, 0, :, 0]
    assert np.all(grid[:: h + 1] == 255) and np.all(grid[:, :: w + 1] == 255)  # the cell lines
    if c == 1:
        assert np.all(grid == grid[..., :1])  # grey
    cells = grid[1:, 1:].reshape(rows, h + 1, cols, w + 1, 3)[:, :h, :, :w]
    cells = cells.transpose(0, 2, 1, 3, 4).reshape(rows * cols, h, w, 3)[:num_images]
    assert np.ptp(cells) > 0, f"{path}: every image is one constant colour"


def record_image_grids(monkeypatch) -> dict[str, np.ndarray]:
    """The arrays the examples pass to `save_image_grid` from now on, by file name (before it
    clips them to [0, 1]); the PNGs are still written."""
    from vae_harness import experiment

    grids = {}
    save = experiment.save_image_grid

    def recording_save(images, path, *args, **kwargs):
        grids[Path(path).name] = np.array(images)
        return save(images, path, *args, **kwargs)

    monkeypatch.setattr(experiment, "save_image_grid", recording_save)
    return grids


def check_unit_range(grids: dict, expected: dict) -> None:
    """`grids` (file name: images) holds exactly the `expected` (file name: shape) images, each
    with finite values in [0, 1], the range `save_image_grid` writes without clipping."""
    assert {name: images.shape for name, images in grids.items()} == expected
    for name, images in grids.items():
        assert np.all(np.isfinite(images)), name
        assert images.min() >= 0.0 and images.max() <= 1.0, (name, images.min(), images.max())


# A tiny VAE on small arrays and the settings `run_experiment` reads, for the training tests.


@dataclasses.dataclass
class TailConfig:
    """The settings `run_experiment` reads (an example's come from `flags_config`)."""

    model_dir: str
    batch_size: int = 4
    epochs: int | None = None
    num_steps: int | None = None
    learning_rate: float = 0.05
    ema_momentum: float | None = 0.5
    clip_norm: float | None = None
    data_dir: str | None = None
    download: bool = False
    save_every: int = 1
    save_every_minutes: float = 5.0
    num_importance_samples: int = 3
    importance_chunk: int = 2
    eval_batch_size: int = 3
    num_eval_examples: int | None = 2
    seed: int = 0


def tiny_vae(data_size: int = 4, hidden: int = 6, latent_size: int = 2):
    """A dense VAE (Bernoulli likelihood) of `data_size`-dim rows, uncompiled, seeded."""
    from tfp_iaf import tf_keras, vae

    tf_keras.utils.set_random_seed(0)
    encoder = tf_keras.Sequential([tf_keras.layers.Dense(hidden, activation="elu")])
    decoder = tf_keras.Sequential([tf_keras.layers.Dense(data_size)])
    return vae.VAE(encoder, decoder, latent_size, seed=3)


def array_loader(x: np.ndarray, loads: list | None = None):
    """A `load_split` over the rows of `x` (train and test alike)."""

    def load_split(split, batch_size, *, shuffle=False, repeat=False, drop_remainder=False, **kw):
        if loads is not None:
            loads.append(
                (split, batch_size, shuffle, repeat, {"drop_remainder": drop_remainder, **kw})
            )
        ds = tf.data.Dataset.from_tensor_slices(x)
        ds = ds.repeat() if repeat else ds
        return ds.batch(batch_size, drop_remainder=drop_remainder), len(x)

    return load_split


def run_tiny_experiment(model_dir, x: np.ndarray, **config):
    """`run_experiment` of a `tiny_vae` on the rows of `x`, no image grids."""
    import vae_harness

    return vae_harness.run_experiment(
        TailConfig(model_dir=str(model_dir), **config),
        load_split=array_loader(x),
        make_model=lambda train_batches: tiny_vae(x.shape[1]),
        make_images=lambda model, test_batches: {},
        default_epochs=1,
    )
