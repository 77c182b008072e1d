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

from tfp_iaf._keras import tf_keras
from tfp_iaf.flow import AutoregressiveFlow
from tfp_iaf.posterior import unit_log_prob
from tfp_iaf.vae.weight_norm_conv import WeightNormConv2D

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
      flow: the posterior's conv IAF over `latent_shape`, conditioned on `hidden_size`
        context channels (`ResNetVAE` builds the paper's with `tfp_iaf.conv_iaf_stack` and
        `tfp_iaf.vae.resnet_iaf_options`), or None: a
        diagonal Gaussian posterior.
      top: the last layer of the bottom-up pass, whose output state nothing reads (it has no
        bottom-up residual branch, so that every weight gets a gradient).
      **kwargs: passed to `tf_keras.layers.Layer`.

    Raises:
      ValueError: a `flow` whose event or context shape is not this layer's.
    """

    def __init__(
        self,
        latent_shape: Sequence[int],
        hidden_size: int,
        downsample: bool = False,
        flow: AutoregressiveFlow | None = None,
        top: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
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
        if flow is not None:
            expected = (self.latent_shape, (*self.latent_shape[:2], h))
            if (flow.event_shape, flow.context_shape) != expected:
                raise ValueError(
                    f"`flow` must have event shape {expected[0]} and context shape "
                    f"{expected[1]}; got {flow.event_shape} and {flow.context_shape}"
                )
        self.flow = flow
        # Keras tracks the networks' variables through this list.
        self.iaf_networks = [] if flow is None else list(flow.networks)

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
