"""Variational inference with IAF surrogates for any TFP model.

- `build_iaf_surrogate_posterior(event_shape, bijector)`: the surrogate, for one shape or a
  structure of them, on the model's support; `surrogate_for(model)` reads all that off a pinned
  JointDistribution or an inference_gym model; `flat_to_event` is the bijector from one flat
  unconstrained vector onto the model, for any other flat surrogate.
- `fit_surrogate_posterior(target, surrogate, ...)`: TFP's fit, for targets that take one
  structured value (`as_tfp_target` adapts such a target to TFP's own fit), that never applies
  a step with a NaN or infinite loss or gradient: such steps are skipped (NaN in the losses it
  returns), and too many in a row raise `FitDiverged`, the variables at their last finite
  values. `stick_the_landing=True` gives the sticking-the-landing gradient estimator.
- `importance_weights`, `log_evidence`, `pareto_khat`: how good the fitted surrogate is.
"""

from tfp_iaf.vi.diagnostics import importance_weights, log_evidence, pareto_khat
from tfp_iaf.vi.fit import FitDiverged, as_tfp_target, check_target, fit_surrogate_posterior
from tfp_iaf.vi.surrogate import build_iaf_surrogate_posterior, flat_to_event, surrogate_for

__all__ = [
    "FitDiverged",
    "as_tfp_target",
    "build_iaf_surrogate_posterior",
    "check_target",
    "fit_surrogate_posterior",
    "flat_to_event",
    "importance_weights",
    "log_evidence",
    "pareto_khat",
    "surrogate_for",
]
