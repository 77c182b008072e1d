"""Writing a grid of images (samples, reconstructions) as a PNG."""

from __future__ import annotations

import os

import numpy as np

from tfp_iaf import _checks

__all__ = ["save_image_grid"]


def save_image_grid(images, path: str, num_cols: int = 10) -> str:
    """Tiles `images: [N, H, W, C]` (C = 1 or 3, values in [0, 1]) into a grid and saves a PNG.

    Args:
      images: array-like of images.
      path: output `.png` path; its directory is created.
      num_cols: images per row.

    Returns:
      `path`.

    Raises:
      TypeError: a `num_cols` that is not an int.
      ValueError: `images` not of shape `[N, H, W, 1 or 3]`, or a non-positive `num_cols`.
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
    grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.float32)
    for i, image in enumerate(np.clip(images, 0.0, 1.0)):
        r, col = divmod(i, cols)
        top, left = 1 + r * (h + 1), 1 + col * (w + 1)
        grid[top : top + h, left : left + w] = image
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if c == 1:
        plt.imsave(path, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        plt.imsave(path, grid)
    return path
