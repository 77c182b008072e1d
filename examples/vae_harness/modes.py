"""An example script's three modes and its `main`, the same for every example.

An example describes itself once, as an `Example`: how it loads a split, builds its model and
draws its image grids for a configuration, and its defaults. Then

- `train(config)` (`--mode=train`): `run_experiment`, resuming from `config.model_dir`;
- `evaluate(config)` (`--mode=evaluate`): `evaluate_trained`, the newest checkpoint's test
  ELBO and log p(x), training nothing;
- `sample(config)` (`--mode=sample`): `sample_trained`, a grid at `config.temperature`;
- `main(argv, presets, config_cls)`: applies `--preset`, reads the flags and runs the mode
  under `run_or_exit` (a stopped run or an expected failure ends in a message and an exit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf
from absl import app

from tfp_iaf import tf_keras
from vae_harness.cli import run_or_exit
from vae_harness.experiment import run_experiment
from vae_harness.experiment_flags import FlagsConfig
from vae_harness.presets import Preset, apply_preset
from vae_harness.trained import LoadSplit, evaluate_trained, sample_trained

__all__ = ["Example"]


@dataclasses.dataclass(frozen=True)
class Example:
    """What an example's modes need of it, each piece a function of the run's `config`.

    Attributes:
      load_split: `config -> load_split` (e.g. `functools.partial(load_mnist, config.dataset)`).
      build_model: `(config, batches) -> model`, uncompiled; the batches (training batches when
        training, test batches when restoring) serve a data-dependent initialisation.
      make_images: `(config, model, test batches) -> {file name: (caption, images)}`, the grids
        written after training.
      default_epochs: the epochs when neither `--epochs` nor `--num_steps` is given.
      headline: the unit of the summary line: "nats" or "bits_per_dim".
      num_samples: the images of `--mode=sample`'s grid.
    """

    load_split: Callable[[FlagsConfig], LoadSplit]
    build_model: Callable[[FlagsConfig, tf.data.Dataset], tf_keras.Model]
    make_images: Callable[[FlagsConfig, tf_keras.Model, tf.data.Dataset], Mapping[str, Any]]
    default_epochs: int
    headline: str
    num_samples: int

    def train(self, config: FlagsConfig) -> dict[str, Any]:
        """Trains (resuming from `config.model_dir`), writes image grids and `results.json`."""
        return run_experiment(
            config,
            load_split=self.load_split(config),
            make_model=lambda batches: self.build_model(config, batches),
            make_images=lambda model, batches: self.make_images(config, model, batches),
            default_epochs=self.default_epochs,
            headline=self.headline,
            strategy=config.strategy,
            mixed_precision=config.mixed_precision,
            jit_compile=config.jit_compile,
        )

    def evaluate(self, config: FlagsConfig) -> dict[str, Any]:
        """`--mode=evaluate`: the test ELBO and log p(x) of `model_dir`'s newest checkpoint."""
        return evaluate_trained(config, headline=self.headline, **self._restoring(config))

    def sample(self, config: FlagsConfig) -> str:
        """`--mode=sample`: `num_samples` samples at `config.temperature`; the PNG's path."""
        return sample_trained(config, num_samples=self.num_samples, **self._restoring(config))

    def _restoring(self, config: FlagsConfig) -> dict[str, Any]:
        """What restoring a trained run of `config` takes of the example."""
        return dict(
            load_split=self.load_split(config),
            make_model=lambda batches: self.build_model(config, batches),
            mixed_precision=config.mixed_precision,
        )

    @property
    def modes(self) -> dict[str, Callable[[FlagsConfig], Any]]:
        """`--mode`'s values and what each runs."""
        return {"train": self.train, "evaluate": self.evaluate, "sample": self.sample}

    def main(
        self, argv: Sequence[str], presets: Mapping[str, Preset], config_cls: type[FlagsConfig]
    ) -> Any:
        """The example's `main`: `--preset` applied, the flags read, `--mode` run to its end.

        Raises:
          app.UsageError: positional arguments, or an unknown preset.
          SystemExit: as `run_or_exit`.
        """
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        apply_preset(presets)
        config = config_cls.from_flags()
        return run_or_exit(lambda: self.modes[config.mode](config), verbose=config.verbose)
