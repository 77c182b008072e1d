"""Loading example scripts in the test process without their absl flags colliding."""

import contextlib
import importlib.util
import sys
from pathlib import Path

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
