"""What the ResNet VAE minimises and reports at each step: the free-bits ELBO in its loss units.

From one posterior sample per example, `log p(x | z)` (`[batch]`) and each layer's KL per unit
(`[batch, H_l, W_l, z_size]`):

- objective, nats per example: `sum_l free_bits_kl(KL_l) - mean(log p(x | z))`, the free-bits
  floor per (layer, channel), spatial axes summed (`tfp_iaf.vae.free_bits_kl`);
- loss: that objective in bits per dimension (`loss_units="bits_per_dim"`) or times the
  replica's batch, in nats (`"nats_sum"`, as the authors' code minimises per GPU tower);
- metrics (`METRICS`, then `kl_<layer>` per layer): the single-sample bits/dim, ELBO, NLL and
  KL without the floor, and the decoder's log-scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from tfp_iaf.vae.free_bits import free_bits_kl

__all__ = ["LOSS_UNITS", "METRICS", "resnet_objective"]

LOSS_UNITS = ("bits_per_dim", "nats_sum")
METRICS = ("loss", "bits_per_dim", "elbo", "nll", "kl", "dec_log_scale")


def resnet_objective(
    log_px_z: tf.Tensor,
    kls: Sequence[tf.Tensor],
    *,
    free_bits: float,
    group_size: int | None,
    num_dims: int,
    loss_units: str,
    layer_names: Sequence[str],
    dec_log_scale: tf.Variable,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """`(loss, metrics)` of one batch.

    Args:
      log_px_z: `log p(x | z)` per example, `[batch]`, nats.
      kls: each layer's KL per unit, `[batch, H_l, W_l, z_size]`, nats.
      free_bits: the floor `lambda` per (layer, channel), nats.
      group_size: examples the floor averages over (None: the whole batch).
      num_dims: dimensions of one image (`H * W * C`), for bits per dimension.
      loss_units: `"bits_per_dim"` or `"nats_sum"` (one of `LOSS_UNITS`; not checked here).
      layer_names: the layers' names, in the order of `kls`, for the `kl_<name>` metrics.
      dec_log_scale: the decoder's log-scale, reported as is.

    Returns:
      The scalar loss, and a dict of scalar metrics (`METRICS` and `kl_<name>`).
    """
    kl_layers = [tf.reduce_sum(k, axis=[1, 2, 3]) for k in kls]
    kl = tf.add_n(kl_layers)
    # Free bits per (layer, channel): spatial axes summed, channels are the groups.
    group = group_size
    kl_obj = tf.add_n([free_bits_kl(k, free_bits, sum_axes=(1, 2), group_size=group) for k in kls])
    nats_to_bpd = 1.0 / (num_dims * math.log(2.0))
    nats = kl_obj - tf.reduce_mean(log_px_z)  # per example
    if loss_units == "nats_sum":
        loss = nats * tf.cast(tf.shape(log_px_z)[0], nats.dtype)
    else:
        loss = nats * nats_to_bpd
    values = {
        "loss": loss,
        "bits_per_dim": tf.reduce_mean(kl - log_px_z) * nats_to_bpd,
        "elbo": tf.reduce_mean(log_px_z - kl),
        "nll": -tf.reduce_mean(log_px_z),
        "kl": tf.reduce_mean(kl),
        "dec_log_scale": tf.identity(dec_log_scale),
        **{
            f"kl_{name}": tf.reduce_mean(k) for name, k in zip(layer_names, kl_layers, strict=True)
        },
    }
    return loss, values
