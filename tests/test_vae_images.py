"""save_image_grid: the PNG holds every image at its place, bordered; bad input is named."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_iaf import vae


@pytest.mark.parametrize("channels", [1, 3])
def test_grid_places_every_image(tmp_path, channels):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5, 4, 6, channels)).astype(np.float32)
    path = vae.save_image_grid(images, str(tmp_path / "sub" / "grid.png"), num_cols=2)
    png = tf.io.decode_png(tf.io.read_file(path)).numpy().astype(np.float32) / 255.0
    assert png.shape[:2] == (3 * 5 + 1, 2 * 7 + 1)  # 3 rows x 2 columns, 1-pixel borders
    for i, image in enumerate(images):
        r, c = divmod(i, 2)
        cell = png[1 + r * 5 : 1 + r * 5 + 4, 1 + c * 7 : 1 + c * 7 + 6, :3]
        expected = np.broadcast_to(image, cell.shape)
        np.testing.assert_allclose(cell, expected, atol=1.5 / 255)
    np.testing.assert_allclose(png[0, :, :3], 1.0)  # white border


@pytest.mark.parametrize(
    "images, num_cols, error, match",
    [
        (np.zeros([2, 4, 4]), 2, ValueError, r"`images` must have shape \[N, H, W, 1 or 3\]"),
        (np.zeros([2, 4, 4, 2]), 2, ValueError, r"got \(2, 4, 4, 2\)"),
        (np.zeros([2, 4, 4, 1]), 0, ValueError, r"`num_cols` must be a positive integer; got 0"),
        (np.zeros([2, 4, 4, 1]), 2.0, TypeError, r"`num_cols` must be a positive integer"),
    ],
)
def test_bad_input_is_named(tmp_path, images, num_cols, error, match):
    with pytest.raises(error, match=match):
        vae.save_image_grid(images, str(tmp_path / "g.png"), num_cols=num_cols)
