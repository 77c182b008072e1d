"""Trainable parameters of the CIFAR-10 example's presets, as `make_model` builds them.

    python bench/model_size.py

Prints one line per preset (and the paper preset with `--iaf_init=default`, our own IAF
networks). The reference's count, 41,557,927, and why ours differs are in
docs/tutorials/cifar10_resnet_vae.md; tests/test_presets_cifar.py derives it from the authors'
layer shapes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfp_iaf import tf_keras, vae

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cifar10_vae.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("cifar10_vae", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cifar10_vae"] = module
    spec.loader.exec_module(module)
    return module


def count_parameters(example, preset: str, **overrides) -> int:
    """The trainable parameters of the example's model under `preset` and `overrides`."""
    tf_keras.utils.set_random_seed(0)
    config = vae.preset_config(example.Config, example.PRESETS, preset, **overrides)
    model = example.make_model(config)
    model(tf.zeros([1, *example.IMAGE_SHAPE], tf.uint8))  # builds every layer
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def main():
    example = _load_example()
    runs = [(name, {}) for name in sorted(example.PRESETS)]
    runs.append(("paper", {"iaf_init": "default"}))
    for name, overrides in runs:
        label = name + "".join(f" --{k}={v}" for k, v in overrides.items())
        print(f"{label}: {count_parameters(example, name, **overrides):,} parameters")


if __name__ == "__main__":
    main()
