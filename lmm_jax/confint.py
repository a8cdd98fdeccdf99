"""Confidence intervals for a fit, lme4's `confint(m, oldNames = FALSE)`, as a DataFrame.

Rows are lme4's: per random term the SDs and correlations (`sd_(Intercept)|Subject`,
`cor_Days.(Intercept)|Subject`, ...; the lower triangle column by column), then `sigma`,
then the fixed effects. Columns `lower` and `upper`.

- "profile": likelihood-profile intervals (`profile.py`): the ML deviance profiled on the
  sd/cor/σ/β scale, also for REML fits, as lme4 does. Ends the profile does not reach are
  the parameter's bound (SD 0, correlation ±1, σ 0 or ∞), as lme4 reports them; the
  frame's `attrs["status"]` says which ends were reached.
- "wald": β̂ ± z SE(β̂) for the fixed effects; NaN for the variance parameters (lme4's
  method = "Wald").
- "bootstrap": parametric-bootstrap intervals (`bootstrap.py`) from `nsim` refits drawn
  with `seed`: `boot_type` "perc" (lme4's default), "basic", or "logbasic" (basic on the
  log scale for SDs and σ, better calibrated for SDs); `attrs["replicates"]` holds the refits.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pandas as pd

from .bootstrap import BOOT_TYPES, bootstrap_limits, bootstrap_replicates
from .exported_programs import cached_call
from .profile import NOT_CONVERGED, STATUS_MESSAGES, ml_estimates, profile_limits, sdcor_estimates
from .sdcor import check_structures, n_variance, parameter_bounds, parameter_names, theta_to_sdcor
from .structure_report import theta_names
from .structures import CholeskyFactor

METHODS = ("profile", "wald", "bootstrap")
_ALIASES = {"boot": "bootstrap"}


def _method(method) -> str:
    name = _ALIASES.get(str(method).lower(), str(method).lower()) if isinstance(method, str) else None
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return name


def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) \
            or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a number strictly between 0 and 1, got {level!r}")
    return float(level)


def select_parameters(names: list[str], n_var: int, parm) -> list[int]:
    """Row positions for `parm`: None (all), "theta_" (variance parameters), "beta_" (fixed
    effects), a name, a position, or a list of names/positions (lme4's `parm`)."""
    if parm is None:
        return list(range(len(names)))
    if isinstance(parm, str):
        if parm == "theta_":
            return list(range(n_var))
        if parm == "beta_":
            return list(range(n_var, len(names)))
        parm = [parm]
    out = []
    for p in parm:
        if isinstance(p, (int, np.integer)) and not isinstance(p, bool) and -len(names) <= p < len(names):
            out.append(int(p) % len(names))
        elif isinstance(p, str) and p in names:
            out.append(names.index(p))
        else:
            raise ValueError(f"unknown parameter {p!r} in parm; valid names are {names} "
                             "(or 'theta_', 'beta_', or positions)")
    return out


def confint(result, method: str = "profile", level: float = 0.95, nsim: int = 500,
            seed: int = 0, parm=None, progress: bool = True, boot_type: str = "perc") -> pd.DataFrame:
    """Confidence intervals of a `FitResult` (module docstring); rows as lme4's."""
    from scipy.stats import norm  # scipy.stats takes 0.3 s to import: only when needed
    method = _method(method)
    level = _check_level(level)
    if boot_type not in BOOT_TYPES:
        raise ValueError(f"boot_type must be one of {BOOT_TYPES}, got {boot_type!r}")
    shape = result.model.shape
    if method != "wald":  # Wald's intervals of β need only Var(β̂), whatever the structures
        check_structures(shape, f"confint(method={method!r})")
    names = _names(result.design, shape)
    rows = select_parameters(names, n_variance(shape), parm)
    z = float(norm.ppf(0.5 + level / 2.0))
    attrs = {"method": method, "level": level}
    if method == "wald":
        lower, upper = _wald(result, z, n_variance(shape))
    elif method == "profile":
        lower, upper, attrs["status"] = _profile(result, z, rows, names)
    else:
        replicates, converged = bootstrap_replicates(result, nsim, seed, progress=progress)
        replicates = np.where(converged[:, None], replicates, np.nan)
        if not converged.all():
            warnings.warn(f"{int((~converged).sum())} of {nsim} bootstrap refits did not converge "
                          "and were left out", RuntimeWarning, stacklevel=3)
        lower, upper = _bootstrap(result, replicates, level, boot_type)
        attrs["replicates"] = pd.DataFrame(replicates[:, rows], columns=[names[i] for i in rows])
    frame = pd.DataFrame({"lower": np.asarray(lower)[rows], "upper": np.asarray(upper)[rows]},
                         index=pd.Index([names[i] for i in rows]))
    frame.attrs.update(attrs)
    return frame


def _names(design, shape) -> list[str]:
    """lme4's row names (`sdcor.parameter_names`); for other structures (Wald only) their θ
    names (`structure_report.theta_names`), sigma and the fixed effects."""
    if all(isinstance(s, CholeskyFactor) for s in shape.structures):
        return parameter_names(design, shape)
    return theta_names(design.terms) + ([] if shape.known_scale else ["sigma"]) + list(design.fixed_names)


def _bootstrap(result, replicates: np.ndarray, level: float, boot_type: str):
    """Bootstrap limits about the fit's own estimates ψ̂ = (sd/cor, σ, β)."""
    shape = result.model.shape
    params = result.params
    variance = np.asarray(theta_to_sdcor(params.theta, np.sqrt(params.sigma2), shape))
    estimate = np.concatenate([variance[:n_variance(shape)], np.asarray(params.beta)])
    lower_bound, upper_bound = parameter_bounds(shape, len(params.beta))
    lower, upper = bootstrap_limits(replicates, estimate, level, boot_type,
                                    positive=(lower_bound == 0) & np.isinf(upper_bound),
                                    bounded=(lower_bound == -1) & (upper_bound == 1))
    if np.isinf(upper).any():
        warnings.warn("boot_type='logbasic': an SD's lower bootstrap quantile is 0 (singular refits), so its "
                      "upper limit on the log scale is infinite; boot_type='perc' or 'basic' give finite ones",
                      RuntimeWarning, stacklevel=4)
    return lower, upper


def _wald(result, z: float, n_var: int):
    fixef, se = result.fixef.to_numpy(), result.se.to_numpy()
    nan = np.full(n_var, np.nan)
    return np.concatenate([nan, fixef - z * se]), np.concatenate([nan, fixef + z * se])


def _profile(result, z: float, rows: list[int], names: list[str]):
    """Profile limits of every coordinate (one compiled program per model shape, whatever
    `parm` selects), reported for the selected rows."""
    model = result.model
    if model.shape.reml:  # lme4 profiles the ML deviance: refit by ML
        psi_hat, d_hat = ml_estimates(model.arrays, model.shape, model.initial_theta())
    else:
        psi_hat, d_hat = sdcor_estimates(result.params, model.shape)
    out = jax.device_get(cached_call(profile_limits, dict(arrays=model.arrays, psi_hat=psi_hat, d_hat=d_hat,
                                                          z=z, which=np.arange(len(names))),
                                     dict(shape=model.shape)))
    status = {names[i]: (STATUS_MESSAGES[int(out.lower_status[i])],
                         STATUS_MESSAGES[int(out.upper_status[i])]) for i in rows}
    failed = [names[i] for i in rows
              if NOT_CONVERGED in (int(out.lower_status[i]), int(out.upper_status[i]))]
    if failed:
        warnings.warn(f"the profile root search did not converge for {failed}", RuntimeWarning,
                      stacklevel=3)
    return np.asarray(out.lower), np.asarray(out.upper), status
