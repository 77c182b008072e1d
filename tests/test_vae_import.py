"""`import tfp_iaf.vae` without its `examples` extra: an ImportError that names the extra."""

import subprocess
import sys
import textwrap

# Run in a fresh interpreter in which `tensorflow_datasets` cannot be found, as after
# `pip install tfp_iaf` without the extra.
BLOCK_TFDS = textwrap.dedent(
    """
    import sys

    class BlockTfds:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow_datasets" or name.startswith("tensorflow_datasets."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, BlockTfds())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TFDS + code], capture_output=True, text=True, timeout=300
    )


def test_vae_without_tensorflow_datasets_names_the_extra():
    result = _run("import tfp_iaf.vae\n")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: tfp_iaf.vae needs the `tensorflow_datasets` package")
    assert "pip install 'tfp_iaf[examples]'" in last
    assert "ModuleNotFoundError" not in result.stderr  # no chained traceback of the probe


def test_core_package_imports_without_tensorflow_datasets():
    result = _run("import tfp_iaf\nprint(callable(tfp_iaf.dense_iaf_stack))\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
