"""The VAE models and objectives of the IAF paper, for a user's own training code.

`VAE` (any encoder and decoder, a diagonal, IAF or planar posterior), `ResNetVAE` (section
6.2's bidirectional ResNet VAE) and its layer, free bits, the discretized logistic likelihood,
and the importance-sampled log-likelihood. They need only the core dependencies: no dataset
package, no plotting, no command-line flags. The harness that trains the examples with them
(flags, checkpoints, data loading, image grids) lives beside the example scripts, in
`examples/vae_harness/`, and is not installed.
"""

from tfp_iaf.vae.discretized_logistic import (
    discretized_logistic_log_prob,
    discretized_logistic_sample,
    pixels_to_unit,
    unit_to_pixels,
)
from tfp_iaf.vae.free_bits import free_bits_kl, group_kl
from tfp_iaf.vae.likelihood import (
    ImportanceEstimate,
    bits_per_dim,
    evaluate_dataset,
    importance_sampled_log_likelihood,
    log_mean_exp,
)
from tfp_iaf.vae.model import VAE
from tfp_iaf.vae.resnet_flow import IAF_INITS, resnet_iaf_options
from tfp_iaf.vae.resnet_layer import LayerOutput, ResNetIAFLayer
from tfp_iaf.vae.resnet_vae import ResNetVAE
from tfp_iaf.vae.weight_norm_conv import WeightNormConv2D
from tfp_iaf.weight_norm import data_dependent_init

__all__ = [
    "IAF_INITS",
    "ImportanceEstimate",
    "LayerOutput",
    "ResNetIAFLayer",
    "ResNetVAE",
    "VAE",
    "WeightNormConv2D",
    "bits_per_dim",
    "data_dependent_init",
    "discretized_logistic_log_prob",
    "discretized_logistic_sample",
    "evaluate_dataset",
    "free_bits_kl",
    "group_kl",
    "importance_sampled_log_likelihood",
    "log_mean_exp",
    "pixels_to_unit",
    "resnet_iaf_options",
    "unit_to_pixels",
]
