"""The old import paths: each moved name warns, naming its new path, and resolves to the object
at that path; a name the old module never mapped is an AttributeError."""

from __future__ import annotations

import importlib
import re
import warnings

import pytest

# Every name the shims map: old path -> new path.
MOVED = {
    "tfp_iaf.networks.AutoregressiveNetwork": "tfp_iaf.autoregressive.AutoregressiveNetwork",
    "tfp_iaf.networks.MADE": "tfp_iaf.made.MADE",
    "tfp_iaf.networks.OUTPUT_INIT_SCALE": "tfp_iaf.autoregressive.OUTPUT_INIT_SCALE",
    "tfp_iaf.networks.small_init": "tfp_iaf.autoregressive.output_initializer",
    "tfp_iaf.networks.as_input": "tfp_iaf._checks.as_input",
    "tfp_iaf.networks.as_tensor": "tfp_iaf._checks.as_tensor",
    "tfp_iaf.conv_networks.ConvMADE": "tfp_iaf.conv_made.ConvMADE",
    "tfp_iaf.conv_networks.conv_iaf_stack": "tfp_iaf.stacks.conv_iaf_stack",
    "tfp_iaf.conv_layers.MaskedConv2D": "tfp_iaf.layers.MaskedConv2D",
    "tfp_iaf.conv_masks.CONV_ORDERS": "tfp_iaf.masks.CONV_ORDERS",
    "tfp_iaf.conv_masks.check_order": "tfp_iaf.masks.check_order",
    "tfp_iaf.conv_masks.reversed_order": "tfp_iaf.masks.reversed_order",
    "tfp_iaf.conv_masks.conv_input_degrees": "tfp_iaf.masks.conv_input_degrees",
    "tfp_iaf.conv_masks.conv_made_masks": "tfp_iaf.masks.conv_made_masks",
    "tfp_iaf.conv_masks.check_event_shape": "tfp_iaf._checks.event_shape_hwc",
    "tfp_iaf.conv_masks.check_kernel_size": "tfp_iaf._checks.odd_kernel_size",
    "tfp_iaf.iaf.dense_iaf_stack": "tfp_iaf.stacks.dense_iaf_stack",
    "tfp_iaf.vae.weight_norm.WeightNormConv2D": "tfp_iaf.layers.WeightNormConv2D",
    "tfp_iaf.vae.weight_norm.data_dependent_init": "tfp_iaf.weight_norm.data_dependent_init",
}
OLD_MODULES = sorted({old.rpartition(".")[0] for old in MOVED})


def resolve(path: str):
    module, _, name = path.rpartition(".")
    return importlib.import_module(module), name


@pytest.mark.parametrize("old,new", MOVED.items(), ids=list(MOVED))
def test_old_path_warns_and_resolves_to_the_new_object(old, new):
    module, name = resolve(old)
    match = rf"`{re.escape(old)}` is deprecated.*use `{re.escape(new)}` instead"
    with pytest.warns(DeprecationWarning, match=match):
        obj = getattr(module, name)
    assert obj is getattr(*resolve(new))


def test_the_warning_points_at_the_importing_line():
    with pytest.warns(DeprecationWarning) as record:
        from tfp_iaf.networks import MADE  # noqa: F401
    assert [w.filename for w in record] == [__file__]


@pytest.mark.parametrize("old", OLD_MODULES)
def test_unknown_name_is_an_attribute_error(old):
    module = importlib.import_module(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning for a name that never existed
        with pytest.raises(
            AttributeError, match=rf"module '{re.escape(old)}' has no attribute 'no_such_name'"
        ):
            module.no_such_name  # noqa: B018


def test_old_conv_kernel_mask_maps_exclusive_to_strict():
    import numpy as np

    from tfp_iaf import conv_masks, masks

    with pytest.warns(DeprecationWarning, match=r"`exclusive=` is now `strict=`"):
        old = conv_masks.conv_kernel_mask(3, [0, 1], [0, 1], "raster", exclusive=True)
    np.testing.assert_array_equal(old, masks.conv_kernel_mask(3, [0, 1], [0, 1], strict=True))
