"""Reusable VAE pieces shared by the examples: model, evaluation, free bits, data, training.

They need TensorFlow Datasets (and, for figures and scalars, matplotlib and TensorBoard), which
`pip install tfp_iaf` leaves out: `pip install 'tfp_iaf[examples]'` installs them. The core
package (`import tfp_iaf`: the flows, `tfp_iaf.vi`) needs none of them.
"""

try:
    import tensorflow_datasets  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != "tensorflow_datasets":
        raise
    raise ImportError(
        "tfp_iaf.vae needs the `tensorflow_datasets` package, which the `examples` extra "
        "installs: pip install 'tfp_iaf[examples]' (in a clone: pip install -e '.[examples]'). "
        "The flows and tfp_iaf.vi need no extra."
    ) from None

from tfp_iaf.vae.checkpoints import CheckpointError, ModelDirError
from tfp_iaf.vae.cli import EXPECTED_FAILURES, run_or_exit
from tfp_iaf.vae.data import (
    DATASETS,
    DatasetUnavailableError,
    load_cifar10,
    load_dataset,
    load_mnist,
)
from tfp_iaf.vae.discretized_logistic import (
    discretized_logistic_log_prob,
    discretized_logistic_sample,
    pixels_to_unit,
    unit_to_pixels,
)
from tfp_iaf.vae.experiment import (
    FlagsConfig,
    define_experiment_flags,
    flags_config,
    make_strategy,
    register_flag_validators,
    run_experiment,
)
from tfp_iaf.vae.free_bits import free_bits_kl, group_kl
from tfp_iaf.vae.images import save_image_grid
from tfp_iaf.vae.likelihood import (
    ImportanceEstimate,
    bits_per_dim,
    evaluate_dataset,
    importance_sampled_log_likelihood,
    log_mean_exp,
)
from tfp_iaf.vae.model import VAE
from tfp_iaf.vae.model_dir_lock import ModelDirBusy
from tfp_iaf.vae.optimizers import make_optimizer
from tfp_iaf.vae.presets import Preset, apply_preset, describe_presets, preset_config
from tfp_iaf.vae.resnet_flow import IAF_INITS, resnet_iaf_options
from tfp_iaf.vae.resnet_layer import LayerOutput, ResNetIAFLayer
from tfp_iaf.vae.resnet_vae import ResNetVAE
from tfp_iaf.vae.stops import (
    CheckpointSaveFailed,
    EvaluationInterrupted,
    TrainingDiverged,
    TrainingInterrupted,
    TrainingStopped,
)
from tfp_iaf.vae.trained import evaluate_model, evaluate_trained, sample_trained
from tfp_iaf.vae.training import TrainResult, fit_schedule, train, write_scalars
from tfp_iaf.vae.weight_norm_conv import WeightNormConv2D
from tfp_iaf.weight_norm import data_dependent_init

__all__ = [
    "CheckpointError",
    "CheckpointSaveFailed",
    "EvaluationInterrupted",
    "ModelDirBusy",
    "ModelDirError",
    "DATASETS",
    "DatasetUnavailableError",
    "EXPECTED_FAILURES",
    "FlagsConfig",
    "IAF_INITS",
    "ImportanceEstimate",
    "LayerOutput",
    "Preset",
    "ResNetIAFLayer",
    "ResNetVAE",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingStopped",
    "VAE",
    "WeightNormConv2D",
    "apply_preset",
    "bits_per_dim",
    "data_dependent_init",
    "define_experiment_flags",
    "describe_presets",
    "discretized_logistic_log_prob",
    "discretized_logistic_sample",
    "evaluate_dataset",
    "evaluate_model",
    "evaluate_trained",
    "fit_schedule",
    "flags_config",
    "free_bits_kl",
    "group_kl",
    "importance_sampled_log_likelihood",
    "load_cifar10",
    "load_dataset",
    "load_mnist",
    "log_mean_exp",
    "make_optimizer",
    "make_strategy",
    "pixels_to_unit",
    "preset_config",
    "register_flag_validators",
    "resnet_iaf_options",
    "run_experiment",
    "run_or_exit",
    "sample_trained",
    "save_image_grid",
    "train",
    "unit_to_pixels",
    "write_scalars",
]
