"""Writing a grid of images (samples, reconstructions) as a PNG."""

from __future__ import annotations

import math
import os

import numpy as np

from tfp_iaf import _checks

__all__ = ["save_image_grid", "TITLE_HEIGHT"]

# Height in pixels of the white band that holds a grid's title.
TITLE_HEIGHT = 32
# A grid narrower than this is magnified (by a whole factor, each pixel a square block).
_MIN_WIDTH = 560


def save_image_grid(
    images, path: str, num_cols: int = 10, title: str | None = None, scale: int | None = None
) -> str:
    """Tiles `images: [N, H, W, C]` (C = 1 or 3, values in [0, 1]) into a grid and saves a PNG.

    The grid has a 1-pixel white line around every cell. Each grid pixel becomes a
    `scale x scale` block of the PNG, with no interpolation, so the images stay exact. A title
    adds a white band of `TITLE_HEIGHT` pixels above the grid.

    Args:
      images: array-like of images.
      path: output `.png` path; its directory is created.
      num_cols: images per row.
      title: text written above the grid, or None for none.
      scale: magnification, a positive int; None: the smallest that makes the PNG at least
        560 pixels wide.

    Returns:
      `path`.

    Raises:
      TypeError: a `num_cols` or `scale` that is not an int.
      ValueError: `images` not of shape `[N, H, W, 1 or 3]`, or a non-positive `num_cols` or
        `scale`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] < 1:
        raise ValueError(f"`images` must have shape [N, H, W, 1 or 3]; got {images.shape}")
    num_cols = _checks.positive_int("num_cols", num_cols)
    n, h, w, c = images.shape
    cols = min(num_cols, n)
    rows = -(-n // cols)
    grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, 3), dtype=np.float32)
    for i, image in enumerate(np.clip(images, 0.0, 1.0)):
        r, col = divmod(i, cols)
        top, left = 1 + r * (h + 1), 1 + col * (w + 1)
        grid[top : top + h, left : left + w] = image  # grey images broadcast to R = G = B
    if scale is None:
        scale = max(1, math.ceil(_MIN_WIDTH / grid.shape[1]))
    scale = _checks.positive_int("scale", scale)
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if title is None:
        plt.imsave(path, grid)
        return path
    # figimage puts one array element on one PNG pixel: the grid is not resampled.
    dpi = 100
    height, width = grid.shape[0] + TITLE_HEIGHT, grid.shape[1]
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    try:
        fig.figimage(grid, xo=0, yo=0, origin="upper")
        text = fig.text(
            0.5,
            1.0 - 0.5 * TITLE_HEIGHT / height,
            title,
            ha="center",
            va="center",
            fontsize=11,
        )
        # A caption wider than the grid would be cut at the edges: shrink it to fit (the
        # measured extent runs a few percent under the saved PNG's, hence the margin).
        text_width = text.get_window_extent(renderer=fig.canvas.get_renderer()).width
        if text_width > 0.9 * width:
            text.set_fontsize(max(5.0, 11 * 0.9 * width / text_width))
        fig.savefig(path, dpi=dpi, facecolor="white")
    finally:
        plt.close(fig)
    return path
