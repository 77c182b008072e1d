r"""The IAF paper's CIFAR-10 ResNet VAE (section 6.2, Table 2), trained by `vae_harness.train`.

Model: `tfp_iaf.vae.ResNetVAE` (bidirectional inference, a conv IAF in every stochastic layer,
discretized logistic likelihood, free bits per (layer, channel), weight normalisation with
data-dependent initialisation); Adamax with Polyak averaging (evaluation and samples use the
averages). On a GPU machine with CIFAR-10 prepared for tfds (or `--download`):

    python examples/cifar10_vae.py --data_dir=/path/to/tfds --model_dir=runs/cifar10 \
        --depth=2 --num_blocks=2 --hidden_size=160 --z_size=32 --iaf_steps=1 --epochs=100

The paper reports 3.11 bits/dim (test, importance sampled) after training on 8 GPUs for about
two weeks; nothing near that budget has been run for this script (see
docs/tutorials/cifar10_resnet_vae.md). Killed, the same command resumes from `--model_dir`
(with a larger `--num_steps`, it continues to that total); Ctrl-C saves a checkpoint first and
prints the command that resumes; a diverging run stops with exit status 1 and no results, as
does a missing dataset, a `--model_dir` that is a file or a checkpoint of another configuration,
in one line (`--verbose` adds the traceback). A run first logs its plan and the TensorBoard
command.
Writes there: TensorBoard scalars (bits/dim, KL per layer), `samples.png`, `reconstructions.png`,
and `results.json` (test bits/dim, ELBO and importance-sampled with k=`--num_importance_samples`;
`config.metric` says whether the edge bins were scored as a proper PMF or, `--metric=reference`,
as the authors' code scores them). The paper's form of the decoder scale (starting at 0) is
`--decoder_scale_init=zero`; the default matches it to the first batch.

With the flags that trained it, `--mode=evaluate` evaluates a `--model_dir`'s newest checkpoint
(its averaged weights, k=`--num_importance_samples`; one summary line and
`evaluation_step<S>_k<K>.json`) and `--mode=sample --temperature=0.7` writes
`samples_step<S>_t0.7.png` (every layer's prior scale times 0.7), training nothing.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import app, flags

import vae_harness as harness
from tfp_iaf import tf_keras, vae
from tfp_iaf.vae import ResNetVAE

DEFAULT_EPOCHS = 1  # unless --epochs or --num_steps is given

flags.DEFINE_integer("depth", 2, "Resolution stages (the first at 16x16).")
flags.DEFINE_integer("num_blocks", 2, "Stochastic ResNet layers per stage.")
flags.DEFINE_integer("hidden_size", 160, "ResNet channels (a multiple of --z_size).")
flags.DEFINE_integer("z_size", 32, "Latent channels per layer.")
flags.DEFINE_integer("iaf_steps", 1, "Conv IAF steps per layer (0: diagonal Gaussian).")
flags.DEFINE_enum("order", "raster", ["raster", "channel"], "Conv IAF order.")
flags.DEFINE_bool("iaf_gated", True, "Gated IAF steps (scale <= 1); --noiaf_gated: affine.")
flags.DEFINE_enum(
    "iaf_init",
    "default",
    list(vae.IAF_INITS),
    "IAF networks: ours, or built and initialised as the authors' code does (reference: "
    "outputs x0.1, weight-normed masked convs, the context unprojected, no log-scale bound).",
)
flags.DEFINE_float("free_bits", 0.25, "KL floor per (layer, channel), nats (0: off).")
flags.DEFINE_integer(
    "free_bits_group_size", None, "Images per free-bits minibatch (unset: each replica's batch)."
)
flags.DEFINE_enum(
    "decoder_scale",
    "pixel",
    ["pixel", "global"],
    "Decoder log-scale per subpixel, predicted by the decoder (pixel), or one scalar (global, "
    "the paper's).",
)
flags.DEFINE_enum(
    "decoder_scale_init",
    "data",
    ["data", "zero"],
    "Decoder log-scale at the start: matched to the first batch (data) or 0 (zero, the paper's).",
)
flags.DEFINE_enum(
    "metric",
    "proper",
    ["proper", "reference"],
    "Evaluation's edge bins: a normalised PMF (proper) or the tails dropped as openai/iaf does "
    "(reference). Training is unchanged.",
)
flags.DEFINE_enum(
    "loss_units",
    "bits_per_dim",
    ["bits_per_dim", "nats_sum"],
    "Training loss: batch-mean bits/dim, or the batch's sum in nats (the authors').",
)
harness.define_experiment_flags(
    __name__,
    dataset="CIFAR-10",
    model_dir="runs/cifar10_vae",
    batch_size=32,
    default_epochs=DEFAULT_EPOCHS,
    ema_momentum=0.999,
    importance_chunk=16,
    eval_batch_size=50,
    mixed_precision_help="float16 convolutions; IAF, log-dets, loss float32.",
)
for _name in ("depth", "num_blocks", "hidden_size", "z_size"):
    flags.register_validator(_name, lambda v: v >= 1, message=f"--{_name} must be at least 1")
flags.register_validator("iaf_steps", lambda v: v >= 0, message="--iaf_steps must be >= 0")
flags.register_validator("free_bits", lambda v: v >= 0, message="--free_bits must be >= 0")
flags.register_validator(
    "free_bits_group_size",
    lambda v: v is None or v >= 1,
    message="--free_bits_group_size must be at least 1",
)
flags.register_multi_flags_validator(
    ["hidden_size", "z_size"],
    lambda f: f["hidden_size"] % f["z_size"] == 0,
    message="--hidden_size must be a multiple of --z_size",
)

IMAGE_SHAPE = (32, 32, 3)
PRESETS = {
    "default": harness.Preset(
        "this script's defaults: a small model that reads well after minutes on a CPU", {}
    ),
    "paper": harness.Preset(
        "the 3.11 bits/dim model as the authors ran it (openai/iaf tf_train.py: depth=1, "
        "num_blocks=20, kl_min=0.1, lr 0.002, 32 images x 8 GPUs, free bits per 32-image "
        "tower, their Adamax on a per-tower sum in nats, one decoder scale starting at 0, "
        "affine IAF steps built and initialised as theirs, Polyak 0.999, their edge bins). "
        "41.1M parameters. They trained until stopped, about two weeks on 8 GPUs: choose "
        "--epochs; 3.111 is with --num_importance_samples=10000",
        {
            "depth": 1,
            "num_blocks": 20,
            "hidden_size": 160,
            "z_size": 32,
            "iaf_steps": 1,
            "iaf_gated": False,
            "iaf_init": "reference",
            "free_bits": 0.1,
            "free_bits_group_size": 32,
            "batch_size": 256,
            "learning_rate": 0.002,
            "ema_momentum": 0.999,
            "optimizer": "reference",
            "loss_units": "nats_sum",
            "decoder_scale": "global",
            "decoder_scale_init": "zero",
            "metric": "reference",
            "num_importance_samples": 1000,
        },
    ),
}
# One field per flag above, defaulting to the flag's default: `Config(num_steps=2)`.
Config = harness.flags_config(__name__)


def make_model(config: Config) -> ResNetVAE:
    """The ResNet VAE of `config` (under the caller's strategy scope and dtype policy)."""
    tf_keras.utils.set_random_seed(config.seed)
    return ResNetVAE(
        IMAGE_SHAPE,
        hidden_size=config.hidden_size,
        z_size=config.z_size,
        depth=config.depth,
        num_blocks=config.num_blocks,
        iaf_steps=config.iaf_steps,
        order=config.order,
        iaf_gated=config.iaf_gated,
        iaf_init=config.iaf_init,
        free_bits=config.free_bits,
        free_bits_group_size=config.free_bits_group_size,
        loss_units=config.loss_units,
        decoder_scale=config.decoder_scale,
        decoder_scale_init=config.decoder_scale_init,
        eval_edge_bins=config.metric,
        seed=config.seed,
    )


def build_model(config: Config, train_batches: tf.data.Dataset) -> ResNetVAE:
    """`make_model`, with weight-norm data-dependent initialisation on one training batch."""
    model = make_model(config)
    model.initialize(next(iter(train_batches)))  # a restored checkpoint overwrites it
    return model


def make_images(
    config: Config, model: ResNetVAE, test_batches: tf.data.Dataset
) -> dict[str, np.ndarray]:
    """36 samples, and 18 test images each followed by its reconstruction, in [0, 1], captioned."""
    samples = model.sample(36, seed=config.seed).numpy()
    originals = next(iter(test_batches))[:18]
    pairs = np.stack([originals.numpy() / 255.0, model.reconstruct(originals).numpy()], axis=1)
    return {
        "samples.png": ("36 samples: means of p(x | z), z from the prior", samples),
        "reconstructions.png": (
            "18 test images, each followed by its reconstruction",
            pairs.reshape(-1, *IMAGE_SHAPE),
        ),
    }


# The three modes (`--mode=train|evaluate|sample`) and `main`, as every example has them.
EXAMPLE = harness.Example(
    load_split=lambda config: harness.load_cifar10,
    build_model=lambda config, batches: build_model(config, batches),
    make_images=lambda config, model, batches: make_images(config, model, batches),
    default_epochs=DEFAULT_EPOCHS,
    headline="bits_per_dim",
    num_samples=36,
)
train_and_evaluate, evaluate, sample = EXAMPLE.train, EXAMPLE.evaluate, EXAMPLE.sample


def main(argv):
    EXAMPLE.main(argv, PRESETS, Config)


if __name__ == "__main__":
    app.run(main)
