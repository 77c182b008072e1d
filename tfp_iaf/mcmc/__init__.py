"""Exact posteriors from a fitted IAF surrogate: NeuTra HMC.

- `NeuTra(target_log_prob_fn, surrogate)`: a `tfp.mcmc.TransitionKernel` that runs NUTS (or
  HMC, or any kernel) in the base space of a surrogate `q = f_#N(0, I)`, on the density
  `p(f(e)) |det J_f(e)|`, and hands back `f(e)`, the model's value: exact draws of the
  posterior, the sampler seeing nearly `N(0, I)` when the fit is good.
- `sample_neutra(target_log_prob_fn, surrogate, num_results, ...)`: chains started at the
  surrogate's draws; the step size, a diagonal mass matrix (and HMC's trajectory length)
  adapted during burn-in; the draws with their gradient count, ESS, R-hat, divergences and
  acceptance rate.
"""

from tfp_iaf.mcmc.kernel import NeuTra, NeuTraKernelResults
from tfp_iaf.mcmc.sample import NeuTraResult, sample_neutra

__all__ = ["NeuTra", "NeuTraKernelResults", "NeuTraResult", "sample_neutra"]
