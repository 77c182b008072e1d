"""MADE: the dense autoregressive network (Germain et al. 2015) on the network contract."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks, _fingerprint
from tfp_iaf import masks as masks_lib
from tfp_iaf._keras import tf_keras
from tfp_iaf.autoregressive import (
    AutoregressiveNetwork,
    apply_masked_layers,
    layer_seed,
    output_initializer,
    seeded_initializer,
    structure_seed,
)
from tfp_iaf.layers import MaskedDense

__all__ = ["MADE"]


PARAMETRIZATIONS = ("standard", "ntk")


class MADE(AutoregressiveNetwork):
    """Masked Autoencoder for Distribution Estimation: a dense autoregressive network.

    - hidden: `h_1 = act(M_1(x) + V_1 c)`, `h_l = act(M_l(h_{l-1}) + V_l c)` (`+ h_{l-1}` when
      `residual`), with `M_l` masked dense layers and `c` the context, fed unmasked;
    - output: `M_out(h_L) + V_out c`, reshaped to `[..., event_size, num_params]`.

    The output at a position of degree `d` depends only on inputs of degree `< d`; the context
    reaches every layer, the output layer included, so even the first position in the order is
    a function of the context. The output layer starts near zero, so an IAF step built on an
    untrained MADE is close to the identity.

    Shapes: `x: [..., event_size]`, `context: [..., context_size]` (batch shapes broadcast)
    `-> [..., event_size, num_params]`.

    Args:
      event_size: number of positions `D`.
      hidden_units: widths of the hidden layers; each needs at least `D - 1` units so that every
        output can see every input before it (unless `allow_narrow`).
      num_params: parameters per position.
      context_size: size of the context vector, or None for no context.
      order: "left-to-right", "right-to-left", "random" (drawn with `seed`) or a permutation of
        `range(D)` listing positions in generation order.
      hidden_degrees: "equal" (units spread evenly over degrees) or "random".
      activation: hidden activation, any `tf_keras.activations.get` name or callable.
      residual: add each hidden layer's input to its output (needs equal widths).
      kernel_initializer: initializer of the hidden kernels.
      kernel_blocks: column blocks of each masked kernel (`MaskedDense`'s `num_blocks`): with
        more than one, a large kernel is stored and multiplied as blocks that skip its
        all-zero rows, fewer multiply-adds at large batches; 1 keeps one matmul per layer,
        faster for small batches (measured: a VI surrogate's 16 samples, docs/benchmarks_vi.md).
      packed: each masked layer's kernel and bias as one variable, `kernel_and_bias`
        (`MaskedDense`'s `packed`; needs `kernel_blocks=1`): the same function with half the
        variables and no bias adds, faster where each op costs more than its arithmetic (a
        VI surrogate's step: docs/benchmarks_vi.md). Its checkpoints have other keys.
      allow_narrow: accept hidden layers narrower than `D - 1` (for large `D`, where
        `D - 1` units a layer cost `O(D^2)` weights). A narrow layer's degrees are spread
        evenly over `1..D-1` ("equal") or drawn from it ("random"), so some degrees have no
        unit, and an output loses the inputs just before it: with `S_l` the degrees of layer
        `l`'s units, the output of degree `d` sees exactly the inputs of degree `<= m_1`,
        where `m_L` is the largest degree in `S_L` below `d` and each earlier `m_l` the
        largest in `S_l` not above `m_{l+1}`; the inputs of degree `m_1 + 1 .. d - 1` are
        lost to it (all of them where no such `m` exists; with "equal" and width `H` in every
        layer, at most `ceil((D - 1) / H) - 1` of them). Every output still depends only on
        inputs before it (the network stays autoregressive, and the inverse exact). Layers at
        least `D - 1` wide are unchanged.
      parametrization: "standard", or "ntk": each masked kernel multiplied by
        `1 / sqrt(fan_in)` (`MaskedDense`'s `multiplier`) and its initial value divided by
        it, so the network computes the same function at initialisation while an optimizer
        step, which moves every weight by about the learning rate under Adam, moves each
        pre-activation by `O(sqrt(fan_in))` times the rate rather than `O(fan_in)`. The
        variables are the same; their values differ, so checkpoints do not cross between
        the two (the fingerprint names "ntk").
      seed: seed for "random" order and hidden degrees, and of the initial weights (each
        layer's initializer gets its own seed derived from it); None: unseeded weights, and a
        random order or degrees drawn from TensorFlow's global seed if one is set (so
        `tf.keras.utils.set_random_seed` makes them reproducible), else fresh.
      **kwargs: passed to `tf_keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
      TypeError: a size that is not an int (bools included), `hidden_units` not a list, a
        `dtype` that is not floating-point, or an `allow_narrow` that is not a bool.
      ValueError: empty or non-positive `hidden_units`, a layer too narrow to connect every
        output (without `allow_narrow`), a bad `order`/`hidden_degrees`/`parametrization`,
        `residual` with unequal widths, or `packed` with `kernel_blocks != 1`.

    Examples:
      >>> made = MADE(event_size=3, hidden_units=[8], context_size=2)
      >>> made(tf.zeros([5, 3]), context=tf.zeros([5, 2])).shape
      TensorShape([5, 3, 2])

    References:
      Germain et al., MADE: Masked Autoencoder for Distribution Estimation, 2015.
      https://arxiv.org/abs/1502.03509
    """

    def __init__(
        self,
        event_size: int,
        hidden_units: Sequence[int],
        num_params: int = 2,
        context_size: int | None = None,
        order: masks_lib.OrderSpec = "left-to-right",
        hidden_degrees: str = "equal",
        activation="elu",
        residual: bool = False,
        kernel_initializer="glorot_uniform",
        kernel_blocks: int = 4,
        packed: bool = False,
        allow_narrow: bool = False,
        parametrization: str = "standard",
        seed: int | None = None,
        **kwargs,
    ):
        event_size = _checks.positive_int("event_size", event_size)
        hidden_units = _checks.positive_int_list("hidden_units", hidden_units)
        if not isinstance(allow_narrow, bool):
            raise TypeError(f"`allow_narrow` must be a bool; got {allow_narrow!r}")
        if not allow_narrow and event_size > 1 and min(hidden_units) < event_size - 1:
            raise ValueError(
                f"`hidden_units` = {hidden_units} is too small to connect every output for "
                f"event_size={event_size}: each hidden layer needs at least {event_size - 1} "
                "units (event_size - 1), or `allow_narrow=True`"
            )
        if residual and len(set(hidden_units)) != 1:
            raise ValueError(f"`residual=True` needs equal hidden widths; got {hidden_units}")
        if residual and hidden_degrees != "equal":
            raise ValueError(
                f"`residual=True` needs hidden_degrees='equal'; got {hidden_degrees!r}"
            )
        context_size = _checks.positive_int("context_size", context_size, optional=True)
        kernel_blocks = _checks.positive_int("kernel_blocks", kernel_blocks)
        if packed and kernel_blocks != 1:
            raise ValueError(f"`packed=True` needs `kernel_blocks=1`; got {kernel_blocks}")
        num_params = _checks.positive_int("num_params", num_params)
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"`parametrization` must be one of {PARAMETRIZATIONS}; got {parametrization!r}"
            )
        random = hidden_degrees == "random" or (isinstance(order, str) and order == "random")
        degrees, self.layer_degrees, masks = masks_lib.made_masks(
            event_size,
            hidden_units,
            num_params,
            order,
            hidden_degrees,
            structure_seed(seed) if random else seed,
        )
        super().__init__(
            (event_size,),
            num_params,
            None if context_size is None else (context_size,),
            degrees,
            **kwargs,
        )
        self.event_size = event_size
        self.hidden_units = hidden_units
        self.context_size = context_size
        self.residual = residual
        self.parametrization = parametrization
        # Whether the option took effect: with layers at least `D - 1` wide it changes nothing.
        self.narrow = allow_narrow and min(hidden_units) < event_size - 1
        self.activation = tf_keras.activations.get(activation)
        self.masked_layers = [
            MaskedDense(
                mask,
                multiplier=1.0 / np.sqrt(mask.shape[0]) if parametrization == "ntk" else 1.0,
                kernel_initializer=seeded_initializer(kernel_initializer, layer_seed(seed, i))
                if i < len(hidden_units)
                else output_initializer(layer_seed(seed, i)),
                num_blocks=kernel_blocks,
                packed=packed,
                dtype=self.dtype,
                name=f"masked_{i}",
            )
            for i, mask in enumerate(masks)
        ]
        last = len(hidden_units)
        projections = [
            self.context_projection(
                mask.shape[1],
                name=f"context_{i}",
                kernel_initializer=seeded_initializer("glorot_uniform", layer_seed(seed, -1 - i))
                if i < last
                else output_initializer(layer_seed(seed, -1 - i)),
            )
            for i, mask in enumerate(masks)
        ]
        self.context_layers = [] if context_size is None else projections

    def _fingerprint(self) -> dict:
        return {
            **super()._fingerprint(),
            "hidden_units": list(self.hidden_units),
            "activation": _fingerprint.activation_name(self.activation),
            "residual": self.residual,
            "order": _fingerprint.order_name(self.degrees),
            # The connectivity, random hidden degrees included.
            "masks": _fingerprint.digest(*(layer.mask for layer in self.masked_layers)),
            # Each only where it changes the function, so every other network's fingerprint is
            # the one it has without the option.
            **({} if self.parametrization == "standard" else {"parametrization": "ntk"}),
            **({"allow_narrow": True} if self.narrow else {}),
        }

    def build(self, input_shape):
        for layer, fan_in in zip(
            self.masked_layers, [self.event_size, *self.hidden_units], strict=True
        ):
            self.build_sublayer(layer, (None, fan_in))
        for layer in self.context_layers:
            self.build_sublayer(layer, (None, self.context_size))
        super().build(input_shape)

    def context_terms(self, context: tf.Tensor | None) -> list[tf.Tensor | None]:
        """The context's contribution to every layer's pre-activation, `V_l c`."""
        if context is None:
            return [None] * len(self.masked_layers)
        return [layer(context) for layer in self.context_layers]

    def sequential_solve(self, y, context, solve_fn):
        """The sequential inverse at the cost of about one network pass, not `event_size`.

        Pass `r` solves the position of degree `r + 1`. Hidden units of degree `m` depend only on
        inputs of degree `<= m`, so once those are solved the units never change: pass `r`
        computes only the units of degree `r` in each layer (a contiguous slice, since degrees
        are sorted) and the one output position it solves. Every pass uses slices of a fixed
        size (units of neighbouring degrees computed early are recomputed at their own pass),
        which keeps shapes static for `tf.while_loop` and XLA.
        """
        if not self.built:
            self.build(y.shape)
        d, p = self.event_size, self.num_params
        batch = tf.shape(y)[:-1]
        terms = self.context_terms(context)
        if context is not None:
            batch = tf.broadcast_dynamic_shape(batch, tf.shape(context)[:-1])
        # The batch is flattened to `n` columns, at least one: a scatter into an empty tensor
        # is an error, so an empty batch is solved as one padding column, then dropped.
        count = tf.reduce_prod(batch)
        n = tf.maximum(count, 1)

        def columns(t, width):  # [..., width] broadcast to the batch -> [width, n]
            flat = tf.reshape(tf.broadcast_to(t, tf.concat([batch, [width]], 0)), [count, width])
            return tf.transpose(tf.pad(flat, [[0, n - count], [0, 0]]))

        y_t = columns(y, d)

        def constant_t(layer, term):  # bias + context term, transposed: [units, n]
            c = layer.bias_term()
            c = tf.zeros([layer.units], self.dtype) if c is None else c
            if term is not None:
                return columns(term + c, layer.units)
            return tf.broadcast_to(c[:, None], [layer.units, n])

        hidden = []  # (kernel^T, constant^T, window starts, window size) per hidden layer
        # zip stops before the output layer, which has no hidden degrees.
        for layer, term, degrees in zip(
            self.masked_layers, terms, self.layer_degrees, strict=False
        ):
            size = int(np.bincount(degrees).max())
            starts = np.minimum(np.searchsorted(degrees, np.arange(d)), degrees.size - size)
            hidden.append(
                (
                    tf.transpose(layer.masked_kernel()),
                    constant_t(layer, term),
                    tf.constant(starts, tf.int32),
                    size,
                )
            )
        out_layer = self.masked_layers[-1]
        out_w = tf.reshape(tf.transpose(out_layer.masked_kernel()), [d, p, -1])
        out_c = tf.reshape(constant_t(out_layer, terms[-1]), [d, p, n])
        position = tf.constant(np.argsort(self.degrees), tf.int32)  # solved at pass r

        def body(r, x_t, log_scale_t, h_t):
            below, new_h = x_t, []
            for i, ((w_t, c_t, starts, size), h) in enumerate(zip(hidden, h_t, strict=True)):
                rows = starts[r] + tf.range(size)
                pre = tf.matmul(tf.gather(w_t, rows), below) + tf.gather(c_t, rows)
                units = self.activation(pre)
                if self.residual and i > 0:
                    units = units + tf.gather(below, rows)
                below = tf.tensor_scatter_nd_update(h, rows[:, None], units)
                new_h.append(below)
            pos = position[r]
            params = tf.matmul(out_w[pos], below) + out_c[pos]  # [p, n]
            x_pos, log_scale_pos = solve_fn(y_t[pos], tf.transpose(params))
            index = tf.reshape(pos, [1, 1])
            x_t = tf.tensor_scatter_nd_update(x_t, index, x_pos[None])
            log_scale_t = tf.tensor_scatter_nd_update(log_scale_t, index, log_scale_pos[None])
            return r + 1, x_t, log_scale_t, new_h

        zeros = tf.zeros_like(y_t)
        h0 = [tf.zeros([w_t.shape[0], n], self.dtype) for w_t, *_ in hidden]
        # maximum_iterations: XLA needs a static trip count to differentiate through the loop.
        _, x_t, log_scale_t, _ = tf.while_loop(
            lambda r, *_: r < d, body, (tf.constant(0), zeros, zeros, h0), maximum_iterations=d
        )
        shape = tf.concat([batch, [d]], 0)

        def unflatten(t):
            return tf.reshape(tf.transpose(t[:, :count]), shape)

        return unflatten(x_t), unflatten(log_scale_t)

    def call(self, x, context=None):
        h = apply_masked_layers(
            x, self.masked_layers, self.context_terms(context), self.activation, self.residual
        )
        out_shape = tf.concat([tf.shape(h)[:-1], [self.event_size, self.num_params]], axis=0)
        out = tf.reshape(h, out_shape)
        out.set_shape(h.shape[:-1].concatenate([self.event_size, self.num_params]))
        return out
