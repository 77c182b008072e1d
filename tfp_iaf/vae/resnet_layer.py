"""One stochastic layer of the IAF paper's ResNet VAE: its bottom-up and top-down passes.

`ResNetIAFLayer` holds a layer's convolutions and its posterior, a conv IAF over a diagonal
Gaussian (see `tfp_iaf.vae.resnet_vae` for the whole model and the maths).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras
from tfp_iaf.posterior import unit_log_prob
from tfp_iaf.stacks import conv_iaf_stack
from tfp_iaf.vae.weight_norm_conv import WeightNormConv2D

tfd = tfp.distributions

__all__ = ["IAF_INITS", "LayerOutput", "ResNetIAFLayer"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_RESIDUAL_SCALE = 0.1
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


def _normal_log_prob(x, loc, log_scale):
    return -0.5 * tf.square((x - loc) * tf.exp(-log_scale)) - log_scale - _HALF_LOG_2PI


def as_float32(t):
    return tf.cast(t, tf.float32)


class LayerOutput(NamedTuple):
    """What one stochastic layer's top-down pass produced (float32, `[batch, H_l, W_l, z]`).

    `posterior_*` and `kl` are None in sampling mode. The posterior is
    `ResNetIAFLayer.posterior(posterior_loc, posterior_log_scale, posterior_context)`.
    """

    prior_loc: tf.Tensor
    prior_log_scale: tf.Tensor
    posterior_loc: tf.Tensor | None
    posterior_log_scale: tf.Tensor | None
    z: tf.Tensor
    kl: tf.Tensor | None
    posterior_context: tf.Tensor | None = None


class ResNetIAFLayer(tf_keras.layers.Layer):
    """One stochastic ResNet layer: its bottom-up (`up`) and top-down (`down`) passes.

    Args:
      latent_shape: `(H, W, z_size)` of this layer's latent (the resolution after `up`).
      hidden_size: channels of the ResNet state and of the contexts.
      downsample: stride 2 (`up` halves the resolution, `down` doubles it).
      iaf_steps: conv IAF steps of the posterior (0: a diagonal Gaussian).
      order: order of the first IAF step (see `tfp_iaf.conv_iaf_stack`).
      iaf_weight_norm: weight-normalised masked convolutions in the IAF networks.
      iaf_gated: gated IAF steps, `z = g * z + (1 - g) * m` (scale at most 1), or affine
        ones (False; scale up to `exp(5)`). Affine steps can multiply `z` from layer to layer
        until the activations overflow at learning rates near 0.01; gated ones did not
        (docs/benchmarks_stability.md).
      top: the last layer of the bottom-up pass, whose output state nothing reads (it has no
        bottom-up residual branch, so that every weight gets a gradient).
      iaf_init: how the IAF networks are built and initialised. `"default"`: ours (below);
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
      **kwargs: passed to `tf_keras.layers.Layer`.

    Raises:
      ValueError: a negative `iaf_steps`, an unknown `iaf_init`, or what
        `tfp_iaf.conv_iaf_stack` raises (e.g. `hidden_size` not a multiple of `z_size`).
    """

    def __init__(
        self,
        latent_shape: Sequence[int],
        hidden_size: int,
        downsample: bool = False,
        iaf_steps: int = 1,
        order: str = "raster",
        iaf_weight_norm: bool = False,
        iaf_gated: bool = True,
        top: bool = False,
        iaf_init: str = "default",
        **kwargs,
    ):
        super().__init__(**kwargs)
        iaf_steps = _checks.non_negative_int("iaf_steps", iaf_steps)  # 0: diagonal Gaussian
        if not isinstance(iaf_init, str) or iaf_init not in IAF_INITS:
            raise ValueError(f"`iaf_init` must be one of {IAF_INITS}; got {iaf_init!r}")
        self.iaf_init = iaf_init
        self.latent_shape = tuple(int(n) for n in latent_shape)
        z, h = self.latent_shape[2], hidden_size
        self.z_size, self.hidden_size, self.downsample, self.top = z, h, downsample, top
        stride = 2 if downsample else 1
        up_channels = 2 * z + h if top else 2 * z + 2 * h
        self.up_conv1 = WeightNormConv2D(up_channels, 3, strides=stride, name="up_conv1")
        self.up_conv2 = None if top else WeightNormConv2D(h, 3, name="up_conv2")
        self.down_conv1 = WeightNormConv2D(4 * z + 2 * h, 3, name="down_conv1")
        self.down_conv2 = WeightNormConv2D(
            h, 3, strides=stride, transpose=downsample, name="down_conv2"
        )
        self.flow = None
        self.iaf_networks = []
        if iaf_steps:
            reference = {}
            if iaf_init == "reference":
                reference = {
                    "log_scale_bound": None,
                    "network_kwargs": {
                        **_REFERENCE_NETWORK_KWARGS,
                        # A config, not an instance: every layer gets its own initializer
                        # (one unseeded instance would draw the same values each time).
                        "kernel_initializer": {
                            "class_name": "RandomNormal",
                            "config": {"mean": 0.0, "stddev": 0.05},
                        },
                    },
                }
                iaf_weight_norm = True
            self.flow = conv_iaf_stack(
                self.latent_shape,
                iaf_steps,
                [h, h],
                context_channels=h,
                order=order,
                weight_norm=iaf_weight_norm,
                gated=iaf_gated,
                name=f"{self.name}_iaf",
                **reference,
            )
            # Keras tracks the networks' variables through this list.
            self.iaf_networks = [step.network for step in self.flow.steps]

    def up(self, h):
        """Bottom-up: `h -> (h', (mu_q, log s_q, c_up))`; `h'` is None for the top layer."""
        z, hs = self.z_size, self.hidden_size
        out = self.up_conv1(tf.nn.elu(h))
        if self.top:
            q_loc, q_log_scale, context = tf.split(out, [z, z, hs], axis=-1)
            return None, (q_loc, q_log_scale, context)
        q_loc, q_log_scale, context, branch = tf.split(out, [z, z, hs, hs], axis=-1)
        branch = self.up_conv2(tf.nn.elu(branch))
        if self.downsample:
            h = h[:, ::2, ::2, :]  # nearest-neighbour downsampling
        return h + _RESIDUAL_SCALE * branch, (q_loc, q_log_scale, context)

    def posterior(self, loc, log_scale, context) -> tfd.Distribution:
        """`q(z | x, z_>l)` over `[batch, H, W, z_size]`, sampled and scored without kwargs.

        `tfd.TransformedDistribution(Independent(Normal(loc, exp(log_scale)), 3),
        flow.with_context(context))`, or the `Independent` base alone without IAF steps. The
        IAF networks are float32 even under mixed precision: the log-dets stay exact and the
        sample needs no cast.
        """
        base = tfd.Independent(tfd.Normal(loc, tf.exp(log_scale)), reinterpreted_batch_ndims=3)
        if self.flow is None:
            return base
        return tfd.TransformedDistribution(base, self.flow.with_context(context))

    def down(self, h, up_terms, seed, temperature=1.0) -> tuple[tf.Tensor, LayerOutput]:
        """Top-down: `h -> h'`, `z` from the posterior, or from the prior if `up_terms` is None.

        Args:
          h: the top-down state `[batch, H, W, hidden_size]`.
          up_terms: `up`'s `(mu_q, log s_q, c_up)`, or None (sampling mode).
          seed: int32 `[2]` stateless seed of this layer's sample.
          temperature: sampling mode: `z ~ N(mu_p, (temperature * s_p)^2)`.
        """
        z_size, hs = self.z_size, self.hidden_size
        out = self.down_conv1(tf.nn.elu(h))
        p_loc, p_log_scale, r_loc, r_log_scale, context, det = tf.split(
            out, [z_size] * 4 + [hs] * 2, axis=-1
        )
        p_loc, p_log_scale = as_float32(p_loc), as_float32(p_log_scale)
        if up_terms is None:
            eps = tf.random.stateless_normal(tf.shape(p_loc), seed)
            z = p_loc + temperature * tf.exp(p_log_scale) * eps
            result = LayerOutput(p_loc, p_log_scale, None, None, z, None)
        else:
            q_loc, q_log_scale, up_context = up_terms
            loc = as_float32(q_loc) + as_float32(r_loc)
            log_scale = as_float32(q_log_scale) + as_float32(r_log_scale)
            context = as_float32(up_context) + as_float32(context)
            q = self.posterior(loc, log_scale, context)
            z = q.sample(seed=seed)
            kl = unit_log_prob(q, z) - _normal_log_prob(z, p_loc, p_log_scale)
            result = LayerOutput(p_loc, p_log_scale, loc, log_scale, z, kl, context)
        branch = tf.concat([tf.cast(z, det.dtype), det], axis=-1)
        branch = self.down_conv2(tf.nn.elu(branch))
        if self.downsample:
            h = tf.repeat(tf.repeat(h, 2, axis=1), 2, axis=2)  # nearest-neighbour upsampling
        return h + _RESIDUAL_SCALE * branch, result
