"""Deprecated: `tfp_iaf.conv_made` (ConvMADE) and `tfp_iaf.stacks` (conv_iaf_stack)."""

from tfp_iaf._deprecated import moved

__getattr__ = moved(
    __name__, {"ConvMADE": "tfp_iaf.conv_made", "conv_iaf_stack": "tfp_iaf.stacks"}
)
