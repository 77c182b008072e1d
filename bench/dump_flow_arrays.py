"""Every array of the shipped flow configurations, to compare two commits of a restructure.

    PYTHONPATH=. python bench/dump_flow_arrays.py --out=runs/arrays_<commit>.npz  # each checkout
    PYTHONPATH=. python bench/dump_flow_arrays.py --compare=a.npz,b.npz       # bit for bit

For each configuration of tests/configs.py (kind x order x update x context x dtype), built
after `tf_keras.utils.set_random_seed(0)`, and for the stack builders and the VI surrogate with
their `seed`s: every variable, the forward, its log-det, the inverse of the forward, and the
fingerprint's JSON. A restructure that changes no weight, output or fingerprint compares
equal (configurations the second commit adds are counted, not compared).
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf
from absl import app, flags

import tfp_iaf
from tests import configs
from tfp_iaf import _fingerprint, tf_keras

flags.DEFINE_string("out", None, "Where to write every array (.npz).")
flags.DEFINE_list("compare", None, "Two .npz files written by --out, compared key by key.")
FLAGS = flags.FLAGS


def _arrays(prefix: str, flow, event_shape, context_shape, dtype, out: dict) -> None:
    rng = np.random.default_rng(1)
    x = tf.constant(0.5 * rng.standard_normal((2, *event_shape)), dtype)
    kwargs = {}
    if context_shape is not None:
        kwargs["context"] = tf.constant(rng.standard_normal((2, *context_shape)), dtype)
    y = flow.forward(x, **kwargs)
    out[f"{prefix}/forward"] = y.numpy()
    out[f"{prefix}/fldj"] = flow.forward_log_det_jacobian(x, len(event_shape), **kwargs).numpy()
    out[f"{prefix}/inverse"] = flow.inverse(tf.identity(y), **kwargs).numpy()
    for i, v in enumerate(flow.variables):  # by position: Keras numbers layer names per process
        out[f"{prefix}/var/{i:03d}"] = v.numpy()
    out[f"{prefix}/fingerprint"] = np.array(_fingerprint.encode(flow._fingerprint()))


def dump(path: str) -> None:
    out: dict[str, np.ndarray] = {}
    for kind_name, kind in configs.KINDS.items():
        for dtype in configs.DTYPES:
            for order in kind.orders:
                for update in kind.updates:
                    for context in (False, True):
                        c = configs.Config(kind_name, order, update, context, dtype)
                        tf_keras.utils.set_random_seed(0)
                        _arrays(c.id, c.build(), c.event_shape, c.context_shape, dtype, out)
    for gated in (False, True):
        flow = tfp_iaf.dense_iaf_stack(5, 3, [12], context_size=2, gated=gated, seed=3)
        _arrays(f"dense_stack_seed/gated={gated}", flow, (5,), (2,), tf.float32, out)
        tf_keras.utils.set_random_seed(0)
        flow = tfp_iaf.conv_iaf_stack((3, 3, 2), 2, [4], context_channels=1, gated=gated)
        _arrays(f"conv_stack/gated={gated}", flow, (3, 3, 2), (3, 3, 1), tf.float32, out)
    for gated in (False, True):
        q = tfp_iaf.vi.build_iaf_surrogate_posterior([6], gated=gated, seed=4)
        out[f"vi/gated={gated}/sample"] = q.sample(3, seed=5).numpy()
        for i, v in enumerate(q.trainable_variables):
            out[f"vi/gated={gated}/var/{i:03d}"] = v.numpy()
    np.savez(path, **out)
    print(f"{len(out)} arrays -> {path}")


def compare(a: str, b: str) -> int:
    """0 when every array of `a` is in `b`, bit for bit (`b` may add configurations)."""
    first, second = np.load(a), np.load(b)
    missing = sorted(set(first.files) - set(second.files))
    added = sorted(set(second.files) - set(first.files))
    common = sorted(set(first.files) & set(second.files))
    differing = [
        k
        for k in common
        if first[k].shape != second[k].shape or not np.array_equal(first[k], second[k])
    ]
    print(
        f"{len(common)} arrays in both, {len(differing)} differing {differing[:10]}; "
        f"{len(missing)} missing from the second {missing[:10]}; {len(added)} added"
    )
    return 1 if missing or differing else 0


def main(argv):
    if len(argv) > 1 or (FLAGS.out is None) == (FLAGS.compare is None):
        raise app.UsageError("pass --out=OUT.npz or --compare=A.npz,B.npz")
    if FLAGS.compare is not None:
        if len(FLAGS.compare) != 2:
            raise app.UsageError(f"--compare takes two files; got {FLAGS.compare}")
        sys.exit(compare(*FLAGS.compare))
    dump(FLAGS.out)


if __name__ == "__main__":
    app.run(main)
