"""Trainable parameters of the CIFAR-10 example's presets, against the authors' 3.11 model.

    python -m bench.model_size

Prints one line per preset as `make_model` builds it (and the paper preset with
`--iaf_init=default`, our own IAF networks), then the count of openai/iaf's `tf_train.py` for
the 3.11 model, derived from its layer shapes (`reference_parameters`), and the part of it that
ours leaves out (`REFERENCE_UNREAD_TOP_BRANCH`). tests/test_presets_cifar.py checks that the
paper preset's count is exactly the difference; docs/tutorials/cifar10_resnet_vae.md cites
these lines.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import vae_harness
from bench import report
from tfp_iaf import tf_keras


def _conv(k: int, n_in: int, n_out: int) -> int:
    """A weight-normed convolution of the authors' code: `V`, then `g` and `b` per output."""
    return k * k * n_in * n_out + 2 * n_out


def reference_parameters(blocks: int = 20, h: int = 160, z: int = 32) -> int:
    """The trainable variables that openai/iaf's `tf_train.py` creates for its 3.11 model
    (`depth=1`: no layer downsamples). Every `conv2d`/`deconv2d` is weight-normed, and so are
    the masked convolutions of `ar_multiconv2d`, their `V` stored whole."""
    per_layer = (
        _conv(3, h, 2 * z + 2 * h)  # up_conv1: q mean, q log-sd, up context, residual branch
        + _conv(3, h, h)  # up_conv3
        + _conv(3, h, 4 * z + 2 * h)  # down_conv1: prior, posterior offsets, context, h_det
        + _conv(3, z, h) + _conv(3, h, h) + 2 * _conv(3, h, z)  # ar_multiconv2d
        + _conv(3, z + h, h)  # down_conv2
    )  # fmt: skip
    x_enc, h_top, x_dec, dec_log_stdv = _conv(5, 3, h), h, 5 * 5 * h * 3 + 2 * 3, 1
    return blocks * per_layer + x_enc + h_top + x_dec + dec_log_stdv


# The reference's top layer computes a bottom-up residual branch (160 channels of up_conv1, and
# up_conv3) whose output nothing reads, so no gradient reaches it; ours omits it
# (`ResNetIAFLayer(top=True)`).
REFERENCE_UNREAD_TOP_BRANCH = 2 * _conv(3, 160, 160)


def count_parameters(example, preset: str, **overrides) -> int:
    """The trainable parameters of the example's model under `preset` and `overrides`."""
    tf_keras.utils.set_random_seed(0)
    config = vae_harness.preset_config(example.Config, example.PRESETS, preset, **overrides)
    model = example.make_model(config)
    model(tf.zeros([1, *example.IMAGE_SHAPE], tf.uint8))  # builds every layer
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def main():
    example = report.load_example("cifar10_vae")
    runs = [(name, {}) for name in sorted(example.PRESETS)]
    runs.append(("paper", {"iaf_init": "default"}))
    for name, overrides in runs:
        label = name + "".join(f" --{k}={v}" for k, v in overrides.items())
        print(f"{label}: {count_parameters(example, name, **overrides):,} parameters")
    print(
        f"openai/iaf tf_train.py, the 3.11 model (from its layer shapes): "
        f"{reference_parameters():,} parameters, of which {REFERENCE_UNREAD_TOP_BRANCH:,} in "
        f"its top layer's unread bottom-up branch"
    )


if __name__ == "__main__":
    main()
