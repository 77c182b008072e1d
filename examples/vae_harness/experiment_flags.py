"""The absl flags of the VAE examples: the ones they share, their checks, and their dataclass.

- `define_experiment_flags(__name__, ...)`: defines the training and evaluation flags every
  example has (the settings `vae_harness.run_experiment` reads, and `--optimizer`,
  `--preset`, `--strategy`, `--mixed_precision`, `--jit_compile`, `--verbose`, and `--mode`
  and `--temperature`, which `vae_harness.trained` reads), with the example's own defaults,
  filed under the example's module, and registers their parse-time checks
  (`register_flag_validators`). The example then defines only its model's flags.
- `flags_config(__name__)` turns the flags a module defined into a dataclass (one field per
  flag, defaulting to the flag's default), so no flag is restated; `Config.from_flags()` holds
  the parsed values.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import sys
import types
from collections.abc import Callable
from typing import Any, Self

from absl import flags

__all__ = [
    "FlagsConfig",
    "define_experiment_flags",
    "flags_config",
    "register_flag_validators",
]


def define_experiment_flags(
    module_name: str,
    *,
    dataset: str,
    model_dir: str,
    batch_size: int,
    default_epochs: int,
    ema_momentum: float,
    importance_chunk: int,
    eval_batch_size: int,
    mixed_precision_help: str,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> None:
    """Defines the flags every VAE example shares, with its defaults, and their checks.

    The flags are filed under `module_name`, as if the example had defined them itself, so
    `flags_config(module_name)` has a field for each. Call it where the example defines its
    flags, with `__name__` (a script run as `__main__` works too).

    Args:
      module_name: the example's module name (`__name__`).
      dataset: what `--data_dir` holds and `--download` fetches, for the help texts.
      model_dir: default of `--model_dir`.
      batch_size: default of `--batch_size` (the global batch, over all replicas).
      default_epochs: the epochs run when neither `--epochs` nor `--num_steps` is given (the
        example passes the same number to `run_experiment`), for the help text.
      ema_momentum: default of `--ema_momentum` (Polyak averaging decay).
      importance_chunk: default of `--importance_chunk` (importance samples per pass).
      eval_batch_size: default of `--eval_batch_size`.
      mixed_precision_help: what `--mixed_precision` computes in float16, for its help text.
      flag_values: the flag registry.
    """
    if module_name == "__main__":  # where absl files a script's own flags
        module_name = sys.argv[0]
    define = {"flag_values": flag_values, "module_name": module_name}
    _define_training_flags(define, batch_size, default_epochs, ema_momentum)
    _define_run_flags(define, dataset, model_dir, mixed_precision_help)
    _define_evaluation_flags(define, importance_chunk, eval_batch_size)
    register_flag_validators(flag_values)


def _define_training_flags(
    define: dict, batch_size: int, default_epochs: int, ema_momentum: float
) -> None:
    """The budget, the optimizer and the preset."""
    flags.DEFINE_integer("batch_size", batch_size, "Global training batch size.", **define)
    flags.DEFINE_integer(
        "epochs",
        None,
        f"Training epochs (default {default_epochs} unless --num_steps is set; not both).",
        **define,
    )
    flags.DEFINE_integer(
        "num_steps",
        None,
        "Training steps of all runs in --model_dir (not with --epochs).",
        **define,
    )
    flags.DEFINE_float("learning_rate", 2e-3, "Adamax learning rate.", **define)
    flags.DEFINE_float(
        "clip_norm", None, "Clip the gradients' global norm to this (unset: off).", **define
    )
    flags.DEFINE_float("ema_momentum", ema_momentum, "Polyak averaging decay.", **define)
    flags.DEFINE_enum(
        "optimizer",
        "adamax",
        ["adamax", "reference"],
        "Keras Adamax, or the authors' (no bias correction; see vae_harness.make_optimizer).",
        **define,
    )
    flags.DEFINE_string(
        "preset", None, "A named configuration (--preset=list shows them).", **define
    )


def _define_run_flags(
    define: dict, dataset: str, model_dir: str, mixed_precision_help: str
) -> None:
    """Where the data and the run's files are, how often it saves, how its steps run."""
    flags.DEFINE_string(
        "data_dir", None, f"tfds data directory holding a prepared copy of {dataset}.", **define
    )
    flags.DEFINE_bool("download", False, f"Let tfds download {dataset}.", **define)
    flags.DEFINE_string(
        "model_dir", model_dir, "Checkpoints, TensorBoard logs, results.", **define
    )
    flags.DEFINE_integer("save_every", 500, "Steps between checkpoints.", **define)
    flags.DEFINE_float(
        "save_every_minutes",
        5.0,
        "Also save a checkpoint at the first step ending this many minutes after the last one, "
        "so a hard kill (kill -9, a lost machine) loses at most that much training; 0 saves "
        "after every step. Ctrl-C and SIGTERM save at the step reached.",
        **define,
    )
    flags.DEFINE_enum(
        "strategy", "default", ["default", "mirrored", "multi_worker"], "Distribution.", **define
    )
    flags.DEFINE_bool("mixed_precision", False, mixed_precision_help, **define)
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.", **define)


def _define_evaluation_flags(define: dict, importance_chunk: int, eval_batch_size: int) -> None:
    """The evaluation, the seed, the mode (train, evaluate, sample) and the error output."""
    flags.DEFINE_integer(
        "num_importance_samples", 128, "k of the importance-sampled log p(x).", **define
    )
    flags.DEFINE_integer(
        "importance_chunk", importance_chunk, "Importance samples per pass (memory).", **define
    )
    flags.DEFINE_integer("eval_batch_size", eval_batch_size, "Evaluation batch size.", **define)
    flags.DEFINE_integer(
        "num_eval_examples", None, "Evaluate on the first N test examples only.", **define
    )
    flags.DEFINE_integer("seed", 0, "Random seed.", **define)
    flags.DEFINE_enum(
        "mode",
        "train",
        ["train", "evaluate", "sample"],
        "train (resuming from --model_dir), or restore --model_dir's newest checkpoint and "
        "evaluate it (test ELBO and log p(x) at k=--num_importance_samples) or sample a grid "
        "(at --temperature), training nothing.",
        **define,
    )
    flags.DEFINE_float(
        "temperature",
        1.0,
        "--mode=sample: the prior's scale is multiplied by this (1: the prior itself).",
        **define,
    )
    flags.DEFINE_bool(
        "verbose",
        False,
        "On an expected failure (no dataset, a --model_dir that is a file, a checkpoint of "
        "another configuration), the traceback too, not only the one-line message.",
        **define,
    )


class FlagsConfig:
    """Base of the dataclasses that `flags_config` makes: an example's settings, one per flag."""

    @classmethod
    def from_flags(cls, flag_values: flags.FlagValues = flags.FLAGS) -> Self:
        """The settings as parsed from the command line (`flag_values` must be parsed)."""
        return cls(**{f.name: flag_values[f.name].value for f in dataclasses.fields(cls)})


def flags_config(
    module: str | types.ModuleType,
    flag_values: flags.FlagValues = flags.FLAGS,
    name: str = "Config",
) -> type[FlagsConfig]:
    """A dataclass with one field per flag that `module` defines, in order of definition.

    Each field defaults to its flag's default, so `Config(num_steps=2)` is the configuration of
    the command line `--num_steps=2`, and an unknown keyword is a `TypeError` as for any
    dataclass. Call it after the module's `flags.DEFINE_*` calls.

    Args:
      module: the module (or its `__name__`) that defined the flags; `"__main__"` works for a
        script run from the command line (absl files its flags under `sys.argv[0]`).
      flag_values: the flag registry.
      name: the class's name.

    Returns:
      A dataclass, subclass of `FlagsConfig`.

    Raises:
      ValueError: `module` defines no flags.
    """
    module_name = getattr(module, "__name__", module)
    defined = flag_values.get_flags_for_module(module)
    if not defined:
        raise ValueError(
            f"`module` must have defined absl flags before `flags_config` is called; got "
            f"{module_name!r}, which defines none"
        )
    fields = []
    for flag in defined:
        if flag.default.__class__.__hash__ is None:  # a list flag: each instance its own copy
            default = dataclasses.field(default_factory=functools.partial(copy.copy, flag.default))
        else:
            default = dataclasses.field(default=flag.default)
        fields.append((flag.name, Any, default))
    namespace = {
        "__module__": module_name,
        "__doc__": f"The settings of `{module_name}`, one per flag, defaulting to the flag's.",
    }
    return dataclasses.make_dataclass(name, fields, bases=(FlagsConfig,), namespace=namespace)


def _check(name: str, test: Callable[[Any], bool], expected: str, flag_values) -> None:
    flags.register_validator(
        name,
        lambda v: v is None or test(v),
        message=f"--{name} must be {expected}",
        flag_values=flag_values,
    )


def register_flag_validators(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Parse-time checks of the flags every example defines (the settings `run_experiment`
    reads), so a bad value fails before any data or TensorFlow work, naming the flag.

    Call it after the `flags.DEFINE_*` calls. `--epochs`, `--num_steps` and
    `--num_eval_examples` may be unset (None); `--epochs` and `--num_steps` not both set.
    """
    for name in (
        "batch_size", "epochs", "num_steps", "save_every", "num_importance_samples",
        "importance_chunk", "eval_batch_size", "num_eval_examples",
    ):  # fmt: skip
        _check(name, lambda v: v >= 1, "a positive integer", flag_values)
    _check("seed", lambda v: v >= 0, "a non-negative integer", flag_values)
    _check(
        "save_every_minutes",
        lambda v: math.isfinite(v) and v >= 0,
        "a finite number of minutes >= 0",
        flag_values,
    )
    _check("learning_rate", lambda v: math.isfinite(v) and v > 0, "a positive number", flag_values)
    _check("ema_momentum", lambda v: 0 <= v < 1, "in [0, 1)", flag_values)
    _check("clip_norm", lambda v: math.isfinite(v) and v > 0, "a positive number", flag_values)
    _check("temperature", lambda v: math.isfinite(v) and v > 0, "a positive number", flag_values)
    flags.register_multi_flags_validator(
        ["epochs", "num_steps"],
        lambda f: f["epochs"] is None or f["num_steps"] is None,
        message="--epochs and --num_steps cannot both be set: --num_steps counts the steps of "
        "all runs in --model_dir, --epochs passes over the data",
        flag_values=flag_values,
    )
