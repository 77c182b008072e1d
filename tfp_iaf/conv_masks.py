"""Deprecated: `tfp_iaf.masks` holds the conv masks, in the degree vocabulary of dense ones.

The old rank vocabulary maps onto degrees as: input channel rank `r` is channel degree `r + 1`,
hidden rank `g` is degree `g`, and `exclusive=` is `strict=` of the output layer.
"""

import warnings

from tfp_iaf import masks as _masks
from tfp_iaf._deprecated import moved

__getattr__ = moved(
    __name__,
    {
        name: "tfp_iaf.masks"
        for name in (
            "CONV_ORDERS",
            "check_order",
            "reversed_order",
            "conv_input_degrees",
            "conv_made_masks",
        )
    }
    | {
        "check_event_shape": "tfp_iaf._checks:event_shape_hwc",
        "check_kernel_size": "tfp_iaf._checks:odd_kernel_size",
    },
)


def conv_kernel_mask(kernel_size, in_ranks, out_ranks, order="raster", exclusive=False):
    """Deprecated: `tfp_iaf.masks.conv_kernel_mask(..., strict=exclusive)` (the same rule)."""
    warnings.warn(
        "`tfp_iaf.conv_masks.conv_kernel_mask` is deprecated and will be removed in tfp_iaf 0.3; "
        "use `tfp_iaf.masks.conv_kernel_mask` (`exclusive=` is now `strict=`)",
        DeprecationWarning,
        stacklevel=2,
    )
    return _masks.conv_kernel_mask(kernel_size, in_ranks, out_ranks, order, strict=exclusive)
