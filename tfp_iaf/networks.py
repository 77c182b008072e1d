"""Deprecated: `tfp_iaf.autoregressive` (the contract) and `tfp_iaf.made` (MADE)."""

from tfp_iaf._deprecated import moved

__getattr__ = moved(
    __name__,
    {
        "AutoregressiveNetwork": "tfp_iaf.autoregressive",
        "MADE": "tfp_iaf.made",
        "OUTPUT_INIT_SCALE": "tfp_iaf.autoregressive",
        "small_init": "tfp_iaf.autoregressive:output_initializer",
        "as_input": "tfp_iaf._checks",
        "as_tensor": "tfp_iaf._checks",
    },
)
