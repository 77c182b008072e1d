"""`NeuTra`: an MCMC kernel run in the base space of a fitted flow surrogate."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iaf import _checks

tfd = tfp.distributions

KERNELS = ("nuts", "hmc")


class NeuTraKernelResults(
    collections.namedtuple("NeuTraKernelResults", ["base_state", "inner_results"])
):
    """What `NeuTra` carries from step to step.

    Attributes:
      base_state: the chain's state in the surrogate's base space,
        `[*chains, *base_event_shape]`: the state the inner kernel moves (the model-space
        state is `surrogate.bijector.forward` of it).
      inner_results: the inner kernel's results. TFP's wrappers and getters that look for a
        field (`step_size`, `log_accept_ratio`, `leapfrogs_taken`) through `inner_results`
        find the inner kernel's.
    """

    __slots__ = ()


class NeuTra(tfp.mcmc.TransitionKernel):
    """HMC or NUTS in the base space of a fitted flow surrogate (neural transport).

    A surrogate `q = f_#N(0, I)` fitted to a posterior `p` (e.g. by
    `tfp_iaf.vi.fit_surrogate_posterior`) turns sampling `p` into sampling

    - `p_e(e) ∝ p(f(e)) |det J_f(e)|`, `e` in the base space;
    - `x = f(e)`: a draw of `p` for each draw `e` of `p_e`, exact whatever the fit's quality;

    the closer `q` is to `p`, the closer `p_e` is to `N(0, I)`, the geometry HMC samples best
    (Hoffman et al., 2019). Only the flow's forward direction and its log-det are evaluated
    (an IAF's fast direction), one forward pass per gradient. The inner kernel moves `e`;
    this kernel's state is the model's value `x` with the structure of the surrogate's
    samples, so it drops into `tfp.mcmc.sample_chain` and under
    `tfp.mcmc.DualAveragingStepSizeAdaptation` like the kernel it wraps.

    As TFP's `TransformedTransitionKernel` does, `one_step` continues from the base state in
    `previous_kernel_results`, not from `current_state`: the two agree along a chain, and
    the base state is the one that needs no inverse pass.

    Shapes: state: the surrogate's event structure, each part `[*chains, *part_shape]`;
    `kernel_results.base_state: [*chains, *base_event_shape]` (`[*chains, D]` for the
    surrogates of `tfp_iaf.vi`).

    Args:
      target_log_prob_fn: `fn(value) -> log_prob`, `value` structured like the surrogate's
        samples (an inference_gym model's or a pinned JointDistribution's
        `unnormalized_log_prob`), one log-density per chain.
      surrogate: a `tfd.TransformedDistribution` over a standard normal base with batch shape
        `[]`, whose bijector maps onto the model's support; the surrogates of `tfp_iaf.vi`.
      inner_kernel: "nuts" (`tfp.mcmc.NoUTurnSampler`, the default), "hmc"
        (`tfp.mcmc.HamiltonianMonteCarlo`), or a callable `fn(base_target_log_prob_fn) ->
        TransitionKernel` for any other kernel over the base space (adaptation wrappers
        included).
      step_size: the leapfrog step size for "nuts" and "hmc"; default `D ** -0.25` (a step of
        the order HMC's acceptance needs on `N(0, I_D)`).
      num_leapfrog_steps: leapfrog steps per "hmc" step (required with "hmc").
      max_tree_depth: the "nuts" trees' maximum depth.
      name: name scope of the kernel's ops.

    Raises:
      TypeError: `surrogate` is not a `tfd.TransformedDistribution`; `inner_kernel` is not
        one of the names nor callable.
      ValueError: the surrogate's base is not a standard normal (with batch shape `[]`); an
        unknown `inner_kernel` name; a non-positive `step_size`, `num_leapfrog_steps` or
        `max_tree_depth`; "hmc" without `num_leapfrog_steps`.

    Examples:
      >>> from tfp_iaf import vi
      >>> target = tfd.Normal(3.0, 2.0).log_prob
      >>> q = vi.build_iaf_surrogate_posterior([], seed=0)
      >>> kernel = NeuTra(target, q, "hmc", step_size=0.5, num_leapfrog_steps=3)
      >>> results = kernel.bootstrap_results(base_state=q.distribution.sample(4, seed=1))
      >>> x, results = kernel.one_step(None, results, seed=[2, 3])
      >>> x.shape, results.base_state.shape
      (TensorShape([4]), TensorShape([4, 1]))

    References:
      Hoffman, Sountsov, Dillon, Langmore, Tran & Vasudevan (2019), NeuTra-lizing Bad
      Geometry in Hamiltonian Monte Carlo Using Neural Transport:
      https://arxiv.org/abs/1903.03704
    """

    def __init__(
        self,
        target_log_prob_fn: Callable,
        surrogate: tfd.TransformedDistribution,
        inner_kernel="nuts",
        *,
        step_size=None,
        num_leapfrog_steps: int | None = None,
        max_tree_depth: int = 10,
        name: str | None = None,
    ) -> None:
        parameters = dict(locals())
        # TFP's wrappers rebuild a kernel as `type(kernel)(**kernel.parameters)`.
        parameters.pop("self")
        parameters.pop("__class__", None)
        self._base_ndims, self._event_size = check_standard_normal_base(surrogate)
        self._target_log_prob_fn = target_log_prob_fn
        self._surrogate = surrogate
        self._name = name or "neutra"
        self._parameters = parameters
        self._inner_kernel = _make_inner_kernel(
            inner_kernel,
            self.base_target_log_prob_fn,
            step_size=self._step_size(step_size),
            num_leapfrog_steps=num_leapfrog_steps,
            max_tree_depth=max_tree_depth,
        )

    def _step_size(self, step_size):
        if step_size is None:
            return default_step_size(self._event_size, self.dtype)
        if tf.is_tensor(step_size) or isinstance(step_size, tf.Variable):
            return step_size
        return tf.constant(_checks.finite_float("step_size", step_size, positive=True), self.dtype)

    @property
    def surrogate(self) -> tfd.TransformedDistribution:
        return self._surrogate

    @property
    def bijector(self) -> tfp.bijectors.Bijector:
        """The map `f` from the base space onto the model's values."""
        return self._surrogate.bijector

    @property
    def dtype(self) -> tf.DType:
        return self._surrogate.distribution.dtype

    @property
    def target_log_prob_fn(self) -> Callable:
        return self._target_log_prob_fn

    @property
    def inner_kernel(self) -> tfp.mcmc.TransitionKernel:
        return self._inner_kernel

    @property
    def name(self) -> str:
        return self._name

    @property
    def parameters(self) -> dict:
        return self._parameters

    @property
    def is_calibrated(self) -> bool:
        return self._inner_kernel.is_calibrated

    def base_target_log_prob_fn(self, base_state: tf.Tensor) -> tf.Tensor:
        """`log p(f(e)) + log |det J_f(e)|`: the density the inner kernel samples, `[*chains]`."""
        bijector = self._surrogate.bijector
        value = bijector.forward(base_state)
        log_det = bijector.forward_log_det_jacobian(base_state, event_ndims=self._base_ndims)
        return self._target_log_prob_fn(value) + log_det

    def one_step(self, current_state, previous_kernel_results, seed=None):
        """One step of the inner kernel in the base space; returns `(f(e'), results)`."""
        del current_state  # the base state in the results is the chain's (see the class doc)
        with tf.name_scope(self._name):
            base_state, inner_results = self._inner_kernel.one_step(
                previous_kernel_results.base_state,
                previous_kernel_results.inner_results,
                seed=seed,
            )
            state = self._surrogate.bijector.forward(base_state)
            return state, NeuTraKernelResults(base_state, inner_results)

    def bootstrap_results(self, init_state=None, base_state=None) -> NeuTraKernelResults:
        """The results at a model-space `init_state` (one inverse pass) or at a `base_state`.

        Args:
          init_state: a value of the model, structured like the surrogate's samples, each part
            `[*chains, *part_shape]`.
          base_state: the same chains' state in the base space,
            `[*chains, *base_event_shape]`: e.g. `surrogate.distribution.sample(num_chains)`,
            which starts the chains at draws of the surrogate and costs no inverse pass.

        Raises:
          ValueError: neither or both given.
        """
        if (init_state is None) == (base_state is None):
            raise ValueError(
                "Give `NeuTra.bootstrap_results` exactly one of `init_state` and `base_state`; "
                f"got {'both' if init_state is not None else 'neither'}"
            )
        with tf.name_scope(self._name):
            if base_state is None:
                # A new tensor: the bijector's cache would otherwise map it straight back to
                # `init_state`, and the target's gradient with respect to it would be None.
                base_state = tf.identity(self._surrogate.bijector.inverse(init_state))
            base_state = tf.convert_to_tensor(base_state, self.dtype, name="base_state")
            return NeuTraKernelResults(
                base_state, self._inner_kernel.bootstrap_results(base_state)
            )


def default_step_size(event_size: int, dtype) -> tf.Tensor:
    """`D ** -0.25`: a leapfrog step of the order HMC's acceptance needs on `N(0, I_D)`."""
    return tf.constant(event_size**-0.25, dtype)


def check_standard_normal_base(surrogate) -> tuple[int, int]:
    """`(event rank, event size)` of the surrogate's base; raises unless it is `N(0, I)`.

    The base must have batch shape `[]`, a fully known event shape and, at a zero, a random
    and a scaled random point, the standard normal's log-density (checked when executing
    eagerly): a base with another mean or scale would make the chains start where the fit
    did not put them and the base space no longer the one the fit whitened.

    Raises:
      TypeError: `surrogate` is not a `tfd.TransformedDistribution`.
      ValueError: the base has a batch shape, an unknown event shape, or is not `N(0, I)`.
    """
    # TFP builds `tfd.TransformedDistribution(...)` as a private class that does not subclass
    # it when the bijector is not a CompositeTensor (ours): recognise it by what it has.
    transformed = all(hasattr(surrogate, a) for a in ("distribution", "bijector"))
    if not (isinstance(surrogate, tfd.Distribution) and transformed):
        raise TypeError(
            "`surrogate` must be a tfd.TransformedDistribution over a standard normal (e.g. "
            f"from tfp_iaf.vi.build_iaf_surrogate_posterior); got {type(surrogate).__name__}"
        )
    base = surrogate.distribution
    if base.batch_shape.rank != 0:
        raise ValueError(
            f"`surrogate`'s base must have batch shape []; got {base.batch_shape} ({base.name})"
        )
    if not base.event_shape.is_fully_defined():
        raise ValueError(
            f"`surrogate`'s base must have a known event shape; got {base.event_shape}"
        )
    shape = base.event_shape.as_list()
    size = math.prod(shape)
    if size == 0:
        raise ValueError(f"`surrogate`'s base has an empty event shape {shape}")
    if tf.executing_eagerly():
        _check_standard_normal_density(base, shape)
    return len(shape), size


def _check_standard_normal_density(base, shape) -> None:
    dtype = base.dtype.as_numpy_dtype
    probe = np.random.default_rng(0).normal(size=shape)
    points = np.stack([np.zeros(shape), probe, 2.5 * probe]).astype(dtype)
    want = -0.5 * np.sum(points.reshape(3, -1) ** 2 + np.log(2 * np.pi), axis=-1)
    got = np.asarray(base.log_prob(points), np.float64)
    if got.shape != (3,) or not np.allclose(got, want, rtol=1e-4, atol=1e-3):
        raise ValueError(
            "`surrogate`'s base must be a standard normal N(0, I) (the fit's loc and scale "
            f"belong in the bijector); got {base.name} with log-densities {got.tolist()} "
            f"where N(0, I) has {want.tolist()}"
        )


def _make_inner_kernel(kind, base_log_prob, *, step_size, num_leapfrog_steps, max_tree_depth):
    if callable(kind):
        return kind(base_log_prob)
    if not isinstance(kind, str):
        raise TypeError(
            f"`inner_kernel` must be one of {KERNELS} or a callable; got {kind!r} "
            f"({type(kind).__name__})"
        )
    if kind not in KERNELS:
        raise ValueError(f"`inner_kernel` must be one of {KERNELS} or a callable; got {kind!r}")
    if kind == "nuts":
        depth = _checks.positive_int("max_tree_depth", max_tree_depth)
        return tfp.mcmc.NoUTurnSampler(base_log_prob, step_size, max_tree_depth=depth)
    if num_leapfrog_steps is None:
        raise ValueError('`inner_kernel="hmc"` needs `num_leapfrog_steps`; got None')
    steps = _checks.positive_int("num_leapfrog_steps", num_leapfrog_steps)
    # The step size in the results, where `DualAveragingStepSizeAdaptation` reads it.
    return tfp.mcmc.HamiltonianMonteCarlo(
        base_log_prob, step_size, steps, store_parameters_in_results=True
    )
