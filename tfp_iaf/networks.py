"""Dense autoregressive networks: the contract IAF relies on, and MADE."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks
from tfp_iaf import masks as masks_lib
from tfp_iaf._keras import tf_keras
from tfp_iaf.layers import MaskedDense

__all__ = ["AutoregressiveNetwork", "MADE"]

# Output layers start this close to zero, so an untrained flow is close to the identity.
OUTPUT_INIT_SCALE = 1e-4


def small_init():
    return tf_keras.initializers.VarianceScaling(OUTPUT_INIT_SCALE, "fan_avg", "uniform")


class AutoregressiveNetwork(tf_keras.layers.Layer):
    """Base class: what `InverseAutoregressiveFlow` needs from a network.

    A subclass maps `x: [..., *event_shape]` (and an optional context) to parameters
    `[..., *event_shape, num_params]` such that the parameters at a position of degree `d`
    depend only on inputs of degree `< d` (see `degrees`), for any values of the weights.

    Attributes:
      event_shape: the event shape, e.g. `(D,)` or `(H, W, C)`.
      num_params: parameters per position (2 for IAF: shift and log-scale, or gate logits).
      context_shape: trailing shape of the context, or None when the network takes none.
      degrees: int array of shape `event_shape`, the degree of every input position.
      num_inverse_passes: passes the sequential inverse needs: the number of distinct degrees.
    """

    def __init__(self, event_shape, num_params, context_shape, degrees, **kwargs):
        super().__init__(**kwargs)
        # A float64 input to a float32 network must fail loudly, not be cast silently.
        self._autocast = False
        self.event_shape = tuple(int(n) for n in event_shape)
        self.num_params = int(num_params)
        self.context_shape = None if context_shape is None else tuple(context_shape)
        self.degrees = np.asarray(degrees, dtype=np.int64).reshape(self.event_shape)
        self.num_inverse_passes = int(np.unique(self.degrees).size)

    @property
    def event_ndims(self) -> int:
        return len(self.event_shape)

    def __call__(self, x, context=None, **kwargs):
        # TFP's convention (`Bijector.forward` converts its input the same way): Python and
        # NumPy values take the network's dtype, while a tensor must already have it. Converting
        # here, before Keras does, makes a direct call agree with the bijector.
        x, context = as_input(x, self.dtype), as_input(context, self.dtype)
        if tf.is_tensor(x) and (context is None or tf.is_tensor(context)):
            self.check_inputs(x, context)  # here, so Keras does not wrap the error's message
        return super().__call__(x, context=context, **kwargs)

    def build_sublayer(self, layer: tf_keras.layers.Layer, input_shape) -> None:
        """Builds `layer` under its own name scope, so every variable of the network has a
        distinct name (`made_0/masked_1/kernel_0`): Keras' `.h5` format keys weights by name."""
        with tf.name_scope(layer.name):
            layer.build(input_shape)

    def apply_masked_layers(self, h, terms):
        """Runs `self.masked_layers` with `self.activation` and `self.residual`.

        `terms[i]` (or None) is added to layer `i`'s pre-activation, e.g. the context's term.
        The last layer is linear; hidden layers after the first add their input when residual.
        """
        last = len(self.masked_layers) - 1
        for i, (layer, term) in enumerate(zip(self.masked_layers, terms, strict=True)):
            pre = layer(h)
            if term is not None:
                pre = pre + term
            if i == last:
                h = pre
            elif self.residual and i > 0:
                h = h + self.activation(pre)
            else:
                h = self.activation(pre)
        return h

    def sequential_solve(self, y, context, solve_fn):
        """Solves `x = solve_fn(y, self(x, context))` for `x`, in `num_inverse_passes` passes.

        `solve_fn(y, params) -> (x, log_scale)` acts position by position. Pass `k` keeps the
        positions among the `k + 1` lowest degrees, whose parameters depend only on positions
        already exact, and sets the rest to zero: an unsolved position is never fed back with
        an arbitrary value (which could overflow and, times a masked-out zero weight, turn the
        solved positions into NaN). The last pass keeps every position, so its log-scales are
        those of the solution.

        Args:
          y: `[..., *event_shape]`.
          context: the context, or None.
          solve_fn: the per-position inverse of the flow's update.

        Returns:
          `(x, log_scale)`, both shaped like `y`.
        """

        degrees = tf.constant(self.degrees, tf.int32)
        levels = tf.constant(np.unique(self.degrees), tf.int32)

        def body(k, x, log_scale):
            x, log_scale = solve_fn(y, self(x, context=context))
            keep = degrees <= levels[k]  # the positions exact after pass k
            zeros = tf.zeros_like(x)
            return k + 1, tf.where(keep, x, zeros), tf.where(keep, log_scale, zeros)

        _, x, log_scale = tf.while_loop(
            lambda *_: True,
            body,
            (tf.constant(0), tf.zeros_like(y), tf.zeros_like(y)),
            maximum_iterations=self.num_inverse_passes,
        )
        return x, log_scale

    def check_inputs(self, x: tf.Tensor, context: tf.Tensor | None) -> None:
        """Raises on an input or context that does not fit this network (static checks)."""
        event = tuple(x.shape[-self.event_ndims :]) if x.shape.rank is not None else None
        if event is not None and (
            len(event) != self.event_ndims
            or any(s is not None and s != e for s, e in zip(event, self.event_shape, strict=True))
        ):
            raise ValueError(
                f"`x` must have event shape {self.event_shape} (network `{self.name}`); "
                f"got input shape {tuple(x.shape)}"
            )
        if x.dtype != self.dtype:
            raise TypeError(
                f"`x` has dtype {x.dtype.name} but network `{self.name}` is {self.dtype}; "
                f"build the network with dtype={x.dtype.name!r} or cast the input"
            )
        if self.context_shape is None:
            if context is not None:
                raise ValueError(
                    f"`context` was given (shape {tuple(context.shape)}) but network "
                    f"`{self.name}` was built without one; pass context_size to use it"
                )
            return
        if context is None:
            raise ValueError(
                f"`context` is required: network `{self.name}` was built with context shape "
                f"{self.context_shape}"
            )
        ndims = len(self.context_shape)
        trailing = tuple(context.shape[-ndims:]) if context.shape.rank is not None else None
        if trailing is not None and (
            len(trailing) != ndims
            or any(
                s is not None and s != e for s, e in zip(trailing, self.context_shape, strict=True)
            )
        ):
            raise ValueError(
                f"`context` must have trailing shape {self.context_shape} (network "
                f"`{self.name}`); got shape {tuple(context.shape)}"
            )
        if context.dtype != self.dtype:
            raise TypeError(
                f"`context` has dtype {context.dtype.name} but network `{self.name}` is "
                f"{self.dtype}"
            )
        x_batch = x.shape[: x.shape.rank - self.event_ndims] if x.shape.rank is not None else None
        c_batch = context.shape[: context.shape.rank - ndims] if trailing is not None else None
        if x_batch is not None and c_batch is not None:
            try:
                tf.broadcast_static_shape(x_batch, c_batch)
            except ValueError:
                raise ValueError(
                    f"`context` batch shape {tuple(c_batch)} does not broadcast against the "
                    f"batch shape {tuple(x_batch)} of `x` (network `{self.name}`; context shape "
                    f"{tuple(context.shape)}, x shape {tuple(x.shape)}). For `sample(n)` of a "
                    "distribution whose batch shape is not the context's, give the base "
                    "distribution the context's batch shape"
                ) from None


def as_tensor(value, dtype):
    return None if value is None else tf.convert_to_tensor(value, dtype_hint=dtype)


def as_input(value, dtype):
    """Python and NumPy values as tensors of `dtype`; tensors (and Keras inputs) unchanged."""
    if isinstance(value, np.ndarray | np.generic | numbers.Number | list | tuple):
        return tf.convert_to_tensor(value, dtype=dtype)
    return value


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
        output can see every input before it.
      num_params: parameters per position.
      context_size: size of the context vector, or None for no context.
      order: "left-to-right", "right-to-left", "random" (drawn with `seed`) or a permutation of
        `range(D)` listing positions in generation order.
      hidden_degrees: "equal" (units spread evenly over degrees) or "random".
      activation: hidden activation, any `tf_keras.activations.get` name or callable.
      residual: add each hidden layer's input to its output (needs equal widths).
      kernel_initializer: initializer of the hidden kernels.
      seed: seed for "random" order and hidden degrees.
      **kwargs: passed to `tf_keras.layers.Layer` (`name`, `dtype`, ...).

    Raises:
      TypeError: a size that is not an int (bools included), or `hidden_units` not a list.
      ValueError: empty or non-positive `hidden_units`, a layer too narrow to connect every
        output, a bad `order`/`hidden_degrees`, or `residual` with unequal widths.

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
        seed: int | None = None,
        **kwargs,
    ):
        event_size = _checks.positive_int("event_size", event_size)
        hidden_units = _checks.positive_int_list("hidden_units", hidden_units)
        if event_size > 1 and min(hidden_units) < event_size - 1:
            raise ValueError(
                f"`hidden_units` = {hidden_units} is too small to connect every output for "
                f"event_size={event_size}: each hidden layer needs at least {event_size - 1} "
                "units (event_size - 1)"
            )
        if residual and len(set(hidden_units)) != 1:
            raise ValueError(f"`residual=True` needs equal hidden widths; got {hidden_units}")
        if residual and hidden_degrees != "equal":
            raise ValueError(
                f"`residual=True` needs hidden_degrees='equal'; got {hidden_degrees!r}"
            )
        context_size = _checks.positive_int("context_size", context_size, optional=True)
        num_params = _checks.positive_int("num_params", num_params)
        degrees, self.layer_degrees, masks = masks_lib.made_masks(
            event_size, hidden_units, num_params, order, hidden_degrees, seed
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
        self.activation = tf_keras.activations.get(activation)
        self.masked_layers = [
            MaskedDense(
                mask,
                kernel_initializer=kernel_initializer if i < len(hidden_units) else small_init(),
                dtype=self.dtype,
                name=f"masked_{i}",
            )
            for i, mask in enumerate(masks)
        ]
        self.context_layers = (
            []
            if context_size is None
            else [
                MaskedDense(
                    np.ones([context_size, mask.shape[1]], np.float32),
                    use_bias=False,
                    kernel_initializer="glorot_uniform" if i < len(hidden_units) else small_init(),
                    dtype=self.dtype,
                    name=f"context_{i}",
                )
                for i, mask in enumerate(masks)
            ]
        )

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
        y = tf.convert_to_tensor(y, dtype_hint=self.dtype)
        context = as_tensor(context, self.dtype)
        self.check_inputs(y, context)
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
            c = tf.zeros([layer.units], self.dtype) if layer.bias is None else layer.bias
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
        x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
        context = as_tensor(context, self.dtype)
        self.check_inputs(x, context)
        h = self.apply_masked_layers(x, self.context_terms(context))
        out_shape = tf.concat([tf.shape(h)[:-1], [self.event_size, self.num_params]], axis=0)
        out = tf.reshape(h, out_shape)
        out.set_shape(h.shape[:-1].concatenate([self.event_size, self.num_params]))
        return out
