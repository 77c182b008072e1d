"""Flag validation (issue 10, item 5): bad values fail at parse time, before any data or
TensorFlow work, naming the flag; a run that fails leaves no empty model directory."""

import pytest
from absl import flags
from absl.testing import flagsaver

from tests.examples_util import TailConfig, loaded_example
from tfp_iaf import vae

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
            flags.FLAGS(["mnist_vae.py", arg])


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
                flags.FLAGS(["cifar10_vae.py", arg])
        with flagsaver.flagsaver():
            flags.FLAGS(["cifar10_vae.py", "--iaf_steps=0"])  # 0: the diagonal posterior


def test_a_failed_run_leaves_no_empty_model_dir(tmp_path):
    def unavailable(split, batch_size, **kwargs):
        raise vae.DatasetUnavailableError("`mnist` is not available")

    model_dir = tmp_path / "run"
    with pytest.raises(vae.DatasetUnavailableError, match="not available"):
        vae.run_experiment(
            TailConfig(model_dir=str(model_dir)),
            load_split=unavailable,
            make_model=None,
            make_images=None,
            default_epochs=1,
        )
    assert not model_dir.exists()
