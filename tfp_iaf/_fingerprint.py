"""A flow's fingerprint: the settings that define its function, saved with its weights.

Weights alone do not say which function they parametrise: an affine and a gated IAF step on
the same MADE have variables of the same names and shapes, and so do two MADEs of other orders.
Every `tfp_iaf.Flow` therefore writes its fingerprint (`Flow._fingerprint()`, JSON) into each
TensorFlow checkpoint that holds it, as one string value beside its variables
(`<flow's path>/.ATTRIBUTES/TFP_IAF_FINGERPRINT`), and a restore into a flow whose fingerprint
differs raises a `FingerprintMismatch` naming the fields that differ. It covers every way a
flow's weights travel through TensorFlow's object graph: `tf.train.Checkpoint`, a tf_keras
model's `save_weights`/`load_weights` in the TF format, a Keras 3 model's TF checkpoint and,
through `tfp_iaf.keras3.FlowLayer`, Keras 3's `.weights.h5` and `.keras` files; tf_keras's
HDF5 weights files (`save_weights("w.h5")`) carry it in an attribute (`tfp_iaf._hdf5`).

- Fields: what changes the flow's function for the same weights (its class, shapes, update,
  bounds, its networks' orders, widths and activations), never its name, dtype, seed or
  initialisation. Nested flows nest their parts' fingerprints (`steps[0].gated`).
- A checkpoint without a fingerprint (written by an earlier version, or of the networks alone)
  restores unchecked: TensorFlow's `assert_consumed` checks that every value in the checkpoint
  found an object, not that every attribute of an object found a value, so the missing string
  is no error. A checkpoint with one restored by other code is unaffected unless that code
  asserts that every value was consumed.
- A refused restore loads nothing, now or later. TensorFlow walks the checkpoint breadth-first,
  queues the values of objects that do not exist yet (a network's variables before its first
  call) on their parents, to restore them when they are created, and restores the values of
  existing objects, the flow's fingerprint first among its own, only after the walk. So the
  check runs before any of the flow's values is restored, and a refusal drops the values this
  restore queued under the flow (`restore`): built afterwards, the flow holds its initial
  weights, even where the checkpoint's shapes differ. Values the same restore queued or
  restored for objects outside the flow (an encoder, an optimizer's slots) are TensorFlow's.
- Dtype: not a field (a flow's function does not depend on it, and checkpoints without it must
  keep restoring), but a restore does not cast. Into an unbuilt flow, values of another float
  dtype are refused here, naming both dtypes (the checkpoint's own variable dtypes, no extra
  value); into a built flow, TensorFlow's read refuses them first (`InvalidArgumentError:
  ... expected dtype double does not equal original dtype float`), before any value is
  restored.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
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


def check(flow, saved: str | bytes, dtypes: Collection[str] = ()) -> None:
    """Raises unless the fingerprint `saved` (JSON, from a checkpoint) is `flow`'s own.

    Args:
      flow: the flow being loaded.
      saved: the checkpoint's fingerprint of it.
      dtypes: the float dtypes of the checkpoint's values for the flow's variables, where known;
        each must be the flow's dtype, as a restore does not cast.

    Raises:
      FingerprintMismatch: the fields differ (each is named, with both values), `saved` is not
        a fingerprint at all, or a value of `dtypes` is not the flow's dtype (both named).
    """
    if isinstance(saved, bytes):
        saved = saved.decode("utf-8", errors="replace")
    current = flow._fingerprint()
    current_dtype = None if flow.dtype is None else tf.as_dtype(flow.dtype).name
    other_dtypes = sorted(set(dtypes) - {current_dtype}) if current_dtype else []
    dtype = f"dtype: checkpoint {', '.join(other_dtypes)}, this flow {current_dtype}"
    if saved == encode(current):
        found = []
    else:
        try:  # a hostile text (nested 200k deep) must not escape as a RecursionError
            fields = json.loads(saved)
            found = differences(fields, current) if isinstance(fields, dict) else None
        except (ValueError, RecursionError):
            found = None
        if found is None:
            raise FingerprintMismatch(
                f"the checkpoint's fingerprint of flow `{flow.name}` is not a JSON object, so "
                f"its weights cannot be checked against this flow; got {saved[:200]!r}"
            )
    if not found and other_dtypes:
        raise FingerprintMismatch(
            f"the weights being loaded into flow `{flow.name}` ({type(flow).__name__}) are "
            f"{', '.join(other_dtypes)} and its variables {current_dtype}: a restore does not "
            f"cast. Build the flow with dtype={other_dtypes[0]!r} to load them"
        )
    if not found:  # the same fields (perhaps written by other JSON settings), the same dtype
        return
    listed = "; ".join(found[:_MAX_LISTED])
    if len(found) > _MAX_LISTED:
        listed += f"; and {len(found) - _MAX_LISTED} more"
    if other_dtypes:
        listed += f"; {dtype}"
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

    Eagerly (every restore a user runs), the fields are compared and named, with the dtypes of
    the values queued for the flow's variables not yet created; a refusal drops those values.
    When traced (a SavedModel's restore function), an assertion compares the text, as no value
    exists yet (and every variable of a revived flow exists).
    """
    saved = restored[CHECKPOINT_NAME]
    expected = encode(flow._fingerprint())
    if tf.executing_eagerly():
        try:
            queued = _queued(flow)
            dtypes = _float_dtypes(queued)
        except AttributeError:  # TensorFlow's restore internals moved: check the fields alone
            queued, dtypes = [], set()  # (and tests/test_refused_restores.py fails)
        try:
            check(flow, saved.numpy(), dtypes=dtypes)
        except FingerprintMismatch:
            for pending, name, position in queued:
                pending[name].remove(position)
                if not pending[name]:
                    del pending[name]
            raise
        return None
    return tf.debugging.assert_equal(
        saved,
        tf.constant(expected),
        message=f"the weights being loaded into flow `{flow.name}` are those of a flow of "
        "another configuration (its fingerprint, then this flow's)",
    )


def _queued(flow) -> list[tuple[dict, str, Any]]:
    """The values that the restore under way queued under `flow`: `(queue, name, position)`.

    TensorFlow keeps a restoration waiting for a child not yet created in the parent's
    `_deferred_dependencies` (name -> `CheckpointPosition`s; `_preload_simple_restoration` and
    `_track_trackable` read it when the child appears). The restore under way is the one whose
    id the walk gave the flow (`_update_uid`) before restoring its values; restorations of
    other restores (an earlier one, accepted) stay queued.
    """
    uid = flow._update_uid
    found = []
    for obj in tf.train.TrackableView(flow).descendants():
        pending = obj._deferred_dependencies
        for name, positions in pending.items():
            found.extend((pending, name, p) for p in positions if p.checkpoint.restore_uid == uid)
    return found


def _float_dtypes(queued) -> set[str]:
    """The float dtypes of the variable values in the checkpoint subtrees of `queued`."""
    dtypes = set()
    for _, _, position in queued:
        checkpoint = position.checkpoint
        nodes, seen = [position.object_proto], set()
        while nodes:
            node = nodes.pop()
            for attribute in node.attributes:
                dtype = checkpoint.dtype_map.get(attribute.checkpoint_key)
                if dtype is not None and dtype.is_floating:
                    dtypes.add(dtype.name)
            for child in node.children:
                if child.node_id not in seen:
                    seen.add(child.node_id)
                    nodes.append(checkpoint.object_graph_proto.nodes[child.node_id])
    return dtypes
