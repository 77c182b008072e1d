"""The benchmark scripts, run from the repository root as modules: `python -m bench.bench_dense`.

Run so, they import what they share as this package's modules (`from bench import report`):
`report` (a page's date-and-machine line, running or loading an example), `timing` (wall-clock
and memory), `resnet_runs` (the CIFAR-shaped ResNet VAE runs), `photos` (natural-image crops).
`bench.studies` holds the studies whose question is answered, kept to rerun their pages.

Those that train through the VAE examples' harness import it as the example scripts do, as
`vae_harness` (examples/vae_harness/, beside the scripts, not installed): examples/ is put on
the path here, the one place a benchmark reaches outside this package.
"""

import sys
from pathlib import Path

_EXAMPLES = str(Path(__file__).resolve().parents[1] / "examples")
if _EXAMPLES not in sys.path:
    sys.path.append(_EXAMPLES)
