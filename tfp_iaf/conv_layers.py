"""Deprecated: `tfp_iaf.layers` holds MaskedConv2D."""

from tfp_iaf._deprecated import moved

__getattr__ = moved(__name__, {"MaskedConv2D": "tfp_iaf.layers"})
