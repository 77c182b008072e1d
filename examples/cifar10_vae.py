r"""The IAF paper's CIFAR-10 ResNet VAE (section 6.2, Table 2), trained with Keras `fit`.

Model: `tfp_iaf.vae.ResNetVAE` (bidirectional inference, a conv IAF in every stochastic layer,
discretized logistic likelihood, free bits per (layer, channel), weight normalisation with
data-dependent initialisation); Adamax with Polyak averaging (evaluation and samples use the
averages). On a GPU machine with CIFAR-10 prepared for tfds (or `--download`):

    python examples/cifar10_vae.py --data_dir=/path/to/tfds --model_dir=runs/cifar10 \
        --depth=2 --num_blocks=2 --hidden_size=160 --z_size=32 --iaf_steps=1 --epochs=100

The paper reports 3.11 bits/dim (test, importance sampled) after training on 8 GPUs for about
two weeks; nothing near that budget has been run for this script (see
docs/tutorials/cifar10_resnet_vae.md). Killed, the same command resumes from `--model_dir`.
Writes there: TensorBoard scalars (bits/dim, KL per layer), `samples.png`, `reconstructions.png`,
and `results.json` (test bits/dim, ELBO and importance-sampled with k=`--num_importance_samples`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags, logging

from tfp_iaf import vae
from tfp_iaf._keras import tf_keras
from tfp_iaf.vae.resnet_vae import ResNetVAE

FLAGS = flags.FLAGS
flags.DEFINE_integer("depth", 2, "Resolution stages (the first at 16x16).")
flags.DEFINE_integer("num_blocks", 2, "Stochastic ResNet layers per stage.")
flags.DEFINE_integer("hidden_size", 160, "ResNet channels (a multiple of --z_size).")
flags.DEFINE_integer("z_size", 32, "Latent channels per layer.")
flags.DEFINE_integer("iaf_steps", 1, "Conv IAF steps per layer (0: diagonal Gaussian).")
flags.DEFINE_enum("order", "raster", ["raster", "channel"], "Conv IAF order.")
flags.DEFINE_float("free_bits", 0.25, "KL floor per (layer, channel), nats (0: off).")
flags.DEFINE_integer("batch_size", 32, "Global training batch size.")
flags.DEFINE_float("learning_rate", 2e-3, "Adamax learning rate.")
flags.DEFINE_float("ema_momentum", 0.999, "Polyak averaging decay.")
flags.DEFINE_integer("epochs", None, "Training epochs (default 1 unless --num_steps is set).")
flags.DEFINE_integer("num_steps", None, "Training steps, instead of --epochs.")
flags.DEFINE_string("data_dir", None, "tfds data directory holding a prepared cifar10.")
flags.DEFINE_bool("download", False, "Let tfds download CIFAR-10.")
flags.DEFINE_string("model_dir", "runs/cifar10_vae", "Checkpoints, TensorBoard logs, results.")
flags.DEFINE_integer("save_every", 500, "Steps between checkpoints.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "Distribution.")
flags.DEFINE_bool("mixed_precision", False, "float16 convolutions; IAF, log-dets, loss float32.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")
flags.DEFINE_integer("num_importance_samples", 128, "k of the importance-sampled log p(x).")
flags.DEFINE_integer("importance_chunk", 16, "Importance samples per pass (memory).")
flags.DEFINE_integer("eval_batch_size", 50, "Evaluation batch size.")
flags.DEFINE_integer("num_eval_examples", None, "Evaluate on the first N test examples only.")
flags.DEFINE_integer("seed", 0, "Random seed.")

IMAGE_SHAPE = (32, 32, 3)
_NUM_EXAMPLES = {"train": 50_000, "test": 10_000}


@dataclasses.dataclass
class Config:
    """Everything `train_and_evaluate` needs; the defaults are the flags' defaults."""

    depth: int = 2
    num_blocks: int = 2
    hidden_size: int = 160
    z_size: int = 32
    iaf_steps: int = 1
    order: str = "raster"
    free_bits: float = 0.25
    batch_size: int = 32
    learning_rate: float = 2e-3
    ema_momentum: float = 0.999
    epochs: int | None = None
    num_steps: int | None = None
    data_dir: str | None = None
    download: bool = False
    model_dir: str = "runs/cifar10_vae"
    save_every: int = 500
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False
    num_importance_samples: int = 128
    importance_chunk: int = 16
    eval_batch_size: int = 50
    num_eval_examples: int | None = None
    seed: int = 0


def load_cifar10(
    split: str, batch_size: int, config: Config, *, train: bool = False
) -> tuple[tf.data.Dataset, int]:
    """Batches of uint8 CIFAR-10 images `[batch, 32, 32, 3]` and the split's size.

    Raises:
      vae.DatasetUnavailableError: CIFAR-10 is not prepared under `data_dir` (and not
        downloadable).
    """
    try:
        ds, info = tfds.load(
            "cifar10",
            split=split,
            data_dir=config.data_dir,
            download=config.download,
            with_info=True,
            shuffle_files=train,
        )
    except (AssertionError, OSError, tfds.download.DownloadError, tf.errors.NotFoundError) as e:
        raise vae.DatasetUnavailableError(
            f"Dataset `cifar10` is not available under data_dir={config.data_dir!r}: point "
            "`--data_dir` at a directory holding `cifar10/<version>/` as written by "
            "`tfds.builder('cifar10').download_and_prepare()`, or pass `--download`. "
            f"({type(e).__name__}: {e})"
        ) from e
    base = split.split("[", 1)[0]
    num = info.splits[base].num_examples if base in info.splits else 0
    ds = ds.map(lambda ex: ex["image"])
    if train:
        ds = ds.shuffle(10_000, seed=config.seed).repeat()
    ds = ds.batch(batch_size, drop_remainder=train)
    return ds.prefetch(tf.data.AUTOTUNE), int(num or _NUM_EXAMPLES[base])


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all local devices) or `multi_worker` (TF_CONFIG).

    Raises:
      ValueError: an unknown `name`.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"`strategy` must be 'default', 'mirrored' or 'multi_worker'; got {name!r}")


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
        free_bits=config.free_bits,
        seed=config.seed,
    )


def evaluate(model: ResNetVAE, dataset: tf.data.Dataset, config: Config) -> dict[str, float]:
    """Test ELBO and importance-sampled log p(x) (nats per image) and their bits/dim."""
    log_weights = tf.function(model.log_weights, reduce_retracing=True)
    result = vae.evaluate_dataset(
        log_weights,
        dataset,
        config.num_importance_samples,
        chunk_size=config.importance_chunk,
        seed=config.seed,
    )
    result["bits_per_dim"] = float(vae.bits_per_dim(result["log_px"], model.num_dims))
    result["elbo_bits_per_dim"] = float(vae.bits_per_dim(result["elbo"], model.num_dims))
    return result


def train_and_evaluate(config: Config) -> dict:
    """Trains (resuming from `config.model_dir`), writes image grids and `results.json`."""
    os.makedirs(config.model_dir, exist_ok=True)
    strategy = make_strategy(config.strategy)
    train_ds, num_train = load_cifar10("train", config.batch_size, config, train=True)
    test_split = (
        "test" if config.num_eval_examples is None else f"test[:{config.num_eval_examples}]"
    )
    test_ds, _ = load_cifar10(test_split, config.eval_batch_size, config)
    if config.num_steps is None:
        schedule = vae.fit_schedule(num_train, config.batch_size, epochs=config.epochs or 1)
    else:
        schedule = vae.fit_schedule(num_train, config.batch_size, num_steps=config.num_steps)
    epochs, steps_per_epoch = schedule
    if config.mixed_precision:
        tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = make_model(config)
            # Weight-norm data-dependent init on one batch; a restored backup overwrites it.
            model.initialize(next(iter(train_ds)))
            model.compile(
                optimizer=vae.make_optimizer(config.learning_rate, config.ema_momentum),
                jit_compile=config.jit_compile,
            )
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
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
    vae.save_image_grid(
        model.sample(36, seed=config.seed).numpy(), os.path.join(config.model_dir, "samples.png")
    )
    originals = next(iter(test_ds))[:18]
    pairs = np.stack([originals.numpy() / 255.0, model.reconstruct(originals).numpy()], axis=1)
    vae.save_image_grid(
        pairs.reshape(-1, *IMAGE_SHAPE), os.path.join(config.model_dir, "reconstructions.png")
    )
    start = time.time()
    result = evaluate(model, test_ds, config)
    results = {
        "test_bits_per_dim": result["bits_per_dim"],
        "test_elbo_bits_per_dim": result["elbo_bits_per_dim"],
        "test_log_px": result["log_px"],
        "test_elbo": result["elbo"],
        "num_test_examples": result["num_examples"],
        "num_importance_samples": config.num_importance_samples,
        "steps": int(model.optimizer.iterations.numpy()),
        "epochs_this_run": len(history.epoch),
        "train_seconds_this_run": train_seconds,
        "eval_seconds": time.time() - start,
        "non_finite_loss_steps": nan_counter.count,
        "num_replicas": strategy.num_replicas_in_sync,
        "config": dataclasses.asdict(config),
    }
    vae.write_scalars(
        os.path.join(config.model_dir, "tensorboard", "test"),
        results["steps"],
        {"bits_per_dim": results["test_bits_per_dim"], "elbo": results["test_elbo"]},
    )
    with open(os.path.join(config.model_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    logging.info(
        "Test: %.3f bits/dim (k=%d), ELBO %.3f bits/dim, %d examples, %d steps.",
        results["test_bits_per_dim"],
        config.num_importance_samples,
        results["test_elbo_bits_per_dim"],
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
