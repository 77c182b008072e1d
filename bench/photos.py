"""Natural-image data for the CIFAR-shaped benchmarks (CIFAR-10 cannot be downloaded here).

The scripts, run as `python -m bench.<script>`, import it as `from bench import photos`:

- `grace_hopper_crops(num, seed)`: random 32x32 crops of the photograph that ships with
  matplotlib (`grace_hopper.jpg`); two seeds give two independent draws (training and held-out
  crops of the same photograph).
"""

from __future__ import annotations

import numpy as np


def grace_hopper_crops(num: int, seed: int) -> np.ndarray:
    """`num` random 32x32 uint8 crops `[num, 32, 32, 3]` of matplotlib's sample photograph."""
    import matplotlib.cbook
    import matplotlib.image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = np.asarray(matplotlib.image.imread(f, format="jpg"), np.uint8)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, photo.shape[0] - 32, num)
    cols = rng.integers(0, photo.shape[1] - 32, num)
    return np.stack([photo[r : r + 32, c : c + 32] for r, c in zip(rows, cols, strict=True)])
