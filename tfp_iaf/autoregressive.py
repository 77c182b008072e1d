"""The network contract `InverseAutoregressiveFlow` relies on, and the one way context enters.

An `AutoregressiveNetwork` maps `x: [..., *event_shape]` (and a context) to per-position
parameters; `degrees` says which inputs each output may see. The three networks (`MADE`,
`ConvMADE`, `LinearAutoregressive`) differ only in how they compute that map:

- masked layers carry `x` (masks from `tfp_iaf.masks`, one degree vocabulary for dense and conv);
- the context enters through `context_projection`: an unmasked dense map of the context's last
  axis (for a `[..., H, W, C']` context map, a 1x1 convolution), whose output is added to a masked
  layer's pre-activation. The context may reach every output (it carries no degree), so it needs
  no mask: it is the "extra adjacency columns" of a mask that are all ones;
- `apply_masked_layers` runs a stack of masked layers the same way for dense and conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfp_iaf import _checks
from tfp_iaf._keras import tf_keras

__all__ = [
    "AutoregressiveNetwork",
    "ContextProjection",
    "apply_masked_layers",
    "output_initializer",
    "layer_seed",
    "seeded_initializer",
    "structure_seed",
]

# Output layers start this close to zero, so an untrained flow is close to the identity.
OUTPUT_INIT_SCALE = 1e-4


def output_initializer(seed: int | None = None) -> tf_keras.initializers.Initializer:
    """The initializer of output layers: weights of variance ~1e-4 / fan, a near-identity flow."""
    return tf_keras.initializers.VarianceScaling(OUTPUT_INIT_SCALE, "fan_avg", "uniform", seed)


def seeded_initializer(initializer, seed: int | None) -> tf_keras.initializers.Initializer:
    """`initializer` (a name or an initializer) with `seed`, where it takes one."""
    initializer = tf_keras.initializers.get(initializer)
    config = initializer.get_config()
    if seed is None or "seed" not in config:
        return initializer
    return type(initializer).from_config({**config, "seed": seed})


def layer_seed(seed: int | None, layer: int) -> int | None:
    """A distinct initializer seed per layer (so equal shapes do not get equal weights)."""
    return None if seed is None else (int(seed) * 7919 + layer) % 2**31


def structure_seed(seed: int | None) -> int | None:
    """The seed of a network's random structure (a `"random"` order or hidden degrees).

    `seed` when given. Otherwise, when TensorFlow's global seed is set (`tf.random.set_seed`,
    `tf.keras.utils.set_random_seed`), a seed drawn from it the way a TF op without a seed draws
    its own, so the structure is reproducible like the rest of the program's randomness; with
    no global seed, None (fresh entropy). Call it only for a random structure: each call takes
    one op seed from TensorFlow's sequence.
    """
    if seed is not None:
        return seed
    global_seed, op_seed = tf.compat.v1.get_seed(None)
    if global_seed is None:
        return None
    return int(np.random.SeedSequence([global_seed, op_seed]).generate_state(1)[0])


class ContextProjection(tf_keras.layers.Layer):
    """`c -> c @ V (+ b)` over the context's last axis, for any rank (a 1x1 conv on a map).

    Shapes: `c: [..., context_size] -> [..., units]`, unbatched contexts included.
    """

    def __init__(self, units: int, kernel_initializer, use_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = tf_keras.initializers.get(kernel_initializer)
        self.use_bias = use_bias

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.kernel = self.add_weight(
            "kernel", shape=(fan_in, self.units), initializer=self.kernel_initializer
        )
        self.bias = (
            self.add_weight("bias", shape=(self.units,), initializer="zeros")
            if self.use_bias
            else None
        )
        super().build(input_shape)

    def call(self, context):
        flat = tf.reshape(context, [-1, self.kernel.shape[0]])
        out = tf.matmul(flat, self.kernel)
        if self.bias is not None:
            out = tf.nn.bias_add(out, self.bias)
        out = tf.reshape(out, tf.concat([tf.shape(context)[:-1], [self.units]], axis=0))
        out.set_shape(context.shape[:-1].concatenate([self.units]))
        return out


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

    # A network whose `sequential_solve` is exact only for updates affine in their first
    # parameter (`Transform.affine_in_shift`), e.g. a closed-form linear solve.
    needs_affine_update = False

    def __init__(self, event_shape, num_params, context_shape, degrees, **kwargs):
        if kwargs.get("dtype") is not None:  # None: Keras' default (floatx or global policy)
            _checks.float_dtype("dtype", kwargs["dtype"], policy=tf_keras.mixed_precision.Policy)
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

    def _fingerprint(self) -> dict:
        """What defines the network's function for given weights (the flow holds the shapes):
        a subclass adds its order, widths, activation, ... (see `tfp_iaf._fingerprint`)."""
        return {"class": type(self).__name__, "num_params": self.num_params}

    def __call__(self, x, context=None, **kwargs):
        """A direct call: checks `x` and `context`, then runs the network (`call_unchecked`)."""
        # TFP's convention (`Bijector.forward` converts its input the same way): Python and
        # NumPy values take the network's dtype, while a tensor must already have it. Converting
        # here, before Keras does, makes a direct call agree with the bijector.
        x, context = _checks.as_input(x, self.dtype), _checks.as_input(context, self.dtype)
        if tf.is_tensor(x) and (context is None or tf.is_tensor(context)):
            self.check_inputs(x, context)  # here, so Keras does not wrap the error's message
        return self.call_unchecked(x, context, **kwargs)

    def call_unchecked(self, x, context=None, **kwargs):
        """The network's parameters at `x`, for inputs a flow has already checked.

        Keras' `Layer.__call__` without the checks of `__call__`: it still builds the network on
        first use, under its name scope, and runs `call` under its mixed-precision policy. `x`
        and `context` must be tensors of the network's dtype and shapes (unchecked).
        """
        return super().__call__(x, context=context, **kwargs)

    def build_sublayer(self, layer: tf_keras.layers.Layer, input_shape) -> None:
        """Builds `layer` under its own name scope, so every variable of the network has a
        distinct name (`made_0/masked_1/kernel_0`): Keras' `.h5` format keys weights by name."""
        with tf.name_scope(layer.name):
            layer.build(input_shape)

    def context_projection(
        self, units: int, name: str, kernel_initializer="glorot_uniform", use_bias: bool = False
    ) -> ContextProjection | None:
        """The one way context enters a network: `c -> c @ V (+ b)` over the context's last axis.

        Returns None when the network takes no context. The caller adds the result to a masked
        layer's pre-activation (broadcasting over batch dimensions).
        """
        if self.context_shape is None:
            return None
        return ContextProjection(
            units, kernel_initializer, use_bias=use_bias, dtype=self.dtype, name=name
        )

    def sequential_solve(self, y, context, solve_fn):
        """Solves `x = solve_fn(y, self(x, context))` for `x`, in `num_inverse_passes` passes.

        `solve_fn(y, params) -> (x, log_scale)` acts position by position. Pass `k` keeps the
        positions among the `k + 1` lowest degrees, whose parameters depend only on positions
        already exact, and sets the rest to zero: an unsolved position is never fed back with
        an arbitrary value (which could overflow and, times a masked-out zero weight, turn the
        solved positions into NaN). The last pass keeps every position, so its log-scales are
        those of the solution.

        Called by a flow with inputs it has checked: `y` and `context` are trusted (tensors
        of the network's dtype and shapes).

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
            x, log_scale = solve_fn(y, self.call_unchecked(x, context))
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
        _checks.check_inputs(
            x,
            context,
            event_shape=self.event_shape,
            context_shape=self.context_shape,
            dtype=tf.as_dtype(self.dtype),
            owner=f"network `{self.name}`",
        )


def apply_masked_layers(
    h: tf.Tensor,
    layers: Sequence[tf_keras.layers.Layer],
    terms: Sequence[tf.Tensor | None],
    activation,
    residual: bool,
) -> tf.Tensor:
    """Runs masked layers: `act(layer(h) + term)` for hidden layers, the last one linear.

    Args:
      h: the network input.
      layers: masked layers (`MaskedDense` or `MaskedConv2D`), input to output.
      terms: one context term (or None) per layer, added to its pre-activation.
      activation: hidden activation.
      residual: hidden layers after the first add their input to their output.

    Returns:
      The output layer's pre-activation.
    """
    last = len(layers) - 1
    for i, (layer, term) in enumerate(zip(layers, terms, strict=True)):
        pre = layer(h)
        if term is not None:
            pre = pre + term
        if i == last:
            h = pre
        elif residual and i > 0:
            h = h + activation(pre)
        else:
            h = activation(pre)
    return h
