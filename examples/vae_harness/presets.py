"""Named sets of an example's flag values (`--preset=paper`); flags given explicitly win.

An example declares its presets as `{name: Preset(description, {flag: value})}` and calls
`apply_preset(presets)` in `main` before reading its flags:

- `--preset=NAME` sets every flag of the preset that the command line did not set, so
  `--preset=paper --num_steps=2` is the paper's model trained for two steps;
- `--preset=list` prints the presets, one per line with what it sets, and exits;
- an unknown name is a usage error naming `--preset` and the value.

`preset_config(Config, presets, name, **overrides)` builds the same configuration without flags
(tests, notebooks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from absl import app, flags

__all__ = ["Preset", "apply_preset", "describe_presets", "preset_config"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named configuration: what it reproduces, and the flag values it sets."""

    description: str
    values: Mapping[str, Any]


def _checked(presets: Mapping[str, Preset], name: str) -> Preset:
    if name not in presets:
        raise ValueError(f"`preset` must be one of {sorted(presets)} or 'list'; got {name!r}")
    return presets[name]


def describe_presets(presets: Mapping[str, Preset]) -> str:
    """One block per preset: its name and description, then the flags it sets."""
    blocks = []
    for name, preset in presets.items():
        values = " ".join(f"--{k}={v}" for k, v in preset.values.items()) or "(the defaults)"
        blocks.append(f"{name}: {preset.description}\n    {values}")
    return "\n".join(blocks)


def apply_preset(
    presets: Mapping[str, Preset],
    flag_values: flags.FlagValues = flags.FLAGS,
    print_fn: Callable[[str], None] = print,
) -> str | None:
    """Applies `--preset` to `flag_values`: its values, except for flags given explicitly.

    Returns:
      The preset's name, or None without `--preset`.

    Raises:
      SystemExit: `--preset=list` (after printing the presets), status 0.
      app.UsageError: an unknown preset.
      flags.IllegalFlagValueError: a preset value that a flag's validator rejects.
    """
    name = flag_values["preset"].value
    if name is None:
        return None
    if name == "list":
        print_fn(describe_presets(presets))
        raise SystemExit(0)
    try:
        preset = _checked(presets, name)
    except ValueError as e:
        raise app.UsageError(str(e).replace("`preset`", "--preset")) from None
    for flag, value in preset.values.items():
        if not flag_values[flag].present:  # the command line wins
            flag_values[flag].value = value
    flag_values.validate_all_flags()
    return name


def preset_config(config_cls, presets: Mapping[str, Preset], name: str, **overrides):
    """`config_cls(**preset values, preset=name, **overrides)`: the preset without flags.

    Raises:
      ValueError: an unknown preset `name`.
    """
    return config_cls(**{**_checked(presets, name).values, "preset": name, **overrides})
