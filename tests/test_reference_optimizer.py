"""make_optimizer(kind="reference"): the authors' Adamax, step by step against its formula."""

import numpy as np
import pytest
import tensorflow as tf

import vae_harness as harness
from tfp_iaf import tf_keras


def _steps(kind: str, grads: list[np.ndarray], lr: float = 0.002) -> np.ndarray:
    var = tf.Variable(np.zeros(3, np.float32))
    opt = harness.make_optimizer(lr, ema_momentum=None, kind=kind)
    path = []
    for g in grads:
        opt.apply_gradients([(tf.constant(g), var)])
        path.append(var.numpy().copy())
    return np.array(path)


GRADS = [np.array([1e-9, 0.5, -3.0], np.float32), np.array([2e-9, -0.1, 1.0], np.float32)]


def test_reference_adamax_follows_the_authors_update():
    """m <- b1 m + (1 - b1) g; u <- max(b2 u + eps, |g|); w <- w - lr m / u (no bias fix)."""
    lr, b1, b2, eps = 0.002, 0.9, 0.999, 1e-8
    m, u, w, expected = np.zeros(3), np.zeros(3), np.zeros(3), []
    for g in GRADS:
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u + eps, np.abs(g))
        w = w - lr * m / u
        expected.append(w.copy())
    np.testing.assert_allclose(_steps("reference", GRADS, lr), expected, rtol=1e-5, atol=1e-12)
    # The first step is lr (1 - b1) sign(g) where |g| >> eps: a tenth of Keras's bias-corrected
    # lr sign(g); and a gradient below eps moves its weight far less.
    first = _steps("reference", GRADS[:1], lr)[0]
    np.testing.assert_allclose(first[1:], -lr * 0.1 * np.sign(GRADS[0][1:]), rtol=1e-5)
    keras = _steps("adamax", GRADS[:1], lr)[0]
    np.testing.assert_allclose(keras[1:], -lr * np.sign(GRADS[0][1:]), rtol=1e-4)


def test_adamax_is_keras_adamax():
    ours = _steps("adamax", GRADS)
    var = tf.Variable(np.zeros(3, np.float32))
    keras = tf_keras.optimizers.Adamax(0.002, epsilon=1e-7)
    path = []
    for g in GRADS:
        keras.apply_gradients([(tf.constant(g), var)])
        path.append(var.numpy().copy())
    np.testing.assert_allclose(ours, path, rtol=1e-6)


def test_reference_keeps_weight_averaging_and_clipping():
    opt = harness.make_optimizer(0.01, ema_momentum=0.9, clip_norm=1.0, kind="reference")
    assert opt.use_ema and opt.global_clipnorm == 1.0


def test_unknown_kind_is_an_error():
    with pytest.raises(
        ValueError, match=r"`kind` must be one of \('adamax', 'reference'\); got 'adam'"
    ):
        harness.make_optimizer(0.01, kind="adam")
