"""tfp_iaf: Inverse Autoregressive Flow posteriors as TensorFlow Probability bijectors."""

from tfp_iaf._keras import tf_keras
from tfp_iaf.conv_layers import MaskedConv2D
from tfp_iaf.conv_networks import ConvMADE, conv_iaf_stack
from tfp_iaf.iaf import IAFStack, InverseAutoregressiveFlow, dense_iaf_stack
from tfp_iaf.layers import MaskedDense
from tfp_iaf.linear import LinearAutoregressive
from tfp_iaf.networks import MADE, AutoregressiveNetwork

__version__ = "0.1.0"

__all__ = [
    "AutoregressiveNetwork",
    "ConvMADE",
    "IAFStack",
    "InverseAutoregressiveFlow",
    "LinearAutoregressive",
    "MADE",
    "MaskedConv2D",
    "MaskedDense",
    "conv_iaf_stack",
    "dense_iaf_stack",
    "tf_keras",
]
