"""The fast sequential inverse of a `ConvMADE`: each pass computes only the units it solves.

The naive inverse (`AutoregressiveNetwork.sequential_solve`) runs the whole network once per
distinct degree. A unit's value is final as soon as every input it depends on is solved, so
each unit only needs computing once, at the first pass where that holds; these solvers do that,
and the units computed earlier are read back from a cache (the conv analogue of
`MADE.sequential_solve`, and of fast PixelCNN generation).

- `channel_solve` (orders `"channel"`, `"channel_reversed"`): hidden channel group `g` (channel
  degree `g`) of every layer depends only on event channels of degree `<= g`. Every layer keeps
  an accumulator of its pre-activations over the groups still to come; pass `r` reads group
  `r` off each hidden layer's, activates it and pushes it into the next layer's groups `>= r`,
  then solves the event channel of degree `r + 1` from the output accumulator and pushes it
  into the first layer's groups `> r`. `C` passes; each masked weight used once.
- `raster_solve` (orders `"raster"`, `"raster_reversed"`): a hidden unit at spatial position `s`
  depends only on inputs at positions before `s` in the order and, at `s`, on channels of degree
  `<=` its group's. The loop runs over positions (a `tf.while_loop` of `H * W` iterations, fixed
  shapes). At position `s` every layer's *prefix* (its open taps before `s`, whose inputs are
  all final) is one product of a `k x k` patch of cached activations; then `C` unrolled channel
  sub-passes add the centre tap for one hidden group per layer and solve one event channel, as
  `MADE`'s inverse does. Each hidden unit is computed once: about one forward pass of work, in
  `H * W * C` small steps.

Both compute the same sums as the network's own `call` (the terms a mask zeroes are dropped or
multiplied by cached zeros), in another order, so they agree with the naive inverse to
rounding.

Inputs are flattened to one batch axis (`n >= 1`) by `ConvMADE.sequential_solve`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

__all__ = ["channel_solve", "raster_solve"]

SolveFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def _bias(layer, units: int, dtype) -> tf.Tensor:
    return tf.zeros([units], dtype) if layer.bias is None else tf.convert_to_tensor(layer.bias)


def channel_solve(net, y: tf.Tensor, context_term: tf.Tensor | None, solve_fn: SolveFn):
    """The channel-order inverse in `C` passes, each unit's contributions pushed forward once.

    Every layer keeps an accumulator of its pre-activations over the groups not computed yet.
    Pass `r` reads group `r` off each hidden layer's accumulator (all its inputs are in by
    then), activates it, and adds its contribution to the next layer's groups `>= r` (one
    convolution of the group's `F / C` channels into those groups); the output accumulator
    then holds the parameters of the event channel solved at pass `r`, whose value is pushed
    into the first layer's groups `> r`. The passes are unrolled (`C` is static). Each masked
    weight is used once: about half a forward pass of multiply-adds (the triangle the mask
    keeps), in `C` small convolutions per layer whose outputs are wide. The sums are the
    forward pass's, added in another order: equal to rounding.

    Args:
      net: a built `ConvMADE` in a channel order.
      y: `[n, H, W, C]`.
      context_term: the first layer's context term `[n, H, W, filters[0]]`, or None.
      solve_fn: the per-position inverse of the flow's update.

    Returns:
      `(x, log_scale)`, both `[n, H, W, C]`.
    """
    channels, p = net.event_shape[2], net.num_params
    *hidden, out_layer = net.masked_layers
    solved = net.channel_solve_order  # channel solved at pass r
    widths = [*(units // channels for units in net.filters), p]  # group width per layer
    kernels = [layer.masked_kernel() for layer in net.masked_layers]
    kernels[-1] = _in_solving_order(kernels[-1], solved, p)  # pass r's parameters first
    biases = [
        _bias(layer, units, net.dtype) for layer, units in zip(hidden, net.filters, strict=True)
    ]
    biases.append(_in_solving_order(_bias(out_layer, channels * p, net.dtype), solved, p))
    pixels = tf.zeros_like(y[..., :1])
    # acc[l]: layer l's pre-activations, groups >= the current pass only.
    acc = [pixels + b for b in biases]
    if context_term is not None:
        acc[0] = acc[0] + context_term

    def conv(x, kernel):
        return tf.nn.conv2d(x, kernel, strides=1, padding="SAME")

    xs = [None] * channels
    log_scales = [None] * channels
    previous = [None] * len(hidden)  # each hidden layer's group r, for the residual sum
    for r in range(channels):
        for layer in range(len(hidden)):
            w, w_next = widths[layer], widths[layer + 1]
            value = net.activation(acc[layer][..., :w])
            if net.residual and layer > 0:
                value = value + previous[layer - 1]
            previous[layer] = value
            acc[layer] = acc[layer][..., w:]
            # Into the next layer's groups >= r: those of degree >= this group's.
            acc[layer + 1] = acc[layer + 1] + conv(
                value, kernels[layer + 1][:, :, r * w : (r + 1) * w, r * w_next :]
            )
        params, acc[-1] = acc[-1][..., :p], acc[-1][..., p:]
        c = solved[r]
        x_c, log_scale_c = solve_fn(y[..., c], params)
        xs[c] = x_c[..., None]
        log_scales[c] = log_scale_c[..., None]
        if r + 1 < channels:  # into the first layer's groups > r
            acc[0] = acc[0] + conv(xs[c], kernels[0][:, :, c : c + 1, (r + 1) * widths[0] :])
    return tf.concat(xs, axis=-1), tf.concat(log_scales, axis=-1)


def _in_solving_order(t: tf.Tensor, solved: np.ndarray, p: int) -> tf.Tensor:
    """`t`'s last axis, `p` columns per event channel, reordered to the channels' solving order
    (by slices, so that gradients stay dense)."""
    if np.array_equal(solved, np.arange(len(solved))):
        return t
    return tf.concat([t[..., c * p : (c + 1) * p] for c in solved], axis=-1)


def _open_taps(mask: np.ndarray) -> np.ndarray:
    """Flat indices of the kernel taps other than the centre that the mask opens."""
    k = mask.shape[0]
    used = mask.reshape(k * k, -1).any(axis=1)
    used[(k * k) // 2] = False
    return np.flatnonzero(used).astype(np.int32)


def raster_solve(net, y: tf.Tensor, context_term: tf.Tensor | None, solve_fn: SolveFn):
    """The raster-order inverse: positions in a `tf.while_loop`, channels unrolled inside.

    Args:
      net: a built `ConvMADE` in a raster order.
      y: `[n, H, W, C]`.
      context_term: the first layer's context term `[n, H, W, filters[0]]`, or None.
      solve_fn: the per-position inverse of the flow's update.

    Returns:
      `(x, log_scale)`, both `[n, H, W, C]`.
    """
    height, width, channels = net.event_shape
    p, dtype, k = net.num_params, net.dtype, net.kernel_size
    pad = k // 2
    *hidden, out_layer = net.masked_layers
    fans = [channels, *net.filters]
    groups = [units // channels for units in net.filters]
    solved = net.channel_solve_order  # channel of sub-pass r
    unsolve = np.argsort(solved).astype(np.int32)  # sub-pass of channel c

    # Per layer: the kernel of its open taps before the centre [T, fan_in, fan_out] (their
    # inputs are final when a position starts) and the centre tap [fan_in, fan_out].
    taps, prefix_kernels, centres = [], [], []
    for layer, fan_in in zip(net.masked_layers, fans, strict=True):
        kernel = tf.reshape(layer.masked_kernel(), [k * k, fan_in, -1])
        open_taps = _open_taps(layer.mask)
        taps.append(open_taps)
        prefix_kernels.append(tf.gather(kernel, open_taps) if open_taps.size else None)
        centres.append(kernel[(k * k) // 2])
    # The first layer's centre rows and the output's columns in solving order, so sub-pass r
    # uses the first rows / the r-th column block.
    centres[0] = tf.gather(centres[0], solved)
    out_centre = tf.gather(tf.reshape(centres[-1], [fans[-1], channels, p]), solved, axis=1)
    biases = [_bias(layer, units, dtype) for layer, units in zip(hidden, net.filters, strict=True)]
    out_bias = tf.gather(tf.reshape(_bias(out_layer, channels * p, dtype), [channels, p]), solved)

    def positions_first(t):  # [n, H, W, f] -> [H * W, n, f]
        t = tf.transpose(t, [1, 2, 0, 3])
        return tf.reshape(t, [height * width, -1, t.shape[-1]])

    y_s = tf.gather(positions_first(y), solved, axis=2)  # channels in solving order
    term_s = None if context_term is None else positions_first(context_term)
    n = tf.shape(y)[0]
    # Generation order of positions: raster, or reversed.
    reverse = net.order.endswith("_reversed")

    def prefix(cache, i, j, layer_index):
        """[n, fan_out]: the layer's open taps before (i, j), from the cached padded input."""
        kernel = prefix_kernels[layer_index]
        if kernel is None:  # a 1x1 kernel: the centre tap only
            return tf.zeros([n, centres[layer_index].shape[-1]], dtype)
        patch = tf.slice(cache, [i, j, 0, 0], [k, k, -1, -1])
        patch = tf.reshape(patch, [k * k, n, cache.shape[-1]])
        patch = tf.gather(patch, taps[layer_index])
        return tf.einsum("tnf,tfo->no", patch, kernel)

    def body(s, x_cache, log_scale_s, h_caches):
        position = (height * width - 1 - s) if reverse else s
        i, j = position // width, position % width
        inputs = [x_cache, *h_caches]
        prefixes = [prefix(inputs[layer], i, j, layer) for layer in range(len(inputs))]
        y_pos = tf.gather(y_s, position)  # [n, C] in solving order
        term_pos = None if term_s is None else tf.gather(term_s, position)
        xs, log_scales = [], []
        units = [[] for _ in hidden]  # per layer, the groups at (i, j) computed so far
        out_prefix = tf.reshape(prefixes[-1], [n, channels, p])
        for r in range(channels):
            for layer, width_g in enumerate(groups):
                cols = slice(r * width_g, (r + 1) * width_g)
                pre = prefixes[layer][:, cols] + biases[layer][cols]
                if layer == 0:
                    if term_pos is not None:
                        pre = pre + term_pos[:, cols]
                    if r > 0:  # the channels of degree <= r at this position
                        pre = pre + tf.matmul(tf.stack(xs, axis=1), centres[0][:r, cols])
                else:  # groups <= r of the layer below
                    below = tf.concat(units[layer - 1], axis=1)
                    pre = pre + tf.matmul(
                        below, centres[layer][: (r + 1) * groups[layer - 1], cols]
                    )
                value = net.activation(pre)
                if net.residual and layer > 0:
                    value = value + units[layer - 1][r]
                units[layer].append(value)
            below = tf.concat(units[-1], axis=1)  # groups <= r of the last hidden layer
            params = (
                out_prefix[:, solved[r]]
                + tf.matmul(below, out_centre[: (r + 1) * groups[-1], r])
                + out_bias[r]
            )
            x_r, log_scale_r = solve_fn(y_pos[:, r], params)
            xs.append(x_r)
            log_scales.append(log_scale_r)
        index = [[i + pad, j + pad]]
        x_pos = tf.gather(tf.stack(xs, axis=1), unsolve, axis=1)  # [n, C], channel order
        x_cache = tf.tensor_scatter_nd_update(x_cache, index, x_pos[None])
        log_scale_pos = tf.gather(tf.stack(log_scales, axis=1), unsolve, axis=1)
        log_scale_s = tf.tensor_scatter_nd_update(log_scale_s, [[position]], log_scale_pos[None])
        h_caches = [
            tf.tensor_scatter_nd_update(h, index, tf.concat(u, axis=1)[None])
            for h, u in zip(h_caches, units, strict=True)
        ]
        return s + 1, x_cache, log_scale_s, h_caches

    def padded(fan):  # a cache [H + 2 pad, W + 2 pad, n, fan]: SAME padding is its zero border
        return tf.zeros([height + 2 * pad, width + 2 * pad, n, fan], dtype)

    steps = height * width
    _, x_cache, log_scale_s, _ = tf.while_loop(
        lambda s, *_: s < steps,
        body,
        (
            tf.constant(0),
            padded(channels),
            tf.zeros([steps, n, channels], dtype),
            [padded(units) for units in net.filters],
        ),
        maximum_iterations=steps,
    )
    x = tf.transpose(x_cache[pad : pad + height, pad : pad + width], [2, 0, 1, 3])
    log_scale = tf.transpose(tf.reshape(log_scale_s, [height, width, n, channels]), [2, 0, 1, 3])
    return x, log_scale
