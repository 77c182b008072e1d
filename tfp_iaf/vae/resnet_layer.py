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
from tfp_iaf.layers import WeightNormConv2D
from tfp_iaf.posterior import unit_log_prob
from tfp_iaf.stacks import conv_iaf_stack

tfd = tfp.distributions

__all__ = ["LayerOutput", "ResNetIAFLayer"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_RESIDUAL_SCALE = 0.1


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
      **kwargs: passed to `tf_keras.layers.Layer`.

    Raises:
      ValueError: a negative `iaf_steps`, or what `tfp_iaf.conv_iaf_stack` raises (e.g.
        `hidden_size` not a multiple of `z_size`).
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        iaf_steps = _checks.non_negative_int("iaf_steps", iaf_steps)  # 0: diagonal Gaussian
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
            self.flow = conv_iaf_stack(
                self.latent_shape,
                iaf_steps,
                [h, h],
                context_channels=h,
                order=order,
                weight_norm=iaf_weight_norm,
                gated=iaf_gated,
                name=f"{self.name}_iaf",
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

    def posterior(self, loc, log_scale, context) -> tuple[tfd.Distribution, dict]:
        """`q(z | x, z_>l)` over `[batch, H, W, z_size]` and its `bijector_kwargs`.

        `tfd.TransformedDistribution(Independent(Normal(loc, exp(log_scale)), 3), flow)`, or the
        `Independent` base alone without IAF steps. The IAF networks are float32 even under
        mixed precision: the log-dets stay exact and the sample needs no cast.
        """
        base = tfd.Independent(tfd.Normal(loc, tf.exp(log_scale)), reinterpreted_batch_ndims=3)
        if self.flow is None:
            return base, {}
        return tfd.TransformedDistribution(base, self.flow), {"context": context}

    def down(self, h, up_terms, seed) -> tuple[tf.Tensor, LayerOutput]:
        """Top-down: `h -> h'`, `z` from the posterior, or from the prior if `up_terms` is None.

        Args:
          h: the top-down state `[batch, H, W, hidden_size]`.
          up_terms: `up`'s `(mu_q, log s_q, c_up)`, or None (sampling mode).
          seed: int32 `[2]` stateless seed of this layer's sample.
        """
        z_size, hs = self.z_size, self.hidden_size
        out = self.down_conv1(tf.nn.elu(h))
        p_loc, p_log_scale, r_loc, r_log_scale, context, det = tf.split(
            out, [z_size] * 4 + [hs] * 2, axis=-1
        )
        p_loc, p_log_scale = as_float32(p_loc), as_float32(p_log_scale)
        if up_terms is None:
            z = p_loc + tf.exp(p_log_scale) * tf.random.stateless_normal(tf.shape(p_loc), seed)
            result = LayerOutput(p_loc, p_log_scale, None, None, z, None)
        else:
            q_loc, q_log_scale, up_context = up_terms
            loc = as_float32(q_loc) + as_float32(r_loc)
            log_scale = as_float32(q_log_scale) + as_float32(r_log_scale)
            context = as_float32(up_context) + as_float32(context)
            q, kwargs = self.posterior(loc, log_scale, context)
            z = q.sample(seed=seed, **({"bijector_kwargs": kwargs} if kwargs else {}))
            kl = unit_log_prob(q, z, kwargs) - _normal_log_prob(z, p_loc, p_log_scale)
            result = LayerOutput(p_loc, p_log_scale, loc, log_scale, z, kl, context)
        branch = tf.concat([tf.cast(z, det.dtype), det], axis=-1)
        branch = self.down_conv2(tf.nn.elu(branch))
        if self.downsample:
            h = tf.repeat(tf.repeat(h, 2, axis=1), 2, axis=2)  # nearest-neighbour upsampling
        return h + _RESIDUAL_SCALE * branch, result
