"""The IAF paper's ResNet VAE with bidirectional inference (section 6.2, figure 3).

Kingma et al. 2016, https://arxiv.org/abs/1606.04934, following the authors' code. For images
`x` (pixels scaled by `pixels_to_unit`), with `L` stochastic layers, each a ResNet block holding a
3-D latent `z_l: [H_l, W_l, z_size]`:

- bottom-up: `h = conv5x5/2(x)`; layer `l` (first to last): `elu -> conv` gives the posterior's
  bottom-up mean and log-std `(mu_q, log s_q)`, a context `c_up` and a branch `r`;
  `h <- h + 0.1 * conv(elu(r))` (downsampled when the layer is strided);
- top-down, from a learned input `h_top` (last layer to first): `elu -> conv` of the state gives
  the prior `p(z_l | z_>l) = N(mu_p, exp(log s_p))`, top-down posterior terms `(mu_r, log s_r)`, a
  context `c_down` and a deterministic branch `d`; the posterior samples
  `z ~ q = tfd.TransformedDistribution(N(mu_q + mu_r, exp(log s_q + log s_r)), flow)`, the flow
  `iaf_steps` conv IAF steps (`tfp_iaf.conv_iaf_stack`) conditioned on `c_up + c_down`; then
  `h <- h + 0.1 * conv(elu([z, d]))` (upsampled when strided);
- `x_mean = clip(deconv5x5/2(elu(h)))`, `p(x | z) = discretized logistic(x_mean, s_x)` with
  `log s_x = b + deconv5x5/2'(elu(h))` per subpixel (`decoder_scale="pixel"`: the decoder says
  where it is unsure, as in PixelCNN++'s output) or the learned scalar `b` alone (`"global"`,
  the authors' form); `initialize` sets `b` from the data (`decoder_scale_init="data"`:
  `s_x = max(std(x - x_mean), 1/256) * sqrt(3) / pi`, the logistic whose standard deviation
  `pi s / sqrt(3)` is the spread of the pixels around the initial decoder mean) or leaves at 0
  (`"zero"`, the authors' form, which then moves about one learning rate per step);
- KL of layer `l` by one sample, per unit: `log q(z_l | x, z_>l) - log p(z_l | z_>l)`, the
  posterior's per-unit terms from `tfp_iaf.unit_log_prob` (cached with the sample); the loss
  and metrics made of them: `tfp_iaf.vae.resnet_objective`;
- sampling mode: every layer draws `z_l` from its prior (no posterior, no IAF).

All convolutions but the IAF's masked ones are `WeightNormConv2D` with data-dependent
initialisation (`initialize`). Under a mixed-precision policy the convolutions run in float16;
the Gaussian and IAF log-densities, the log-dets and the loss are float32.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras
from tfp_iaf.stacks import conv_iaf_stack
from tfp_iaf.vae.discretized_logistic import (
    check_edge_bins,
    discretized_logistic_log_prob,
    pixels_to_unit,
)
from tfp_iaf.vae.resnet_flow import resnet_iaf_options
from tfp_iaf.vae.resnet_layer import LayerOutput, ResNetIAFLayer, as_float32
from tfp_iaf.vae.resnet_objective import LOSS_UNITS, METRICS, resnet_objective
from tfp_iaf.vae.weight_norm_conv import WeightNormConv2D
from tfp_iaf.weight_norm import data_dependent_init

tfd = tfp.distributions

__all__ = ["LayerOutput", "ResNetIAFLayer", "ResNetVAE"]

DECODER_SCALE_INITS = ("data", "zero")
DECODER_SCALES = ("pixel", "global")


class ResNetVAE(tf_keras.Model):
    """The ResNet VAE of the IAF paper, trained with `fit` on integer pixel batches.

    `depth` stages of `num_blocks` stochastic layers; the first layer of every stage after the
    first halves the resolution. Latents: `[H / 2^(1 + i), W / 2^(1 + i), z_size]` in stage `i`.

    Shapes: `x: [batch, H, W, C]` integer pixels in `[0, 255]` (any dtype), `H` and `W` divisible
    by `2^depth`.

    Args:
      image_shape: `(H, W, C)`.
      hidden_size: ResNet channels (a multiple of `z_size`: the IAF networks' widths).
      z_size: latent channels per layer.
      depth: number of resolution stages.
      num_blocks: stochastic layers per stage.
      iaf_steps: conv IAF steps per layer (0: diagonal Gaussian posteriors).
      order: IAF order, `"raster"` or `"channel"` (reversed between steps).
      free_bits: KL floor `lambda` per (layer, channel), nats, averaged over the minibatch.
      free_bits_group_size: examples per minibatch that the floor averages over (None: each
        replica's whole batch). The authors floor per 32-image GPU tower, so their 256-image
        steps are 8 groups (`tfp_iaf.vae.free_bits_kl`'s `group_size`).
      iaf_weight_norm: weight-normalised masked convolutions in the IAF networks.
      iaf_gated: gated (default) or affine IAF steps (see `resnet_iaf_options`).
      iaf_init: `"default"` (ours) or `"reference"`: the IAF networks as the authors' code
        builds and initialises them (outputs times 0.1, every masked convolution weight-normed
        and data-initialised by `initialize`, the context added without a projection, affine
        log-scales unbounded); each difference is listed under `resnet_iaf_options`.
      decoder_scale: `"pixel"` (default): `log s_x` is the learned scalar plus a per-subpixel
        offset that a second transposed convolution of the decoder's last state predicts (its
        weight norm starts it at a standard deviation of 0.1); `"global"`: the scalar alone,
        the authors' form (the paper preset). The CIFAR example's defaults, 400 steps on
        held-out photograph crops: 4.80 vs 6.42 bits/dim (docs/benchmarks_cifar_photos.md).
      decoder_scale_init: how `initialize` sets the decoder's log-scale `log s_x`: `"data"`
        (default) matches a logistic's standard deviation to the spread of the batch's pixels
        around the initial decoder mean, so the first steps already score better than a uniform
        model (docs/benchmarks_decoder_scale.md); `"zero"` keeps `log s_x = 0`, the authors'
        form (the paper preset).
      loss_units: the training loss: `"bits_per_dim"` (default), the replica batch's mean in
        bits per dimension; `"nats_sum"`, its sum in nats, as the authors' code minimises per
        GPU tower (the paper preset). The same gradient direction, scaled by
        `batch * dims * log 2`; it matters through Adamax's `eps`. Reported metrics are
        unchanged (the `loss` metric is in these units).
      eval_edge_bins: the edge bins of `log_weights` (evaluation: ELBO and importance-sampled
        log p(x)): `"proper"` (default, a normalised PMF) or `"reference"` (the tails dropped,
        as the authors' code; see `tfp_iaf.vae.discretized_logistic_log_prob`). Training and
        its reported metrics always use `"proper"`. An attribute: it may be set after building.
      seed: base of the stateless training seeds.
      name: model name.

    Raises:
      ValueError: bad sizes (non-positive, `H` or `W` not divisible by `2^depth`), a negative
        `free_bits`, an unknown `decoder_scale`, `decoder_scale_init`, `loss_units` or
        `eval_edge_bins`, a non-positive `free_bits_group_size`, or what
        `resnet_iaf_options` raises (e.g. an unknown `iaf_init`).
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (32, 32, 3),
        hidden_size: int = 160,
        z_size: int = 32,
        depth: int = 2,
        num_blocks: int = 2,
        iaf_steps: int = 1,
        order: str = "raster",
        free_bits: float = 0.25,
        free_bits_group_size: int | None = None,
        iaf_weight_norm: bool = False,
        iaf_gated: bool = True,
        iaf_init: str = "default",
        decoder_scale: str = "pixel",
        decoder_scale_init: str = "data",
        loss_units: str = "bits_per_dim",
        eval_edge_bins: str = "proper",
        seed: int = 0,
        name: str = "resnet_vae",
    ):
        super().__init__(name=name)
        for arg, value in (
            ("hidden_size", hidden_size),
            ("z_size", z_size),
            ("depth", depth),
            ("num_blocks", num_blocks),
        ):
            _checks.positive_int(arg, value)
        image_shape = tuple(int(n) for n in image_shape)
        if len(image_shape) != 3 or any(n % 2**depth for n in image_shape[:2]):
            raise ValueError(
                f"`image_shape` must be (H, W, C) with H and W divisible by 2**depth={2**depth}; "
                f"got {image_shape}"
            )
        free_bits = _checks.non_negative_float("free_bits", free_bits)
        self.free_bits_group_size = _checks.positive_int(
            "free_bits_group_size", free_bits_group_size, optional=True
        )
        self.decoder_scale_init = _one_of(
            "decoder_scale_init", decoder_scale_init, DECODER_SCALE_INITS
        )
        self.decoder_scale = _one_of("decoder_scale", decoder_scale, DECODER_SCALES)
        self.loss_units = _one_of("loss_units", loss_units, LOSS_UNITS)
        self.eval_edge_bins = check_edge_bins(eval_edge_bins, "eval_edge_bins")
        self.image_shape, self.hidden_size, self.z_size = image_shape, hidden_size, z_size
        self.free_bits, self.seed = float(free_bits), int(seed)
        self.num_dims = int(math.prod(image_shape))
        height, width = image_shape[0] // 2, image_shape[1] // 2
        iaf_steps = _checks.non_negative_int("iaf_steps", iaf_steps)  # 0: diagonal Gaussian
        iaf = resnet_iaf_options(hidden_size, iaf_weight_norm, iaf_gated, iaf_init)
        self.blocks = self._stochastic_layers(depth, num_blocks, iaf_steps, order, iaf)
        self.top_shape = (height >> (depth - 1), width >> (depth - 1), hidden_size)
        self.x_enc = WeightNormConv2D(hidden_size, 5, strides=2, name="x_enc")
        self.x_dec = WeightNormConv2D(image_shape[2], 5, strides=2, transpose=True, name="x_dec")
        self.h_top = self.add_weight("h_top", shape=(hidden_size,), initializer="zeros")
        # Read in float32 under a mixed policy too: the likelihood is float32 throughout.
        self.dec_log_scale = self.add_weight(
            "dec_log_scale", shape=(), initializer="zeros", experimental_autocast=False
        )
        # Created last, and only when used: the other weights are drawn as in the "global" model.
        self.x_dec_scale = None
        if decoder_scale == "pixel":
            self.x_dec_scale = WeightNormConv2D(
                image_shape[2], 5, strides=2, transpose=True, name="x_dec_scale"
            )
        names = [*METRICS, *(f"kl_{b.name}" for b in self.blocks)]
        self._trackers = {m: tf_keras.metrics.Mean(name=m) for m in names}

    def _stochastic_layers(
        self, depth: int, num_blocks: int, iaf_steps: int, order: str, iaf: dict
    ) -> list[ResNetIAFLayer]:
        """The stochastic layers, first to last: `num_blocks` per resolution stage, each with
        `iaf_steps` conv IAF steps (none: a diagonal Gaussian posterior)."""
        height, width = self.image_shape[0] // 2, self.image_shape[1] // 2
        blocks = []
        for i, j in itertools.product(range(depth), range(num_blocks)):
            name, latent_shape = f"layer_{i}_{j}", (height >> i, width >> i, self.z_size)
            flow = None
            if iaf_steps:
                flow = conv_iaf_stack(
                    latent_shape, iaf_steps, order=order, name=f"{name}_iaf", **iaf
                )
            top = i == depth - 1 and j == num_blocks - 1
            blocks.append(
                ResNetIAFLayer(
                    latent_shape, self.hidden_size, i > 0 and j == 0, flow, top, name=name
                )
            )
        return blocks

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _seeds(self, seed):
        return [tf.random.experimental.stateless_fold_in(seed, i) for i in range(len(self.blocks))]

    def forward(
        self,
        x: tf.Tensor | None,
        seed: tf.Tensor,
        batch_size: int | tf.Tensor | None = None,
        temperature: float = 1.0,
    ) -> tuple[tf.Tensor, tf.Tensor, list[LayerOutput]]:
        """One pass: `p(x | z)`'s mean in `[-0.5, 0.5]` and log-scale, every layer's output.

        Args:
          x: integer pixels `[batch, H, W, C]`, or None for sampling mode (every `z` from its
            prior, no bottom-up pass, no IAF).
          seed: int32 `[2]` stateless seed of the latent noise.
          batch_size: the batch in sampling mode.
          temperature: sampling mode: every prior's scale is multiplied by it.

        Returns:
          `(x_mean, x_log_scale, outputs)`: `x_mean: [batch, H, W, C]` float32, `x_log_scale`
          float32 of that shape (`decoder_scale="pixel"`) or a scalar (`"global"`);
          `outputs[i]` belongs to `self.blocks[i]` (bottom-up order).
        """
        up_terms = [None] * len(self.blocks)
        if x is not None:
            h = self.x_enc(tf.cast(pixels_to_unit(x), self.compute_dtype))
            for i, block in enumerate(self.blocks):
                h, up_terms[i] = block.up(h)
            batch_size = tf.shape(x)[0]
        seeds = self._seeds(seed)
        h_top = tf.cast(self.h_top, self.compute_dtype)
        h = tf.broadcast_to(h_top, tf.concat([[batch_size], self.top_shape], axis=0))
        outputs = [None] * len(self.blocks)
        for i in reversed(range(len(self.blocks))):
            h, outputs[i] = self.blocks[i].down(h, up_terms[i], seeds[i], temperature)
        h = tf.nn.elu(h)
        x_mean = as_float32(self.x_dec(h))
        half = 0.5 - 1.0 / 512.0  # the authors keep the mean inside the outer bin centres
        log_scale = tf.convert_to_tensor(self.dec_log_scale)
        if self.x_dec_scale is not None:
            log_scale = log_scale + as_float32(self.x_dec_scale(h))
        return tf.clip_by_value(x_mean, -half, half), log_scale, outputs

    def call(self, x, training=None):
        """Single-sample ELBO of every example in nats, `[batch]` (fixed seed)."""
        log_px_z, kls = self._terms(x, tf.constant([self.seed, 0]))
        return log_px_z - tf.add_n([tf.reduce_sum(k, axis=[1, 2, 3]) for k in kls])

    def initialize(self, x: tf.Tensor) -> None:
        """Data-dependent initialisation on batch `x`, eagerly.

        Every weight-normalised convolution first; then, with `decoder_scale_init="data"`, the
        decoder's log-scale: `log s_x = log(max(std(x - x_mean), 1/256) * sqrt(3) / pi)`, over
        all of the batch's subpixels, `x_mean` the initialised decoder's mean (one posterior
        sample, the `call` seed). A logistic of scale `s` has standard deviation
        `pi s / sqrt(3)`, so this is the moment match of `p(x | z)` to the residuals the loss
        sees at step 0 (the floor of one bin keeps a constant batch finite).
        """
        data_dependent_init(self, x)
        if self.decoder_scale_init == "data":
            x_mean, _, _ = self.forward(x, tf.constant([self.seed, 0]))
            spread = tf.math.reduce_std(pixels_to_unit(x) - x_mean)
            scale = tf.maximum(spread, 1.0 / 256.0) * (math.sqrt(3.0) / math.pi)
            self.dec_log_scale.assign(tf.math.log(scale))

    def _terms(self, x, seed, edge_bins="proper"):
        x_mean, log_scale, outputs = self.forward(x, seed)
        log_px = discretized_logistic_log_prob(
            pixels_to_unit(x), x_mean, log_scale, edge_bins=edge_bins
        )
        return tf.reduce_sum(log_px, axis=[1, 2, 3]), [o.kl for o in outputs]

    def log_weights(self, x: tf.Tensor, num_samples: int, seed: tf.Tensor) -> tf.Tensor:
        """`log p(x, z) - log q(z | x)`: `[num_samples, batch]`; `x` is tiled `num_samples` times.

        The `log_weights_fn` of `tfp_iaf.vae.importance_sampled_log_likelihood`; `log p(x | z)`
        with the edge bins of `self.eval_edge_bins`.
        """
        batch = tf.shape(x)[0]
        tiled = tf.tile(x, [num_samples, 1, 1, 1])
        edge_bins = check_edge_bins(self.eval_edge_bins, "eval_edge_bins")
        log_px_z, kls = self._terms(tiled, seed, edge_bins)
        log_w = log_px_z - tf.add_n([tf.reduce_sum(k, axis=[1, 2, 3]) for k in kls])
        return tf.reshape(log_w, [num_samples, batch])

    def _step(self, x, seed):
        log_px_z, kls = self._terms(x, seed)
        return resnet_objective(
            log_px_z,
            kls,
            free_bits=self.free_bits,
            group_size=self.free_bits_group_size,
            num_dims=self.num_dims,
            loss_units=self.loss_units,
            layer_names=[b.name for b in self.blocks],
            dec_log_scale=self.dec_log_scale,
        )

    def _report(self, values):
        for name, value in values.items():
            self._trackers[name].update_state(value)
        return {name: t.result() for name, t in self._trackers.items()}

    def _replica_seed(self, step):
        ctx = tf.distribute.get_replica_context()
        replica = 0 if ctx is None else ctx.replica_id_in_sync_group
        seed = tf.stack([tf.constant(self.seed, tf.int32), step])
        return tf.random.experimental.stateless_fold_in(seed, replica)

    def train_step(self, x):
        seed = self._replica_seed(tf.cast(self.optimizer.iterations, tf.int32))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, values = self._step(x, seed)
            # Gradients are summed over replicas: scale so that they average.
            scaled = loss / replicas
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        return self._report(values)

    def test_step(self, x):
        return self._report(self._step(x, self._replica_seed(tf.constant(-1)))[1])

    def sample(self, num_samples: int, seed: int | tf.Tensor = 0, temperature: float = 1.0):
        """Images from the prior (sampling mode), every layer's prior scale times `temperature`
        (finite, > 0; as NVAE and VDVAE sample): the means of `p(x | z)`, in `[0, 1]`."""
        temperature = _checks.finite_float("temperature", temperature, positive=True)
        seed = tf.constant([0, seed]) if isinstance(seed, int) else seed
        x_mean, _, _ = self.forward(None, seed, batch_size=num_samples, temperature=temperature)
        return x_mean + 0.5

    def reconstruct(self, x: tf.Tensor, seed: int | tf.Tensor = 0) -> tf.Tensor:
        """Means of `p(x | z)`, `z ~ q(z | x)`, in `[0, 1]`: `[batch, H, W, C]`."""
        seed = tf.constant([0, seed]) if isinstance(seed, int) else seed
        return self.forward(x, seed)[0] + 0.5


def _one_of(name: str, value, choices: Sequence[str]) -> str:
    """`value`, checked to be one of the strings `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}")
    return value
