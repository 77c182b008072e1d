"""save_image_grid: the PNG holds every image at its place, bordered, magnified without
resampling, under its title; bad input is named."""

import numpy as np
import pytest

import vae_harness as harness
from tests.examples_util import check_image_grid, decode_png
from vae_harness.images import TITLE_HEIGHT


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [1, 3])
@pytest.mark.parametrize("title", [None, "five images"])
def test_grid_places_every_image(tmp_path, channels, scale, title):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5, 4, 6, channels)).astype(np.float32)
    path = harness.save_image_grid(
        images, str(tmp_path / "sub" / "grid.png"), num_cols=2, title=title, scale=scale
    )
    png = decode_png(path).astype(np.float32) / 255.0
    band = 0 if title is None else TITLE_HEIGHT
    assert png.shape[:2] == (band + scale * (3 * 5 + 1), scale * (2 * 7 + 1))  # 3 x 2 cells
    grid = png[band:]
    for i, image in enumerate(images):
        r, c = divmod(i, 2)
        top, left = scale * (1 + r * 5), scale * (1 + c * 7)
        cell = grid[top : top + 4 * scale, left : left + 6 * scale, :3]
        expected = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
        np.testing.assert_allclose(cell, np.broadcast_to(expected, cell.shape), atol=1.5 / 255)
    np.testing.assert_allclose(grid[:scale, :, :3], 1.0)  # white border
    if title is not None:
        assert png[:band, :, :3].min() < 0.5  # text in the band


@pytest.mark.parametrize(
    "num_images, cols, shape", [(100, 10, (28, 28, 1)), (36, 10, (32, 32, 3))]
)
def test_default_scale_makes_small_grids_at_least_560_pixels_wide(
    tmp_path, num_images, cols, shape
):
    images = np.random.default_rng(1).uniform(size=(num_images, *shape))
    path = harness.save_image_grid(images, str(tmp_path / "g.png"), num_cols=cols, title="t")
    check_image_grid(path, num_images, shape, num_cols=cols)


@pytest.mark.parametrize(
    "images, kwargs, error, match",
    [
        (np.zeros([2, 4, 4]), {}, ValueError, r"`images` must have shape \[N, H, W, 1 or 3\]"),
        (np.zeros([2, 4, 4, 2]), {}, ValueError, r"got \(2, 4, 4, 2\)"),
        (np.zeros([2, 4, 4, 1]), {"num_cols": 0}, ValueError, r"`num_cols` .* integer; got 0"),
        (np.zeros([2, 4, 4, 1]), {"num_cols": 2.0}, TypeError, r"`num_cols` must be a positive"),
        (np.zeros([2, 4, 4, 1]), {"scale": 0}, ValueError, r"`scale` must be .* integer; got 0"),
        (np.zeros([2, 4, 4, 1]), {"scale": 1.5}, TypeError, r"`scale` must be a positive integer"),
    ],
)
def test_bad_input_is_named(tmp_path, images, kwargs, error, match):
    with pytest.raises(error, match=match):
        harness.save_image_grid(images, str(tmp_path / "g.png"), **kwargs)


def test_a_long_title_is_shrunk_to_fit_the_band(tmp_path):
    """A caption wider than the grid is not cut at the PNG's edges: its band's outer columns
    stay white, and its text is still there."""
    title = (
        "18 test images, each followed by its reconstruction (step 400, Polyak-averaged weights)"
    )
    path = harness.save_image_grid(
        np.full([36, 32, 32, 3], 0.5), str(tmp_path / "g.png"), title=title
    )
    band = decode_png(path)[:TITLE_HEIGHT, :, :3].astype(int)
    assert band.min() < 128  # text
    for edge in (band[:, :4], band[:, -4:]):
        assert edge.min() == 255, "the title touches the edge"
