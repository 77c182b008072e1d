"""Reusable VAE pieces shared by the examples: model, evaluation, free bits, data, training."""

from tfp_iaf.vae.data import DATASETS, DatasetUnavailableError, load_mnist
from tfp_iaf.vae.discretized_logistic import (
    discretized_logistic_log_prob,
    discretized_logistic_sample,
    pixels_to_unit,
    unit_to_pixels,
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
from tfp_iaf.vae.resnet_vae import LayerOutput, ResNetIAFLayer, ResNetVAE
from tfp_iaf.vae.training import (
    NonFiniteLossCounter,
    ResumableBackup,
    fit_schedule,
    make_optimizer,
    train,
    write_scalars,
)
from tfp_iaf.vae.weight_norm import WeightNormConv2D, data_dependent_init

__all__ = [
    "DATASETS",
    "DatasetUnavailableError",
    "ImportanceEstimate",
    "LayerOutput",
    "NonFiniteLossCounter",
    "ResNetIAFLayer",
    "ResNetVAE",
    "ResumableBackup",
    "VAE",
    "WeightNormConv2D",
    "bits_per_dim",
    "data_dependent_init",
    "discretized_logistic_log_prob",
    "discretized_logistic_sample",
    "evaluate_dataset",
    "fit_schedule",
    "free_bits_kl",
    "group_kl",
    "importance_sampled_log_likelihood",
    "load_mnist",
    "log_mean_exp",
    "make_optimizer",
    "pixels_to_unit",
    "save_image_grid",
    "train",
    "unit_to_pixels",
    "write_scalars",
]
