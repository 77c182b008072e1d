"""Deprecated: `tfp_iaf.layers.WeightNormConv2D` and `tfp_iaf.weight_norm.data_dependent_init`."""

from tfp_iaf._deprecated import moved

__getattr__ = moved(
    __name__,
    {"WeightNormConv2D": "tfp_iaf.layers", "data_dependent_init": "tfp_iaf.weight_norm"},
)
