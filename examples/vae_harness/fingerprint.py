"""The model fingerprint: what defines a model and its run, saved with every checkpoint.

`fingerprint(model, settings)` is a flat JSON-ready dict: the model's structure (each module's
class, and a bijector's scalar parameters, e.g. an IAF's `gated`) and the run's settings but
`RESUMABLE_SETTINGS`. Two models with the same variables (an affine and a gated IAF, a
different likelihood or free-bits floor) differ here, where a restore that compares variable
shapes sees nothing. `vae_harness.checkpoints` saves it beside each checkpoint and refuses a
resume whose fingerprint `differences` finds fields in.

Keras's `model.save_weights`/`load_weights` do not check this fingerprint. They do check the
flows' own (`tfp_iaf._fingerprint`: a flow's weights refuse to load into a flow of another
configuration, e.g. an affine IAF's into a gated one), but not the rest of the model: resume
through `vae_harness.train` (or compare `fingerprint`s yourself) to have the model checked.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from typing import Any

from tfp_iaf import tf_keras

__all__ = ["RESUMABLE_SETTINGS", "differences", "fingerprint"]

# Settings a resume may change: the budget, the optimizer's step size and clipping (not the
# shape of its state), the cadence of saves, evaluation and sampling, locations, how the steps
# run, and what the command does with the model (`mode`).
# Every other setting (including any flag an example adds) is part of the fingerprint.
RESUMABLE_SETTINGS = frozenset(
    {
        "epochs", "num_steps", "learning_rate", "clip_norm", "save_every", "save_every_minutes",
        "num_importance_samples", "importance_chunk", "eval_batch_size", "num_eval_examples",
        "data_dir", "download", "model_dir", "strategy", "jit_compile", "verbose", "mode",
        "temperature",
        "preset",  # a name: the settings a preset sets are compared themselves
    }
)  # fmt: skip

_SCALARS = (bool, int, float, str, type(None))


def fingerprint(model: tf_keras.Model, settings: Mapping[str, Any] | None = None) -> dict:
    """What defines `model` and its run, as a flat JSON-ready dict compared on resume.

    Args:
      model: a built model.
      settings: the run's settings (an example's config); all but `RESUMABLE_SETTINGS` count.

    Returns:
      `{setting: value, ..., "module <Class>(param=value, ...)": count, ...}`: one entry per
      fingerprinted setting and per kind of module (its class and, for a bijector, its scalar
      parameters but its name), counting the modules of that kind. Metrics are left out.
    """
    modules = collections.Counter()
    for module in model.submodules:
        if isinstance(module, tf_keras.metrics.Metric):
            continue
        description = type(module).__name__
        parameters = getattr(module, "parameters", None)
        if isinstance(parameters, dict):
            scalars = sorted(
                f"{k}={v!r}"
                for k, v in parameters.items()
                if k not in ("name", "validate_args") and isinstance(v, _SCALARS)
            )
            description += f"({', '.join(scalars)})"
        modules[f"module {description}"] += 1
    fields = {k: v for k, v in (settings or {}).items() if k not in RESUMABLE_SETTINGS}
    return json.loads(json.dumps({**fields, **dict(modules)}, sort_keys=True, default=repr))


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`field: checkpoint value, now value` for each field where `saved` and `current` differ."""

    def value(fields, key):
        return repr(fields[key]) if key in fields else "(none)"

    return [
        f"{k}: checkpoint {value(saved, k)}, now {value(current, k)}"
        for k in sorted(saved.keys() | current.keys())
        if k not in saved or k not in current or saved[k] != current[k]
    ]
