r"""The IAF paper's MNIST VAE (section 6.1, Table 1), trained with Keras `fit`.

Model (paper appendix C): a convolutional encoder of ResNet blocks (3x3, [16, 32, 32] feature
maps, each stage a stride-2 block followed by a stride-1 block), a 450-unit dense layer, a 32-dim
Gaussian latent, a symmetric decoder of transposed convolutions, ELU everywhere, a Bernoulli
likelihood. The posterior is a diagonal Gaussian (`--posterior=diag`) or a diagonal Gaussian
followed by `--iaf_depth` IAF steps on MADEs of two `--iaf_width` hidden layers, fed the encoder's
context `h` (`--posterior=iaf`). Adamax with Polyak averaging; evaluation and samples use the
averaged weights.

Train on statically binarized MNIST from a prepared tfds directory (or add `--download`),
then evaluate the test set:

    python examples/mnist_vae.py --posterior=iaf --data_dir=/path/to/tfds \
        --model_dir=runs/mnist_iaf --epochs=3

Killed, the same command resumes from `--model_dir`; with a larger `--epochs` it continues.
`--dataset=mnist` uses dynamically binarized MNIST instead. Writes to `--model_dir`: TensorBoard
scalars, `samples.png` (a grid of samples), and `results.json` (test ELBO and
importance-sampled log p(x) with k = `--num_importance_samples`, in nats). The paper reaches
-79.88 nats (log p(x), static MNIST, IAF) after far longer training than a CPU run allows; see
docs/benchmarks.md for what this script reaches on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import time

import tensorflow as tf
from absl import app, flags, logging

import tfp_iaf
from tfp_iaf import vae
from tfp_iaf._keras import tf_keras

FLAGS = flags.FLAGS
flags.DEFINE_enum("posterior", "iaf", ["diag", "iaf"], "Posterior family.")
flags.DEFINE_integer("iaf_depth", 2, "IAF steps.")
flags.DEFINE_integer("iaf_width", 320, "Width of the MADE hidden layers (two of them).")
flags.DEFINE_bool("gated", False, "Gated (LSTM-style) IAF updates instead of affine ones.")
flags.DEFINE_integer("context_size", 64, "Size of the encoder's context h fed to the IAF.")
flags.DEFINE_float("free_bits", 0.0, "KL floor lambda per latent unit, in nats (0: off).")
flags.DEFINE_integer("batch_size", 100, "Training batch size.")
flags.DEFINE_integer("epochs", None, "Training epochs (default 10 unless --num_steps is set).")
flags.DEFINE_integer("num_steps", None, "Training steps, instead of --epochs.")
flags.DEFINE_float("learning_rate", 2e-3, "Adamax learning rate.")
flags.DEFINE_float("ema_momentum", 0.998, "Polyak averaging decay.")
flags.DEFINE_enum("dataset", "binarized_mnist", vae.DATASETS, "Static or dynamic binarization.")
flags.DEFINE_string("data_dir", None, "tfds data directory holding a prepared copy.")
flags.DEFINE_bool("download", False, "Let tfds download the dataset.")
flags.DEFINE_string("model_dir", "runs/mnist_vae", "Checkpoints, TensorBoard logs, results.")
flags.DEFINE_integer("save_every", 500, "Steps between checkpoints.")
flags.DEFINE_integer("num_importance_samples", 128, "k of the importance-sampled log p(x).")
flags.DEFINE_integer("importance_chunk", 32, "Importance samples drawn per pass (memory).")
flags.DEFINE_integer("eval_batch_size", 100, "Evaluation batch size.")
flags.DEFINE_integer("num_eval_examples", None, "Evaluate on the first N test examples only.")
flags.DEFINE_integer("seed", 0, "Random seed.")

LATENT_SIZE = 32
HIDDEN_SIZE = 450
FEATURE_MAPS = (16, 32, 32)


@dataclasses.dataclass
class Config:
    """Everything `train_and_evaluate` needs; the defaults are the flags' defaults."""

    posterior: str = "iaf"
    iaf_depth: int = 2
    iaf_width: int = 320
    gated: bool = False
    context_size: int = 64
    free_bits: float = 0.0
    batch_size: int = 100
    epochs: int | None = None
    num_steps: int | None = None
    learning_rate: float = 2e-3
    ema_momentum: float = 0.998
    dataset: str = "binarized_mnist"
    data_dir: str | None = None
    download: bool = False
    model_dir: str = "runs/mnist_vae"
    save_every: int = 500
    num_importance_samples: int = 128
    importance_chunk: int = 32
    eval_batch_size: int = 100
    num_eval_examples: int | None = None
    seed: int = 0


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
    """The VAE of `config`, with a diagonal or IAF posterior."""
    tf_keras.utils.set_random_seed(config.seed)
    flow, context = None, None
    if config.posterior == "iaf":
        context = config.context_size
        flow = tfp_iaf.dense_iaf_stack(
            LATENT_SIZE,
            config.iaf_depth,
            [config.iaf_width, config.iaf_width],
            context_size=context,
            gated=config.gated,
        )
    elif config.posterior != "diag":
        raise ValueError(f"`posterior` must be 'diag' or 'iaf'; got {config.posterior!r}")
    return vae.VAE(
        make_encoder(),
        make_decoder(),
        LATENT_SIZE,
        flow=flow,
        context_size=context,
        free_bits=config.free_bits,
        seed=config.seed,
    )


def evaluate(model: vae.VAE, dataset: tf.data.Dataset, config: Config) -> dict[str, float]:
    """Test-set ELBO and importance-sampled log p(x), in nats per example."""
    log_weights = tf.function(model.log_weights, reduce_retracing=True)
    result = vae.evaluate_dataset(
        log_weights,
        dataset,
        config.num_importance_samples,
        chunk_size=config.importance_chunk,
        seed=config.seed,
    )
    result["bits_per_dim"] = float(vae.bits_per_dim(result["log_px"], 28 * 28))
    return result


def train_and_evaluate(config: Config) -> dict:
    """Trains (resuming from `config.model_dir`), writes samples and `results.json`."""
    os.makedirs(config.model_dir, exist_ok=True)
    load = dict(data_dir=config.data_dir, download=config.download, seed=config.seed)
    train_ds, num_train = vae.load_mnist(
        config.dataset,
        "train",
        config.batch_size,
        shuffle=True,
        repeat=True,
        drop_remainder=True,
        **load,
    )
    test_split = "test"
    if config.num_eval_examples is not None:
        test_split = f"test[:{config.num_eval_examples}]"
    test_ds, _ = vae.load_mnist(config.dataset, test_split, config.eval_batch_size, **load)
    if config.num_steps is None:
        schedule = vae.fit_schedule(num_train, config.batch_size, epochs=config.epochs or 10)
    else:
        schedule = vae.fit_schedule(num_train, config.batch_size, num_steps=config.num_steps)
    epochs, steps_per_epoch = schedule
    model = make_model(config)
    model.compile(optimizer=vae.make_optimizer(config.learning_rate, config.ema_momentum))
    nan_counter = vae.NonFiniteLossCounter()
    start = time.time()
    history = vae.train(
        model,
        train_ds,
        model_dir=config.model_dir,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        save_every=config.save_every,
        callbacks=[nan_counter],
    )
    train_seconds = time.time() - start
    # `fit` has replaced the weights with their Polyak averages: evaluate and sample with them.
    samples = model.sample(100, seed=config.seed).numpy()
    vae.save_image_grid(samples, os.path.join(config.model_dir, "samples.png"))
    start = time.time()
    result = evaluate(model, test_ds, config)
    results = {
        "test_elbo": result["elbo"],
        "test_log_px": result["log_px"],
        "test_bits_per_dim": result["bits_per_dim"],
        "num_test_examples": result["num_examples"],
        "num_importance_samples": config.num_importance_samples,
        "steps": int(model.optimizer.iterations.numpy()),
        "epochs_this_run": len(history.epoch),
        "train_seconds_this_run": train_seconds,
        "eval_seconds": time.time() - start,
        "non_finite_loss_steps": nan_counter.count,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "config": dataclasses.asdict(config),
    }
    vae.write_scalars(
        os.path.join(config.model_dir, "tensorboard", "test"),
        results["steps"],
        {"elbo": results["test_elbo"], "log_px": results["test_log_px"]},
    )
    with open(os.path.join(config.model_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    logging.info(
        "Test: ELBO %.2f, log p(x) %.2f nats (k=%d, %d examples, %d steps).",
        results["test_elbo"],
        results["test_log_px"],
        config.num_importance_samples,
        results["num_test_examples"],
        results["steps"],
    )
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = Config(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(Config)})
    train_and_evaluate(config)


if __name__ == "__main__":
    app.run(main)
