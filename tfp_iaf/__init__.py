"""tfp_iaf: Inverse Autoregressive Flow posteriors as TensorFlow Probability bijectors."""

from tfp_iaf._keras import tf_keras
from tfp_iaf.autoregressive import AutoregressiveNetwork
from tfp_iaf.conv_made import ConvMADE
from tfp_iaf.flow import AutoregressiveFlow, Flow
from tfp_iaf.iaf import IAFStack, InverseAutoregressiveFlow
from tfp_iaf.layers import MaskedConv2D, MaskedDense
from tfp_iaf.linear import LinearAutoregressive
from tfp_iaf.made import MADE
from tfp_iaf.planar import PlanarFlow
from tfp_iaf.posterior import unit_log_prob
from tfp_iaf.stacks import conv_iaf_stack, dense_iaf_stack
from tfp_iaf.weight_norm import data_dependent_init

# Last: it needs the stacks. Keras 3 is already imported by TensorFlow (this adds ~10 ms), and
# `keras.models.load_model` finds `FlowLayer` only if importing tfp_iaf registered it.
from tfp_iaf import keras3  # isort: skip
from tfp_iaf import spline, transforms  # isort: skip
from tfp_iaf import mcmc, vi  # isort: skip
from tfp_iaf import _hdf5  # isort: skip

# tf_keras's HDF5 weights files (`save_weights("w.h5")`) carry the flows' fingerprints from here.
_hdf5.install()

__version__ = "0.2.0.dev0"


__all__ = [
    "AutoregressiveFlow",
    "Flow",
    "AutoregressiveNetwork",
    "ConvMADE",
    "IAFStack",
    "InverseAutoregressiveFlow",
    "LinearAutoregressive",
    "MADE",
    "MaskedConv2D",
    "MaskedDense",
    "PlanarFlow",
    "conv_iaf_stack",
    "data_dependent_init",
    "dense_iaf_stack",
    "keras3",
    "tf_keras",
    "spline",
    "transforms",
    "mcmc",
    "unit_log_prob",
    "vi",
]
