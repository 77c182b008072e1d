"""tf_keras's HDF5 weights files carry the fingerprints of the model's flows.

tf_keras writes `model.save_weights("w.h5")` (and `model.save("m.h5")`) layer by layer, and
loads it back by the layers' order or names, from three private functions of
`tf_keras.src.saving.legacy.hdf5_format`; no layer or object hook runs, so the fingerprints that
a TF checkpoint holds beside a flow's variables (`tfp_iaf._fingerprint`) would be left out, and
an affine flow's weights would load silently into a gated one. `install` wraps those three
functions, once, when tfp_iaf is imported (by its `__init__`):

- saving: tf_keras's function runs unchanged, then one attribute is added to the weights group,
  `TFP_IAF_FINGERPRINTS`: JSON, one entry per flow of the model whose variables the file stores,
  `{"index", "layer", "flow", "fingerprint"}`, where `layer` is the first layer storing them and
  `index` its position among the layers with weights (what the loader pairs by);
- loading: before tf_keras's function sets any weight, each flow of the model is checked against
  the entry of its layer (the same index, or with `by_name=True` the same name) and a difference
  raises `FingerprintMismatch` naming the fields. A file without the attribute (written without
  tfp_iaf, or by an earlier release) loads unchecked.

Why carry rather than refuse the format: `.h5` files are what tf_keras users already write, and
the attribute costs nothing to those who read them without tfp_iaf. Dtype is not checked: the
loader casts each value to its variable's dtype, as tf_keras does for every layer. The wrappers
are narrow (the original function runs as it is, with one attribute read or written) and
guarded: if tf_keras moves these private names, nothing is wrapped, and
tests/test_refused_restores.py fails.
"""

from __future__ import annotations

import collections
import functools
import json

import tensorflow as tf

from tfp_iaf import _fingerprint
from tfp_iaf.flow import Flow

__all__ = ["ATTRIBUTE", "WRAPPED", "install"]

ATTRIBUTE = "TFP_IAF_FINGERPRINTS"
WRAPPED = (
    "save_weights_to_hdf5_group",
    "load_weights_from_hdf5_group",
    "load_weights_from_hdf5_group_by_name",
)


def install() -> bool:
    """Wraps tf_keras's HDF5 weights functions (once); False if tf_keras has none to wrap."""
    try:
        from tf_keras.src.saving.legacy import hdf5_format
    except ImportError:  # pragma: no cover
        return False
    originals = [getattr(hdf5_format, name, None) for name in WRAPPED]
    if not all(callable(f) for f in originals):  # pragma: no cover
        return False
    if all(getattr(f, "_tfp_iaf", False) for f in originals):
        return True
    save, load, load_by_name = originals

    @functools.wraps(save)
    def save_weights_to_hdf5_group(f, model, *args, **kwargs):
        result = save(f, model, *args, **kwargs)
        entries = [
            {
                "index": k,
                "layer": layer.name,
                "flow": flow.name,
                "fingerprint": flow._fingerprint(),
            }
            for k, layer, flow in _flows_by_layer(model)
        ]
        if entries:
            f.attrs[ATTRIBUTE] = json.dumps(entries, sort_keys=True, separators=(",", ":"))
        return result

    @functools.wraps(load)
    def load_weights_from_hdf5_group(f, model, *args, **kwargs):
        _check(f, model, by_name=False)
        return load(f, model, *args, **kwargs)

    @functools.wraps(load_by_name)
    def load_weights_from_hdf5_group_by_name(f, model, *args, **kwargs):
        _check(f, model, by_name=True)
        return load_by_name(f, model, *args, **kwargs)

    for wrapper in (
        save_weights_to_hdf5_group,
        load_weights_from_hdf5_group,
        load_weights_from_hdf5_group_by_name,
    ):
        wrapper._tfp_iaf = True
    hdf5_format.save_weights_to_hdf5_group = save_weights_to_hdf5_group
    hdf5_format.load_weights_from_hdf5_group = load_weights_from_hdf5_group
    hdf5_format.load_weights_from_hdf5_group_by_name = load_weights_from_hdf5_group_by_name
    return True


def _check(f, model, by_name: bool) -> None:
    """Raises unless each flow of `model` is the flow whose fingerprint `f` stores for its layer.

    Raises:
      FingerprintMismatch: a flow's fingerprint differs from the file's (the fields are named),
        or the file's attribute is not a JSON list of entries.
    """
    if ATTRIBUTE not in f.attrs:
        return
    text = f.attrs[ATTRIBUTE]
    text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
    try:
        entries = json.loads(text)
        saved = {(e["layer"] if by_name else e["index"]): e["fingerprint"] for e in entries}
    except (ValueError, RecursionError, TypeError, KeyError):
        raise _fingerprint.FingerprintMismatch(
            f"the weights file's `{ATTRIBUTE}` attribute is not a JSON list of flows' "
            f"fingerprints, so the weights of the model's flows cannot be checked; got "
            f"{text[:200]!r}"
        ) from None
    for k, layer, flow in _flows_by_layer(model):
        key = layer.name if by_name else k
        if key in saved:
            _fingerprint.check(flow, _fingerprint.encode(saved[key]))


def _flows_by_layer(model) -> list[tuple[int, object, object]]:
    """`(index, layer, flow)` for each outermost flow of `model` whose variables a layer holds.

    `layer` is the first of `model.layers` holding any of the flow's variables and `index` its
    position among the layers with weights, as tf_keras's loader pairs them.
    """
    flows = _outermost_flows(model)
    flow_of = {v.ref(): flow for flow in flows for v in flow.variables}
    found, done = [], set()
    layers = [layer for layer in model.layers if layer.weights]
    for k, layer in enumerate(layers):
        for v in layer.weights:
            flow = flow_of.get(v.ref())
            if flow is not None and id(flow) not in done:
                done.add(id(flow))
                found.append((k, layer, flow))
    return found


def _outermost_flows(root) -> list:
    """The tfp_iaf flows reachable from `root` by tracking, not those inside another flow."""
    found, seen = [], {id(root)}
    queue = collections.deque([root])
    while queue:
        for child in tf.train.TrackableView.children(queue.popleft()).values():
            if id(child) in seen:
                continue
            seen.add(id(child))
            (found if isinstance(child, Flow) else queue).append(child)
    return found
