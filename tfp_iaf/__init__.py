"""tfp_iaf: Inverse Autoregressive Flow posteriors as TensorFlow Probability bijectors."""

from tfp_iaf._keras import tf_keras
from tfp_iaf.iaf import IAFStack, InverseAutoregressiveFlow, dense_iaf_stack
from tfp_iaf.layers import MaskedDense
from tfp_iaf.networks import MADE, AutoregressiveNetwork, LinearAutoregressive

__version__ = "0.1.0"

__all__ = [
    "AutoregressiveNetwork",
    "IAFStack",
    "InverseAutoregressiveFlow",
    "LinearAutoregressive",
    "MADE",
    "MaskedDense",
    "dense_iaf_stack",
    "tf_keras",
]
