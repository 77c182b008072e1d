r"""The IAF paper's MNIST VAE (section 6.1, Table 1), trained by `vae_harness.train`.

Model (paper appendix C): a convolutional encoder of ResNet blocks (3x3, [16, 32, 32] feature
maps, each stage a stride-2 block followed by a stride-1 block), a 450-unit dense layer, a 32-dim
Gaussian latent, a symmetric decoder of transposed convolutions, ELU everywhere, a Bernoulli
likelihood. The posterior is a diagonal Gaussian (`--posterior=diag`) or a diagonal Gaussian
followed by `--iaf_depth` IAF steps on MADEs of two `--iaf_width` hidden layers, fed the encoder's
context `h` (`--posterior=iaf`), or `--planar_depth` planar steps whose parameters the context
gives (`--posterior=planar`, the normalizing-flow baseline of the paper's eq. 6). Adamax with
Polyak averaging; evaluation and samples use the averaged weights.

Train on statically binarized MNIST from a prepared tfds directory (or add `--download`),
then evaluate the test set:

    python examples/mnist_vae.py --posterior=iaf --data_dir=/path/to/tfds \
        --model_dir=runs/mnist_iaf --epochs=3

Killed, the same command resumes from `--model_dir`; with a larger `--num_steps` (or `--epochs`)
it continues to exactly that total, logging "Resumed from step N of M". Ctrl-C (or SIGTERM)
saves a checkpoint at the current step and prints the command that resumes; a run whose loss
becomes non-finite stops at once with exit status 1 and writes no results. Flags are checked
before anything runs; `--iaf_depth` must be at least 1 (`--posterior=diag` is the diagonal
posterior). A run first logs its plan (steps, batch, `--model_dir`, how to resume, the
TensorBoard command); after the training bar come two evaluation bars, each announced: the raw
weights' ELBO (one sample per example), then the averaged weights' ELBO and log p(x). A missing
dataset, a `--model_dir` that is a file or a checkpoint of another configuration ends in a
one-line message and exit status 1 (`--verbose` adds the traceback).
`--dataset=mnist` uses dynamically binarized MNIST instead. Writes to `--model_dir`: TensorBoard
scalars, `samples.png` (a grid of samples), and `results.json` (test ELBO and
importance-sampled log p(x) with k = `--num_importance_samples`, in nats). The paper reaches
-79.88 nats (log p(x), static MNIST, IAF) after far longer training than a CPU run allows; see
docs/benchmarks.md for what this script reaches on a 2-core CPU.

A trained `--model_dir`, with the flags that trained it, trains no further with `--mode`:

    python examples/mnist_vae.py ... --mode=evaluate --num_importance_samples=1000
    python examples/mnist_vae.py ... --mode=sample --temperature=0.7

evaluates the newest checkpoint's averaged weights (logging one summary line, writing
`evaluation_step<S>_k<K>.json`), or writes `samples_step<S>_t<T>.png`, samples with the prior's
scale times `--temperature`. A `--model_dir` without a checkpoint, or a checkpoint of other
flags, ends in one line and exit status 1.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from absl import app, flags

import tfp_iaf
import vae_harness as harness
from tfp_iaf import tf_keras, vae

DEFAULT_EPOCHS = 10  # unless --epochs or --num_steps is given

flags.DEFINE_enum("posterior", "iaf", ["diag", "iaf", "planar"], "Posterior family.")
flags.DEFINE_integer("planar_depth", 8, "Planar steps (--posterior=planar).")
flags.DEFINE_integer("iaf_depth", 2, "IAF steps.")
flags.DEFINE_integer("iaf_width", 320, "Width of the MADE hidden layers (two of them).")
flags.DEFINE_bool("gated", False, "Gated (LSTM-style) IAF updates instead of affine ones.")
flags.DEFINE_integer("context_size", 64, "Size of the encoder's context h fed to the IAF.")
flags.DEFINE_float("free_bits", 0.0, "KL floor lambda per latent unit, in nats (0: off).")
flags.DEFINE_enum(
    "dataset", "binarized_mnist", harness.DATASETS, "Static or dynamic binarization."
)
harness.define_experiment_flags(
    __name__,
    dataset="--dataset",
    model_dir="runs/mnist_vae",
    batch_size=100,
    default_epochs=DEFAULT_EPOCHS,
    ema_momentum=0.998,
    importance_chunk=32,
    eval_batch_size=100,
    mixed_precision_help="float16 encoder and decoder; IAF, log-dets, loss float32.",
)
flags.register_validator(
    "iaf_depth",
    lambda v: v >= 1,
    message="--iaf_depth must be at least 1; for the diagonal posterior use --posterior=diag",
)
for _name in ("iaf_width", "context_size", "planar_depth"):
    flags.register_validator(_name, lambda v: v >= 1, message=f"--{_name} must be at least 1")
flags.register_validator("free_bits", lambda v: v >= 0, message="--free_bits must be >= 0")

TABLE1 = "the paper's Table 1 row {} (dynamically binarized MNIST)"
PRESETS = {
    "default": harness.Preset("this script's defaults (static MNIST, IAF depth 2, width 320)", {}),
    "table1_diag": harness.Preset(
        TABLE1.format("'Diagonal covariance'"), {"dataset": "mnist", "posterior": "diag"}
    ),
    **{
        f"table1_d{depth}_w{width}": harness.Preset(
            TABLE1.format(f"'IAF (Depth = {depth}, Width = {width})'"),
            {"dataset": "mnist", "posterior": "iaf", "iaf_depth": depth, "iaf_width": width},
        )
        for depth, width in ((2, 320), (2, 1920), (4, 1920), (8, 1920))
    },
    "static": harness.Preset(
        "the largest Table 1 IAF (depth 8, width 1920) on statically binarized MNIST, where the "
        "paper reports -79.88 nats (that it used this configuration there is our assumption)",
        {"dataset": "binarized_mnist", "posterior": "iaf", "iaf_depth": 8, "iaf_width": 1920},
    ),
}
LATENT_SIZE = 32
HIDDEN_SIZE = 450
FEATURE_MAPS = (16, 32, 32)


# One field per flag above, defaulting to the flag's default: `Config(num_steps=2)`.
Config = harness.flags_config(__name__)


class ResBlock(tf_keras.layers.Layer):
    """Pre-activation ResNet block: `skip(x) + conv(elu(conv_s(elu(x))))`, 3x3 kernels.

    `conv_s` has stride `stride` (a transposed convolution when `transpose`, upsampling), and
    `skip` is a strided 1x1 (transposed) convolution when the shape changes, else the identity.
    """

    def __init__(self, filters: int, stride: int = 1, transpose: bool = False, **kwargs):
        super().__init__(**kwargs)
        conv = tf_keras.layers.Conv2DTranspose if transpose else tf_keras.layers.Conv2D
        self.conv1 = conv(filters, 3, strides=stride, padding="same")
        self.conv2 = tf_keras.layers.Conv2D(filters, 3, padding="same")
        self.filters, self.stride, self.transpose = filters, stride, transpose
        self.skip = None

    def build(self, input_shape):
        if self.stride != 1 or input_shape[-1] != self.filters:
            conv = tf_keras.layers.Conv2DTranspose if self.transpose else tf_keras.layers.Conv2D
            self.skip = conv(self.filters, 1, strides=self.stride, padding="same")
        super().build(input_shape)

    def call(self, x):
        h = self.conv2(tf.nn.elu(self.conv1(tf.nn.elu(x))))
        return (x if self.skip is None else self.skip(x)) + h


def make_encoder() -> tf_keras.Sequential:
    """`[batch, 28, 28, 1] -> [batch, 450]`: ResNet stages 28 -> 14 -> 7 -> 4, then dense."""
    layers = [tf_keras.layers.Conv2D(FEATURE_MAPS[0], 3, padding="same")]
    for filters in FEATURE_MAPS:
        layers += [ResBlock(filters, stride=2), ResBlock(filters)]
    layers += [
        tf_keras.layers.ELU(),
        tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(HIDDEN_SIZE, activation="elu"),
    ]
    return tf_keras.Sequential(layers, name="encoder")


def make_decoder() -> tf_keras.Sequential:
    """`[N, 32] -> [N, 28, 28, 1]` Bernoulli logits, the encoder mirrored (4 -> 7 -> 14 -> 28)."""
    top = FEATURE_MAPS[-1]
    layers = [
        tf_keras.layers.Dense(HIDDEN_SIZE, activation="elu"),
        tf_keras.layers.Dense(4 * 4 * top, activation="elu"),
        tf_keras.layers.Reshape((4, 4, top)),
    ]
    for i, filters in enumerate(reversed(FEATURE_MAPS)):
        layers += [ResBlock(filters), ResBlock(filters, stride=2, transpose=True)]
        if i == 0:  # 8 -> 7, mirroring the encoder's 7 -> 4
            layers.append(tf_keras.layers.Cropping2D(((0, 1), (0, 1))))
    layers += [tf_keras.layers.ELU(), tf_keras.layers.Conv2D(1, 3, padding="same")]
    return tf_keras.Sequential(layers, name="decoder")


def make_model(config: Config) -> vae.VAE:
    """The VAE of `config`, with a diagonal, IAF or planar-flow posterior."""
    tf_keras.utils.set_random_seed(config.seed)
    flow = None
    if config.posterior == "iaf":
        flow = tfp_iaf.dense_iaf_stack(
            LATENT_SIZE,
            config.iaf_depth,
            [config.iaf_width, config.iaf_width],
            context_size=config.context_size,
            gated=config.gated,
        )
    elif config.posterior == "planar":
        flow = tfp_iaf.PlanarFlow(
            LATENT_SIZE, config.planar_depth, context_size=config.context_size
        )
    elif config.posterior != "diag":
        raise ValueError(
            f"`posterior` must be 'diag', 'iaf' or 'planar'; got {config.posterior!r}"
        )
    return vae.VAE(
        make_encoder(),
        make_decoder(),
        LATENT_SIZE,
        flow=flow,
        free_bits=config.free_bits,
        seed=config.seed,
    )


# The three modes (`--mode=train|evaluate|sample`) and `main`, as every example has them.
EXAMPLE = harness.Example(
    load_split=lambda config: functools.partial(harness.load_mnist, config.dataset),
    build_model=lambda config, batches: make_model(config),
    make_images=lambda config, model, batches: {
        "samples.png": (
            "100 samples: means of p(x | z), z from the prior",
            model.sample(100, seed=config.seed).numpy(),
        )
    },
    default_epochs=DEFAULT_EPOCHS,
    headline="nats",
    num_samples=100,
)
train_and_evaluate, evaluate, sample = EXAMPLE.train, EXAMPLE.evaluate, EXAMPLE.sample


def main(argv):
    EXAMPLE.main(argv, PRESETS, Config)


if __name__ == "__main__":
    app.run(main)
