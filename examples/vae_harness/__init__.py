"""The harness of the VAE example scripts: flags, presets, data, the training loop, checkpoints.

Not part of the installed package: it lives beside the scripts that use it
(examples/mnist_vae.py, examples/cifar10_vae.py, examples/toy_posteriors.py), which import it as
`vae_harness` (a script run as `python examples/<name>.py` has examples/ on its path; the tests
put it there through pytest's `pythonpath`). The models and objectives it trains are the
library's, `tfp_iaf.vae`.

- `experiment_flags`: the flags every example shares (`define_experiment_flags`), their checks,
  and `flags_config`, their dataclass; `presets`: named sets of flag values (`--preset`).
- `modes`: one example's three modes (`--mode=train|evaluate|sample`) and its `main`.
- `experiment`: `run_experiment`, training then evaluating, `results.json` out; `trained`: the
  evaluate and sample modes on a trained `model_dir`.
- `training`: the loop (`train`), its stops (`stops`), optimizer (`optimizers`) and TensorBoard
  scalars; `checkpoints`, `checkpoint_files`, `fingerprint`, `model_dir_lock`: what is saved,
  how it resumes, one writer per `model_dir`.
- `data`: the datasets through TensorFlow Datasets; `images`: the PNG grids; `cli`: how a
  command ends (`run_or_exit`).

It needs TensorFlow Datasets (and, for figures and scalars, matplotlib and TensorBoard): in a
clone, `pip install -e '.[examples]'`.
"""

try:
    import tensorflow_datasets  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != "tensorflow_datasets":
        raise
    raise ImportError(
        "the VAE examples' harness (examples/vae_harness) needs the `tensorflow_datasets` "
        "package, which the `examples` extra installs: in a clone, pip install -e '.[examples]'. "
        "The library, tfp_iaf.vae included, needs no extra."
    ) from None

from vae_harness.checkpoints import CheckpointError, ModelDirError
from vae_harness.cli import EXPECTED_FAILURES, run_or_exit
from vae_harness.data import (
    DATASETS,
    DatasetUnavailableError,
    load_cifar10,
    load_dataset,
    load_mnist,
)
from vae_harness.experiment import make_strategy, run_experiment
from vae_harness.experiment_flags import (
    FlagsConfig,
    define_experiment_flags,
    flags_config,
    register_flag_validators,
)
from vae_harness.images import save_image_grid
from vae_harness.model_dir_lock import ModelDirBusy
from vae_harness.modes import Example
from vae_harness.optimizers import make_optimizer
from vae_harness.presets import Preset, apply_preset, describe_presets, preset_config
from vae_harness.stops import (
    CheckpointSaveFailed,
    EvaluationInterrupted,
    TrainingDiverged,
    TrainingInterrupted,
    TrainingStopped,
)
from vae_harness.trained import evaluate_model, evaluate_trained, sample_trained
from vae_harness.training import TrainResult, fit_schedule, train, write_scalars

__all__ = [
    "DATASETS",
    "EXPECTED_FAILURES",
    "CheckpointError",
    "CheckpointSaveFailed",
    "DatasetUnavailableError",
    "EvaluationInterrupted",
    "Example",
    "FlagsConfig",
    "ModelDirBusy",
    "ModelDirError",
    "Preset",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingStopped",
    "apply_preset",
    "define_experiment_flags",
    "describe_presets",
    "evaluate_model",
    "evaluate_trained",
    "fit_schedule",
    "flags_config",
    "load_cifar10",
    "load_dataset",
    "load_mnist",
    "make_optimizer",
    "make_strategy",
    "preset_config",
    "register_flag_validators",
    "run_experiment",
    "run_or_exit",
    "sample_trained",
    "save_image_grid",
    "train",
    "write_scalars",
]
