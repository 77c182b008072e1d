"""A flow's fingerprint: the settings that define its function, saved with its weights.

Weights alone do not say which function they parametrise: an affine and a gated IAF step on
the same MADE have variables of the same names and shapes, and so do two MADEs of other orders.
Every `tfp_iaf.Flow` therefore writes its fingerprint (`Flow._fingerprint()`, JSON) into each
TensorFlow checkpoint that holds it, as one string value beside its variables
(`<flow's path>/.ATTRIBUTES/TFP_IAF_FINGERPRINT`), and a restore into a flow whose fingerprint
differs raises a `FingerprintMismatch` naming the fields that differ. It covers every way a
flow's weights travel through TensorFlow's object graph: `tf.train.Checkpoint`, a tf_keras
model's `save_weights`/`load_weights` in the TF format, a Keras 3 model's TF checkpoint and,
through `tfp_iaf.keras3.FlowLayer`, Keras 3's `.weights.h5` and `.keras` files.

- Fields: what changes the flow's function for the same weights (its class, shapes, update,
  bounds, its networks' orders, widths and activations), never its name, dtype, seed or
  initialisation. Nested flows nest their parts' fingerprints (`steps[0].gated`).
- A checkpoint without a fingerprint (written by an earlier version, or of the networks alone)
  restores unchecked: TensorFlow's `assert_consumed` checks that every value in the checkpoint
  found an object, not that every attribute of an object found a value, so the missing string
  is no error. A checkpoint with one restored by other code is unaffected unless that code
  asserts that every value was consumed.
- Restores run breadth-first and a flow's own values come before its parts', so a refused
  restore leaves the flow's variables as they were (other objects of the checkpoint, outside
  the flow, may have been restored already).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "CHECKPOINT_NAME",
    "FingerprintMismatch",
    "activation_name",
    "check",
    "differences",
    "digest",
    "encode",
    "order_name",
    "restore",
    "serialize",
]

# The attribute's name in a TF checkpoint (`.ATTRIBUTES/<name>`) and a Keras 3 weights store.
CHECKPOINT_NAME = "TFP_IAF_FINGERPRINT"

# A message names at most this many differing fields (the rest are counted).
_MAX_LISTED = 12
_MISSING = object()


class FingerprintMismatch(ValueError):
    """Weights of a flow of another configuration were loaded into a flow: refused."""


def encode(fields: Mapping[str, Any]) -> str:
    """The canonical JSON text of `fields` (sorted keys), what a checkpoint stores."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def digest(*arrays: np.ndarray) -> str:
    """A short hash of `arrays` (their shapes and values): to compare masks, not to read them."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.int64)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def order_name(degrees: np.ndarray) -> str | list[int]:
    """A dense network's order: "left-to-right", "right-to-left", or the positions in order.

    A permutation longer than 32 positions is given by its `digest`, to keep messages short.
    """
    degrees = np.asarray(degrees).reshape(-1)
    if np.all(np.diff(degrees) > 0):
        return "left-to-right"
    if np.all(np.diff(degrees) < 0):
        return "right-to-left"
    order = np.argsort(degrees, kind="stable")
    return order.tolist() if order.size <= 32 else f"permutation {digest(order)}"


def activation_name(activation) -> str:
    """The name of an activation function (a Keras activation's, or the callable's)."""
    return getattr(activation, "__name__", None) or type(activation).__name__


def _flatten(value, path: str, out: dict) -> dict:
    """`{"steps[0].network.order": ..., ...}`: one entry per leaf of nested dicts and lists."""
    if isinstance(value, Mapping):
        for key in value:
            _flatten(value[key], f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and value and isinstance(value[0], Mapping):
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{i}]", out)
    else:
        out[path] = value
    return out


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`field: checkpoint <value>, this flow <value>` for each (nested) field that differs.

    In this flow's order of fields, then the checkpoint's own; a field that differs alike in
    several steps is named once, with their indices (`steps[0,1].gated`).
    """
    saved, current = _flatten(saved, "", {}), _flatten(current, "", {})

    def value(fields, key):
        return json.dumps(fields[key]) if key in fields else "(none)"

    groups: dict[tuple, list[str]] = {}
    for key in [*current, *(k for k in saved if k not in current)]:
        if saved.get(key, _MISSING) == current.get(key, _MISSING):
            continue
        indexed = re.fullmatch(r"([^\[]*)\[(\d+)\](.*)", key)
        head, index, tail = indexed.groups() if indexed else (key, None, "")
        values = (value(saved, key), value(current, key))
        groups.setdefault((head, tail, *values), []).append(index)
    return [
        f"{head}{'' if None in indices else '[' + ','.join(indices) + ']'}{tail}: "
        f"checkpoint {saved_value}, this flow {current_value}"
        for (head, tail, saved_value, current_value), indices in groups.items()
    ]


def check(flow, saved: str | bytes) -> None:
    """Raises unless the fingerprint `saved` (JSON, from a checkpoint) is `flow`'s own.

    Raises:
      FingerprintMismatch: the fields differ (each is named, with both values), or `saved` is
        not a fingerprint at all.
    """
    if isinstance(saved, bytes):
        saved = saved.decode("utf-8", errors="replace")
    current = flow._fingerprint()
    if saved == encode(current):
        return
    try:
        fields = json.loads(saved)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise FingerprintMismatch(
            f"the checkpoint's fingerprint of flow `{flow.name}` is not a JSON object, so its "
            f"weights cannot be checked against this flow; got {saved[:200]!r}"
        )
    found = differences(fields, current)
    if not found:  # the same fields, written by other JSON settings
        return
    listed = "; ".join(found[:_MAX_LISTED])
    if len(found) > _MAX_LISTED:
        listed += f"; and {len(found) - _MAX_LISTED} more"
    raise FingerprintMismatch(
        f"the weights being loaded into flow `{flow.name}` ({type(flow).__name__}) are those of "
        f"a flow of another configuration, which computes another function with them: {listed}. "
        "Build the flow with the checkpoint's settings to load them"
    )


def serialize(flow) -> dict[str, tf.Tensor]:
    """`Flow._serialize_to_tensors`: the fingerprint as one string tensor."""
    return {CHECKPOINT_NAME: tf.constant(encode(flow._fingerprint()))}


def restore(flow, restored: Mapping[str, tf.Tensor]):
    """`Flow._restore_from_tensors`: checks the restored fingerprint (and restores nothing).

    Eagerly (every restore a user runs), the fields are compared and named. When traced (a
    SavedModel's restore function), an assertion compares the text, as no value exists yet.
    """
    saved = restored[CHECKPOINT_NAME]
    expected = encode(flow._fingerprint())
    if tf.executing_eagerly():
        check(flow, saved.numpy())
        return None
    return tf.debugging.assert_equal(
        saved,
        tf.constant(expected),
        message=f"the weights being loaded into flow `{flow.name}` are those of a flow of "
        "another configuration (its fingerprint, then this flow's)",
    )
