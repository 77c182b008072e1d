"""Loading example scripts without their absl flags colliding; checking the PNGs they write."""

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import flags

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


def check_image_grid(path, num_images: int, image_shape: tuple, num_cols: int = 10) -> None:
    """`path` is `vae.save_image_grid`'s PNG of `num_images` images `image_shape`, not blank.

    The grid has `num_cols` columns (fewer for fewer images) and a 1-pixel white line around
    every cell; grey images (one channel) are written with R = G = B.
    """
    h, w, c = image_shape
    cols = min(num_cols, num_images)
    rows = -(-num_images // cols)
    png = decode_png(path)
    assert png.shape[:2] == (rows * (h + 1) + 1, cols * (w + 1) + 1), png.shape
    rgb = png[..., :3].astype(np.int32)
    assert np.all(rgb[:: h + 1] == 255) and np.all(rgb[:, :: w + 1] == 255)  # the cell lines
    if png.shape[-1] == 4:
        assert np.all(png[..., 3] == 255)  # opaque
    if c == 1:
        assert np.all(rgb == rgb[..., :1])  # grey
    cells = rgb[1:, 1:].reshape(rows, h + 1, cols, w + 1, 3)[:, :h, :, :w]
    cells = cells.transpose(0, 2, 1, 3, 4).reshape(rows * cols, h, w, 3)[:num_images]
    assert np.ptp(cells) > 0, f"{path}: every image is one constant colour"


def record_image_grids(monkeypatch) -> dict[str, np.ndarray]:
    """The arrays the examples pass to `save_image_grid` from now on, by file name (before it
    clips them to [0, 1]); the PNGs are still written."""
    from tfp_iaf.vae import experiment

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
