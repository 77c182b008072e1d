"""`import tfp_iaf.vae` with the core dependencies alone; the examples' harness names its extra.

The imports run in a fresh interpreter in which the extras' packages cannot be found, as after
installing the wheel without `[examples]`.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tfp_iaf.vae

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# The flags the harness defines for every example (vae_harness.experiment_flags).
HARNESS_FLAGS = ("batch_size", "num_steps", "model_dir", "save_every", "mode", "preset", "seed")


def _blocking(*names: str) -> str:
    """Code that makes the packages `names` (and their submodules) unimportable."""
    return textwrap.dedent(
        f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {names!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        """
    )


def _run(code: str, *blocked: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _blocking(*blocked) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def without_the_extras():
    """One fresh interpreter in which none of the extras' packages can be found (TensorFlow
    Datasets, matplotlib, TensorBoard): `import tfp_iaf`, then `import tfp_iaf.vae`. Its output,
    line by line, for the two tests that read it (each import of TensorFlow in a child process
    costs seconds; blocking the three packages is at least as strict as blocking one)."""
    code = f"""
        import tfp_iaf
        print(callable(tfp_iaf.dense_iaf_stack))

        import tfp_iaf.vae
        from absl import flags

        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow_datasets",
              "matplotlib", "vae_harness")))
        print(sorted(set(flags.FLAGS) & set({HARNESS_FLAGS!r})))
        print(callable(tfp_iaf.vae.VAE), callable(tfp_iaf.vae.importance_sampled_log_likelihood))
    """
    result = _run(code, "tensorflow_datasets", "matplotlib", "tensorboard")
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")


def test_vae_imports_without_the_extras_and_defines_no_flags(without_the_extras):
    assert without_the_extras[1:4] == ["[]", "[]", "True True"]


def test_vae_lists_only_the_models_and_objectives():
    # In this process: `__all__` is the module's own list, whatever else is imported.
    names = set(tfp_iaf.vae.__all__)
    assert {"VAE", "ResNetVAE", "free_bits_kl", "importance_sampled_log_likelihood"} <= names
    moved = {"train", "run_experiment", "define_experiment_flags", "load_mnist", "make_optimizer"}
    assert not names & moved


def test_harness_without_tensorflow_datasets_names_the_extra():
    # Run from examples/, as a script there is: `vae_harness` is found, tfds is not.
    result = _run("import vae_harness\n", "tensorflow_datasets", cwd=EXAMPLES)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: the VAE examples' harness (examples/vae_harness) needs")
    assert "pip install -e '.[examples]'" in last
    assert "ModuleNotFoundError" not in result.stderr  # no chained traceback of the probe


def test_core_package_imports_without_tensorflow_datasets(without_the_extras):
    assert without_the_extras[0] == "True"
