"""`FitResult.to_dict()`: the fit as plain JSON-able data, with lme4's meanings.

Keys: formula, method, nobs, converged, fixed {names, estimate, se, vcov, df_satterthwaite, t,
p_satterthwaite, df_kenward_roger, t_kenward_roger, p_kenward_roger (None unless a REML fit;
lmerTest's t tests, `small_sample.py`)}, sigma, theta,
varcorr (rows of lme4's as.data.frame(VarCorr(m)), residual last; its grp column keyed
group), loglik, df_model, aic, bic, deviance (ML fits; None for REML) or reml_criterion
(REML fits; None for ML), singular, ranef {group: {levels, terms, values, cond_sd}},
structure_parameters (per term: group, structure keyword, theta_names, theta, derived values
such as rho), correlation_parameters and variance_function (residual structures, nlme's
meanings; None without them). An undefined correlation (a
term with zero variance) is None.
"""

from __future__ import annotations

import numpy as np

from .small_sample import fixed_effect_tests


def result_to_dict(result) -> dict:
    modes, cond_sd = result.ranef(), result.ranef(cond_sd=True)
    return {
        "formula": result.design.formula.text,
        "method": result.method,
        "nobs": result.nobs,
        "converged": result.converged,
        "convergence": _convergence(result),
        "fixed": {
            "names": list(result.fixef.index),
            "estimate": _floats(result.fixef),
            "se": _floats(result.se),
            "vcov": [_floats(row) for row in result.vcov.to_numpy()],
            **(fixed_effect_tests(result) if result.small_sample_supported else {}),
        },
        "sigma": result.sigma,
        "theta": _floats(result.theta),
        "structure_parameters": result.structure_parameters(),
        "varcorr": _varcorr_rows(result.varcorr()),
        "loglik": result.loglik,
        "df_model": result.df_model,
        "aic": result.aic,
        "bic": result.bic,
        "deviance": result.deviance,
        "reml_criterion": result.reml_criterion,
        "singular": result.singular,
        "correlation_parameters": result.correlation_parameters,
        "variance_function": result.variance_function,
        "ranef": {
            group: {
                "levels": [str(level) for level in frame.index],
                "terms": list(frame.columns),
                "values": [_floats(row) for row in frame.to_numpy()],
                "cond_sd": [_floats(row) for row in cond_sd[group].to_numpy()],
            }
            for group, frame in modes.items()
        },
    }


def _varcorr_rows(frame) -> list[dict]:
    """varcorr()'s rows as dicts with keys group, var1, var2, vcov, sdcor (NaN as None)."""
    rows = frame.rename(columns={"grp": "group"}).to_dict("records")
    return [{key: (None if isinstance(v, float) and np.isnan(v) else v) for key, v in row.items()}
            for row in rows]


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=float)]


def _convergence(result) -> dict:
    """The optimiser's status and the convergence checks' messages (`FitResult.convergence_checks`;
    a residual-structure fit's are the structural ones only)."""
    checks = result.convergence_checks
    return {"status": result.convergence_message, "failures": list(checks[0]), "warnings": list(checks[1])}
