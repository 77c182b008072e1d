"""Presets: the mechanism (explicit flags win, list, errors), and the MNIST example's: every preset
run for two steps on mock data, and each one's real size checked by its parameter count.
The CIFAR example's: test_presets_cifar.py (the two examples' flags cannot coexist)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags

import vae_harness as harness
from tests.examples_util import loaded_example


@pytest.fixture(scope="module")
def mnist_vae():
    with loaded_example("mnist_vae") as module:
        yield module


def _count(variables) -> int:
    return sum(int(np.prod(v.shape)) for v in variables)


# The mechanism, on a FlagValues of its own.


def _flag_values():
    fv = flags.FlagValues()
    flags.DEFINE_string("preset", None, "", flag_values=fv)
    flags.DEFINE_integer("depth", 2, "", flag_values=fv)
    flags.DEFINE_float("rate", 0.5, "", flag_values=fv)
    flags.register_validator("depth", lambda v: v >= 1, "--depth >= 1", flag_values=fv)
    return fv


PRESETS = {
    "deep": harness.Preset("a deeper model", {"depth": 8, "rate": 0.1}),
    "broken": harness.Preset("a value the validator rejects", {"depth": 0}),
}


def test_preset_sets_its_flags_and_explicit_flags_win():
    fv = _flag_values()
    fv(["prog", "--preset=deep", "--rate=0.7"])
    assert harness.apply_preset(PRESETS, fv) == "deep"
    assert fv.depth == 8  # from the preset
    assert fv.rate == 0.7  # given on the command line: kept


def test_no_preset_changes_nothing():
    fv = _flag_values()
    fv(["prog"])
    assert harness.apply_preset(PRESETS, fv) is None
    assert (fv.depth, fv.rate) == (2, 0.5)


def test_list_prints_every_preset_and_exits_zero():
    fv = _flag_values()
    fv(["prog", "--preset=list"])
    printed = []
    with pytest.raises(SystemExit) as exit_info:
        harness.apply_preset(PRESETS, fv, print_fn=printed.append)
    assert exit_info.value.code == 0
    assert "deep: a deeper model\n    --depth=8 --rate=0.1" in printed[0]
    assert "broken: " in printed[0]


def test_unknown_or_invalid_preset_is_an_error():
    fv = _flag_values()
    fv(["prog", "--preset=shallow"])
    with pytest.raises(app.UsageError, match=r"--preset must be one of .*; got 'shallow'"):
        harness.apply_preset(PRESETS, fv)
    fv = _flag_values()
    fv(["prog", "--preset=broken"])
    with pytest.raises(flags.IllegalFlagValueError, match="--depth >= 1"):
        harness.apply_preset(PRESETS, fv)
    with pytest.raises(ValueError, match=r"`preset` must be one of .*; got 'shallow'"):
        harness.preset_config(dict, PRESETS, "shallow")


# Every preset of both examples: two steps on mock data, sizes shrunk, the preset recorded.

TINY_MNIST = dict(
    batch_size=4, num_importance_samples=2, importance_chunk=2, eval_batch_size=5, iaf_width=31
)


def _smoke_config(module, name, model_dir="unused"):
    """The preset with its sizes shrunk: depth capped at 2, width 31 (the least a 32-dim MADE
    allows). The real sizes are checked by parameter count below, at a fraction of a run's time.
    """
    depth = min(module.PRESETS[name].values.get("iaf_depth", 2), 2)
    return harness.preset_config(
        module.Config,
        module.PRESETS,
        name,
        num_steps=2,
        model_dir=model_dir,
        num_eval_examples=5,
        iaf_depth=depth,
        **TINY_MNIST,
    )


# Shrunk, the presets are three distinct configurations: static IAF, dynamic diagonal, dynamic
# IAF. One 2-step run of each (the test below checks every preset is one of them).
SMOKE_RUNS = ["default", "table1_diag", "table1_d2_w320"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SMOKE_RUNS)
def test_mnist_preset_two_steps(mnist_vae, name, tmp_path):
    config = _smoke_config(mnist_vae, name, str(tmp_path))
    with tfds.testing.mock_data(num_examples=10):
        results = mnist_vae.train_and_evaluate(config)
    assert results["steps"] == 2 and np.isfinite(results["test_log_px"])
    assert results["config"]["preset"] == name
    for flag, value in mnist_vae.PRESETS[name].values.items():
        if flag not in {*TINY_MNIST, "iaf_depth"}:
            assert results["config"][flag] == value, flag


def test_every_mnist_preset_shrinks_to_a_smoke_tested_run(mnist_vae):
    def shrunk(name):
        return {k: v for k, v in vars(_smoke_config(mnist_vae, name)).items() if k != "preset"}

    tested = [shrunk(name) for name in SMOKE_RUNS]
    assert len({repr(c) for c in tested}) == len(SMOKE_RUNS)  # three distinct runs
    for name in mnist_vae.PRESETS:
        assert shrunk(name) in tested, name


# Real sizes, by parameter count (build only: one forward pass of one example).


@pytest.mark.slow
@pytest.mark.parametrize(("depth", "width"), [(2, 320), (2, 1920), (4, 1920), (8, 1920)])
def test_mnist_table1_presets_have_the_papers_flow_sizes(mnist_vae, depth, width):
    name = f"table1_d{depth}_w{width}"
    model = mnist_vae.make_model(harness.preset_config(mnist_vae.Config, mnist_vae.PRESETS, name))
    model(tf.zeros([1, 28, 28, 1]))
    diag = mnist_vae.make_model(
        harness.preset_config(mnist_vae.Config, mnist_vae.PRESETS, "table1_diag")
    )
    diag(tf.zeros([1, 28, 28, 1]))
    # Each step: a MADE of two hidden layers of `width` on the 32-dim latent, fed the context.
    made = __import__("tfp_iaf").MADE(32, [width, width], context_size=64)
    made(tf.zeros([1, 32]), context=tf.zeros([1, 64]))
    assert _count(model.flow.trainable_variables) == depth * _count(made.trainable_variables)
    # Everything else is the diagonal model's, its head widened by the 64-unit context.
    rest = _count(model.trainable_variables) - _count(model.flow.trainable_variables)
    assert rest == _count(diag.trainable_variables) + 450 * 64 + 64
