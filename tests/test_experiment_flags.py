"""Flag validation: bad values fail at parse time, before any data or TensorFlow work, naming
the flag; a run that fails leaves no empty model directory."""

import dataclasses

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

import vae_harness as harness
from tests.examples_util import TailConfig, array_loader, loaded_example

COMMON = [
    ("--batch_size=0", r"--batch_size must be a positive integer"),
    ("--num_steps=0", r"--num_steps must be a positive integer"),
    ("--epochs=-1", r"--epochs must be a positive integer"),
    ("--save_every=0", r"--save_every must be a positive integer"),
    ("--num_importance_samples=0", r"--num_importance_samples must be a positive integer"),
    ("--importance_chunk=0", r"--importance_chunk must be a positive integer"),
    ("--eval_batch_size=0", r"--eval_batch_size must be a positive integer"),
    ("--num_eval_examples=0", r"--num_eval_examples must be a positive integer"),
    ("--seed=-1", r"--seed must be a non-negative integer"),
    ("--learning_rate=0", r"--learning_rate must be a positive number"),
    ("--learning_rate=nan", r"--learning_rate must be a positive number"),
    ("--ema_momentum=1", r"--ema_momentum must be in \[0, 1\)"),
    ("--clip_norm=0", r"--clip_norm must be a positive number"),
    ("--clip_norm=inf", r"--clip_norm must be a positive number"),
    ("--free_bits=-0.1", r"--free_bits must be >= 0"),
    ("--save_every_minutes=-1", r"--save_every_minutes must be a finite number of minutes >= 0"),
    ("--save_every_minutes=inf", r"--save_every_minutes must be a finite number of minutes"),
    ("--epochs=2 --num_steps=5", r"--epochs and --num_steps cannot both be set: --num_steps"),
]


@pytest.mark.parametrize(
    "arg, match",
    [
        *COMMON,
        ("--iaf_depth=0", r"--iaf_depth must be at least 1; .* use --posterior=diag"),
        ("--iaf_width=0", r"--iaf_width must be at least 1"),
        ("--context_size=0", r"--context_size must be at least 1"),
    ],
)
def test_mnist_flags_fail_at_parse_time(arg, match):
    with loaded_example("mnist_vae"), flagsaver.flagsaver():
        with pytest.raises(flags.IllegalFlagValueError, match=match):
            flags.FLAGS(["mnist_vae.py", *arg.split()])


def test_good_mnist_flags_parse():
    with loaded_example("mnist_vae") as mnist_vae, flagsaver.flagsaver():
        flags.FLAGS(["mnist_vae.py", "--ema_momentum=0", "--num_steps=1", "--seed=0"])
        config = mnist_vae.Config.from_flags()
    assert (config.ema_momentum, config.num_steps, config.epochs) == (0.0, 1, None)


def test_cifar10_flags_fail_at_parse_time():
    with loaded_example("cifar10_vae"):
        for arg, match in [
            *COMMON,
            ("--iaf_steps=-1", r"--iaf_steps must be >= 0"),
            ("--depth=0", r"--depth must be at least 1"),
            ("--hidden_size=5", r"--hidden_size must be a multiple of --z_size"),
        ]:
            with flagsaver.flagsaver(), pytest.raises(flags.IllegalFlagValueError, match=match):
                flags.FLAGS(["cifar10_vae.py", *arg.split()])
        with flagsaver.flagsaver():
            flags.FLAGS(["cifar10_vae.py", "--iaf_steps=0"])  # 0: the diagonal posterior


def _shared_defaults(name):
    with loaded_example(name) as example:
        fields = {f.name: f.default for f in dataclasses.fields(example.Config)}
    return {k: v for k, v in fields.items() if k in SHARED}


SHARED = {
    "batch_size", "epochs", "num_steps", "learning_rate", "clip_norm", "ema_momentum",
    "optimizer", "preset", "data_dir", "download", "model_dir", "save_every", "strategy",
    "save_every_minutes",
    "mixed_precision", "jit_compile", "num_importance_samples", "importance_chunk",
    "eval_batch_size", "num_eval_examples", "seed", "verbose", "mode", "temperature",
}  # fmt: skip


def test_examples_share_one_definition_of_the_training_flags_with_their_own_defaults():
    registry = flags.FlagValues()
    harness.define_experiment_flags(
        "some_example", dataset="D", model_dir="runs/x", batch_size=7, default_epochs=3,
        ema_momentum=0.5, importance_chunk=4, eval_batch_size=9, mixed_precision_help="fp16",
        flag_values=registry,
    )  # fmt: skip
    config = harness.flags_config("some_example", registry)
    assert {f.name for f in dataclasses.fields(config)} == SHARED
    assert (config().batch_size, config().importance_chunk, config().model_dir) == (7, 4, "runs/x")
    assert "default 3 unless" in registry["epochs"].help and "of D." in registry["data_dir"].help
    with pytest.raises(flags.IllegalFlagValueError, match="--eval_batch_size must be a positive"):
        registry(["prog", "--eval_batch_size=0"])  # the checks come with the definitions
    mnist, cifar = _shared_defaults("mnist_vae"), _shared_defaults("cifar10_vae")
    assert set(mnist) == set(cifar) == SHARED  # both examples define them all, through it
    differing = {k for k in SHARED if mnist[k] != cifar[k]}
    assert differing == {"batch_size", "ema_momentum", "model_dir", "importance_chunk",
                         "eval_batch_size"}  # fmt: skip


def test_a_failed_run_leaves_no_empty_model_dir(tmp_path):
    def unavailable(split, batch_size, **kwargs):
        raise harness.DatasetUnavailableError("`mnist` is not available")

    model_dir = tmp_path / "run"
    with pytest.raises(harness.DatasetUnavailableError, match="not available"):
        harness.run_experiment(
            TailConfig(model_dir=str(model_dir)),
            load_split=unavailable,
            make_model=None,
            make_images=None,
            default_epochs=1,
        )
    assert not model_dir.exists()


def test_epochs_with_num_steps_fails_before_any_data_is_loaded(tmp_path):
    loads = []
    with pytest.raises(
        ValueError, match=r"`epochs` and `num_steps` cannot both be set .*epochs=2, num_steps=5"
    ):
        harness.run_experiment(
            TailConfig(model_dir=str(tmp_path / "run"), epochs=2, num_steps=5),
            load_split=array_loader(np.eye(4, dtype=np.float32), loads),
            make_model=None,
            make_images=None,
            default_epochs=1,
        )
    assert loads == [] and not (tmp_path / "run").exists()
