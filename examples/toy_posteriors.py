r"""The IAF paper's Figure 1: posteriors of a 2-D latent VAE, diagonal Gaussian vs IAF.

A VAE with a 2-D latent `z`, a standard normal prior and a Bernoulli decoder is fitted to a
toy dataset of four datapoints (the one-hot vectors of length 4), once with a diagonal Gaussian
posterior and once with an IAF posterior. The figure shows samples of each datapoint's posterior
(one colour per datapoint) over the prior's contours, with the true posterior of the fitted
decoder, `p(z | x) ~ p(z) p(x | z)`, drawn as contours of the same colour. The true posteriors
split the prior into
four regions that together fill it; diagonal Gaussians can only cover them with ellipses,
leaving gaps between them, while IAF posteriors can take the regions' shapes and fill the prior
(Kingma et al. 2016, https://arxiv.org/abs/1606.04934, Figure 1).

Each panel's title gives the ELBO and the importance-sampled log p(x) (nats, averaged over the
four datapoints; the four probabilities sum to at most 1, so the mean log p(x) is at most
log(1/4) ~ -1.386, reached when each datapoint has probability 1/4) and the KL from the
aggregate posterior `q(z) = mean_n q(z | x_n)` to the prior, a measure of how well the
posteriors fill the prior (0 when they fill it exactly).

Run (no download; a few minutes on 2 CPU cores):

    .venv/bin/python examples/toy_posteriors.py --output_dir=out   # or `make demo`

It logs its plan, the loss every `--log_every` steps of each fit, each posterior's metrics, and
writes `out/toy_posteriors.png` and `out/toy_posteriors.json` (this script's flags and the
metrics). It keeps no checkpoints: a stopped run starts over.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl import app, flags, logging

import tfp_iaf
import vae_harness as harness
from tfp_iaf import tf_keras, vae

tfd = tfp.distributions

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "out", "Directory of the PNG and JSON.")
flags.DEFINE_integer("num_steps", 10000, "Training steps per posterior.")
flags.DEFINE_integer("batch_copies", 64, "Copies of each datapoint per training batch.")
flags.DEFINE_integer("iaf_depth", 6, "IAF steps.")
flags.DEFINE_integer("hidden", 64, "Width of the encoder, decoder and MADE hidden layers.")
flags.DEFINE_float("learning_rate", 5e-3, "Adamax learning rate.")
flags.DEFINE_integer("num_plot_samples", 600, "Posterior samples drawn per datapoint.")
flags.DEFINE_integer("num_importance_samples", 2000, "k for the importance-sampled log p(x).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("log_every", 1000, "Steps between the loss lines logged during each fit.")
flags.register_validator("log_every", lambda v: v >= 1, message="--log_every must be at least 1")

# One field per flag above: what toy_posteriors.json records (absl's own flags left out).
Config = harness.flags_config(__name__)

LATENT_SIZE = 2
CONTEXT_SIZE = 8
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def toy_data() -> np.ndarray:
    """The four datapoints: one-hot vectors of length 4, `[4, 4]` float32."""
    return np.eye(4, dtype=np.float32)


def _mlp(widths: list[int], name: str) -> tf_keras.Sequential:
    layers = [tf_keras.layers.Dense(w, activation="elu") for w in widths[:-1]]
    return tf_keras.Sequential([*layers, tf_keras.layers.Dense(widths[-1])], name=name)


def make_model(iaf_depth: int, hidden: int, seed: int) -> vae.VAE:
    """A VAE for the toy data: an IAF posterior of `iaf_depth` steps, diagonal when 0."""
    tf_keras.utils.set_random_seed(seed)
    encoder = tf_keras.Sequential(
        [tf_keras.layers.Dense(hidden, activation="elu") for _ in range(2)], name="encoder"
    )
    decoder = _mlp([hidden, hidden, 4], "decoder")
    flow = None
    if iaf_depth:
        flow = tfp_iaf.dense_iaf_stack(
            LATENT_SIZE, iaf_depth, [hidden, hidden], context_size=CONTEXT_SIZE
        )
    return vae.VAE(encoder, decoder, LATENT_SIZE, flow=flow, seed=seed)


class LogLoss(tf_keras.callbacks.Callback):
    """Logs `"<name> posterior: step n of N, loss L nats (t s)"` every `every` steps and last."""

    def __init__(self, name: str, num_steps: int, every: int):
        super().__init__()
        self.name, self.num_steps, self.every = name, num_steps, every
        self.start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.every == 0 or step == self.num_steps:
            logging.info(
                "%s posterior: step %d of %d, loss %.3f nats (%.0f s)",
                self.name, step, self.num_steps, float(logs["loss"]), time.time() - self.start,
            )  # fmt: skip


def fit(
    model: vae.VAE,
    num_steps: int,
    batch_copies: int,
    learning_rate: float,
    log_every: int = 1000,
    name: str = "",
) -> None:
    """Fits the model to the toy data: `num_steps` Adamax steps on full batches, logging the
    loss (the negative ELBO) every `log_every` steps."""
    batch = np.tile(toy_data(), (batch_copies, 1))
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    model.compile(optimizer=harness.make_optimizer(learning_rate, ema_momentum=None))
    callbacks = [LogLoss(name, num_steps, log_every)]
    model.fit(dataset, epochs=1, steps_per_epoch=num_steps, verbose=0, callbacks=callbacks)


def evaluate(model: vae.VAE, num_samples: int, seed: int) -> dict[str, float]:
    """ELBO and log p(x) (k = `num_samples`) averaged over the datapoints, and the aggregate KL.

    The aggregate posterior's `KL(q(z) || p(z))`, `q(z) = mean_n q(z | x_n)`, is estimated with
    `num_samples` samples of every `q(z | x_n)` (IAF densities at foreign points run the inverse).
    """
    x = tf.constant(toy_data())
    est = vae.importance_sampled_log_likelihood(
        model.log_weights, x, num_samples, chunk_size=500, seed=seed
    )
    z, _ = model.sample_posterior(x, num_samples, tf.constant([seed, 1]))
    q = model.posterior(x)
    z_all = tf.reshape(z, [-1, 1, LATENT_SIZE])  # every sample against every datapoint
    log_q_agg = vae.log_mean_exp(q.log_prob(z_all), axis=-1)
    log_p = tfd.MultivariateNormalDiag(tf.zeros(LATENT_SIZE)).log_prob(z_all[:, 0])
    return {
        "elbo": float(tf.reduce_mean(est.elbo)),
        "log_px": float(tf.reduce_mean(est.log_px)),
        "aggregate_kl": float(tf.reduce_mean(log_q_agg - log_p)),
    }


GRID = np.linspace(-3.5, 3.5, 161)
BEST_LOG_PX = float(np.log(0.25))  # four datapoints whose probabilities sum to at most 1


def true_posterior(model: vae.VAE) -> np.ndarray:
    """`p(z | x_n)` of the fitted decoder on `GRID x GRID`, normalised on the grid: `[4, G, G]`."""
    zz = np.stack(np.meshgrid(GRID, GRID), axis=-1).reshape(-1, 1, LATENT_SIZE).astype(np.float32)
    logits = model.decode(tf.constant(zz))  # [G * G, 1, 4]
    labels = tf.broadcast_to(tf.constant(toy_data()), [zz.shape[0], 4, 4])
    log_lik = -tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=tf.tile(logits, [1, 4, 1])),
        axis=-1,
    )  # [G * G, 4]
    log_joint = log_lik.numpy() - 0.5 * np.sum(zz[:, 0] ** 2, axis=-1, keepdims=True)
    post = np.exp(log_joint - log_joint.max(axis=0))
    post /= post.sum(axis=0)
    return post.T.reshape(4, len(GRID), len(GRID))


def _mass_levels(density: np.ndarray, masses: tuple[float, ...]) -> list[float]:
    """Density levels whose superlevel sets hold `masses` of a density normalised on a grid."""
    values = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(values)
    return sorted(float(values[np.searchsorted(cumulative, m)]) for m in masses)


def plot(panels: list[tuple[str, np.ndarray, dict[str, float], np.ndarray]], path: str) -> None:
    """One panel per posterior: samples `[S, 4, 2]` by datapoint, true posteriors, prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 6.8), squeeze=False)
    # Fixed margins: the two-line figure title above the panels' three-line titles, the shared
    # legend below the axis labels.
    fig.subplots_adjust(left=0.06, right=0.98, top=0.81, bottom=0.2, wspace=0.2)
    xx, yy = np.meshgrid(GRID, GRID)
    prior = np.exp(-0.5 * (xx**2 + yy**2)) / (2 * np.pi)
    for ax, (title, z, metrics, post) in zip(axes[0], panels, strict=True):
        ax.contourf(xx, yy, prior, levels=12, cmap="Greys", alpha=0.45)
        # Circles |z| = 1, 2, 3 hold 39%, 86% and 99% of the prior's mass.
        ax.contour(xx, yy, xx**2 + yy**2, levels=[1.0, 4.0, 9.0], colors="k", linewidths=0.6)
        for n, color in enumerate(COLORS):
            ax.scatter(z[:, n, 0], z[:, n, 1], s=3, alpha=0.45, color=color)
            ax.contour(
                xx, yy, post[n], levels=_mass_levels(post[n], (0.9, 0.5)), colors=color,
                linewidths=1.4, linestyles=["dashed", "solid"],
            )  # fmt: skip
        ax.set(xlim=(GRID[0], GRID[-1]), ylim=(GRID[0], GRID[-1]), aspect="equal")
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        ax.set_title(
            f"{title}\nELBO {metrics['elbo']:.3f}, log p(x) {metrics['log_px']:.3f} nats\n"
            f"KL(aggregate q || prior) {metrics['aggregate_kl']:.3f} nats",
            fontsize=10,
        )
    onehot = ["(1,0,0,0)", "(0,1,0,0)", "(0,0,1,0)", "(0,0,0,1)"]
    handles = [
        Line2D([], [], ls="", marker="o", ms=5, color=c, label=f"q(z | x = {v}) samples")
        for c, v in zip(COLORS, onehot, strict=True)
    ]
    handles += [
        Line2D([], [], color="0.3", lw=1.4, label="true p(z | x): 50% of its mass"),
        Line2D([], [], color="0.3", lw=1.4, ls="--", label="true p(z | x): 90% of its mass"),
        Line2D([], [], color="k", lw=0.6, label="prior N(0, I): |z| = 1, 2, 3 (39/86/99%)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(
        "Posteriors of four datapoints over the N(0, I) prior (grey)\n"
        f"best attainable mean log p(x): log(1/4) = {BEST_LOG_PX:.3f} nats",
        fontsize=11,
        y=0.985,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    del argv
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    png = os.path.join(FLAGS.output_dir, "toy_posteriors.png")
    logging.info(
        "Plan: fit a diagonal, then an IAF posterior (%d steps each, the loss logged every %d), "
        "evaluate each (log p(x) with k=%d), then write %s and toy_posteriors.json.",
        FLAGS.num_steps, FLAGS.log_every, FLAGS.num_importance_samples, png,
    )  # fmt: skip
    panels, results = [], {}
    for posterior_kind in ("diag", "iaf"):
        logging.info("Fitting the %s posterior (%d steps).", posterior_kind, FLAGS.num_steps)
        depth = FLAGS.iaf_depth if posterior_kind == "iaf" else 0
        model = make_model(depth, FLAGS.hidden, FLAGS.seed)
        fit(
            model, FLAGS.num_steps, FLAGS.batch_copies, FLAGS.learning_rate, FLAGS.log_every,
            posterior_kind,
        )  # fmt: skip
        metrics = evaluate(model, FLAGS.num_importance_samples, FLAGS.seed)
        logging.info(
            "%s posterior: ELBO %.3f, log p(x) %.3f nats (best: %.3f), KL(aggregate q || prior) "
            "%.3f nats.",
            posterior_kind, metrics["elbo"], metrics["log_px"], BEST_LOG_PX,
            metrics["aggregate_kl"],
        )  # fmt: skip
        z, _ = model.sample_posterior(
            tf.constant(toy_data()), FLAGS.num_plot_samples, tf.constant([FLAGS.seed, 2])
        )
        title = (
            "Diagonal Gaussian posterior"
            if posterior_kind == "diag"
            else f"IAF posterior ({FLAGS.iaf_depth} steps)"
        )
        panels.append((title, z.numpy(), metrics, true_posterior(model)))
        results[posterior_kind] = metrics
    plot(panels, png)
    own_flags = dataclasses.asdict(Config.from_flags())
    with open(os.path.join(FLAGS.output_dir, "toy_posteriors.json"), "w") as f:
        json.dump({"flags": own_flags, "results": results}, f, indent=2)
    logging.info("Wrote %s", png)


if __name__ == "__main__":
    app.run(main)
