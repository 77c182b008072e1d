"""How the ResNet VAE builds each layer's posterior flow: ours, or as the authors' code does.

`ResNetVAE` passes `resnet_iaf_options(...)` to `tfp_iaf.conv_iaf_stack` for every stochastic
layer and gives the stack to its `ResNetIAFLayer`.
"""

from __future__ import annotations

from typing import Any

from tfp_iaf import _checks

__all__ = ["IAF_INITS", "resnet_iaf_options"]

IAF_INITS = ("default", "reference")
# The authors' IAF networks (openai/iaf `tf_utils/layers.py`, `ar_multiconv2d`): weight-normed
# masked convolutions, every one data-initialised to unit standard deviation (the output layer
# included), directions drawn from N(0, 0.05^2), the context added to the first layer's
# pre-activation without a projection, and the outputs multiplied by 0.1 (`tf_train.py`).
_REFERENCE_AR_OUTPUT_SCALE = 0.1
_REFERENCE_NETWORK_KWARGS = {
    "output_scale": _REFERENCE_AR_OUTPUT_SCALE,
    "output_init_scale": 1.0,
    "project_context": False,
}


def resnet_iaf_options(
    hidden_size: int,
    iaf_weight_norm: bool = False,
    iaf_gated: bool = True,
    iaf_init: str = "default",
) -> dict[str, Any]:
    """The keyword arguments of `tfp_iaf.conv_iaf_stack` for a ResNet layer's posterior.

    Every step's network: two masked convolutions of `hidden_size` channels, conditioned on the
    layer's `hidden_size`-channel context (`c_up + c_down`). The stack's `event_shape`,
    `num_steps` and `order` are the caller's.

    Args:
      hidden_size: channels of the ResNet state, of the context and of the IAF networks.
      iaf_weight_norm: weight-normalised masked convolutions in the IAF networks.
      iaf_gated: gated IAF steps, `z = g * z + (1 - g) * m` (scale at most 1), or affine
        ones (False; scale up to `exp(5)`). Affine steps can multiply `z` from layer to layer
        until the activations overflow at learning rates near 0.01; gated ones did not
        (docs/benchmarks_stability.md).
      iaf_init: how the IAF networks are built and initialised: `"default"`: ours (below);
        `"reference"`: the form of the authors' code (openai/iaf, `ar_multiconv2d` in
        `tf_utils/layers.py`, used by `IAFLayer.down` in `tf_train.py`). The differences:

        - output: ours starts near zero through a small initializer (weight-normed: data-
          initialised to a standard deviation of 0.01); reference: the output convolution is
          data-initialised to standard deviation 1 like the hidden ones and its outputs are
          multiplied by 0.1 (`ConvMADE(output_scale=0.1, output_init_scale=1)`), so both the
          shift and the log-scale start at a standard deviation of 0.1 on the init batch;
        - weight norm: reference: every masked convolution is weight-normalised and
          data-initialised by `ResNetVAE.initialize` (implied: `iaf_weight_norm` is ignored),
          directions drawn from `N(0, 0.05^2)`; ours: `iaf_weight_norm` (default off) and
          Glorot directions;
        - context: ours projects `c_up + c_down` by a learned 1x1 convolution before adding it
          to the first masked layer's pre-activation; reference: added as it is
          (`ConvMADE(project_context=False)`: `hidden_size` channels into `hidden_size`);
        - affine steps (`iaf_gated=False`, the authors' only kind): ours bound the log-scale
          softly, `5 tanh(b / 5)`; reference: unbounded (`log_scale_bound=None`).

        Not reproduced: the reference stores the weight-norm gain as `log(s) / 3` under an
        `exp` (so after initialisation its layers are not exactly normalised; ours keep one
        weight norm, `g = s`); it data-initialises on prior samples of `z` (ours: the posterior
        sample of `ResNetVAE.initialize`'s pass); it writes its affine step as
        `(z - m) / exp(s)`, ours as `a + exp(b) z` (the same family, `b = -s`,
        `a = -m exp(-s)`).

    Raises:
      ValueError: a non-positive `hidden_size` or an unknown `iaf_init`.
    """
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    if not isinstance(iaf_init, str) or iaf_init not in IAF_INITS:
        raise ValueError(f"`iaf_init` must be one of {IAF_INITS}; got {iaf_init!r}")
    options = {
        "filters": [hidden_size, hidden_size],
        "context_channels": hidden_size,
        "weight_norm": iaf_weight_norm,
        "gated": iaf_gated,
    }
    if iaf_init == "reference":
        options.update(
            weight_norm=True,
            log_scale_bound=None,
            network_kwargs={
                **_REFERENCE_NETWORK_KWARGS,
                # A config, not an instance: every layer gets its own initializer (one
                # unseeded instance would draw the same values each time).
                "kernel_initializer": {
                    "class_name": "RandomNormal",
                    "config": {"mean": 0.0, "stddev": 0.05},
                },
            },
        )
    return options
