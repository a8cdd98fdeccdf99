"""`compare`: lme4's anova(m1, m2, ...) table of nested fits.

Rows are ordered by the number of parameters (npar = `df_model`); for row i > 1

    Chisq = 2 max(0, ℓ_i - ℓ_{i-1}),   Df = npar_i - npar_{i-1},   Pr(>Chisq) = P(χ²_Df > Chisq)

(the naive χ² p-value; `lrt` gives the boundary-corrected one). As lme4 does, REML fits
are first refitted with ML ("refitting model(s) with ML (instead of REML)", issued as a
warning), since restricted likelihoods of models with different fixed effects are not
comparable; AIC, BIC, logLik and deviance are then those of the ML fits. With
`refit=False` (lme4's anova(..., refit = FALSE)) REML fits with the same fixed effects are
compared as they are, as nlme's anova() compares gls/lme fits of different variance or
correlation structures.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .lrt import same_fixed_effects


REFIT_MESSAGE = "refitting model(s) with ML (instead of REML)"


def refit_ml(result):
    """The ML fit of a fitted model (same data, formula, weights and residual structures)."""
    return result.model.with_method("ML").fit()


def _names(results, names) -> list[str]:
    if names is None:
        formulas = [r.design.formula.text for r in results]
        unique = len(set(formulas)) == len(formulas)
        return formulas if unique else [f"model {i + 1}" for i in range(len(results))]
    names = [str(n) for n in names]
    if len(names) != len(results) or len(set(names)) != len(names):
        raise ValueError(f"names must be {len(results)} distinct labels, got {names}")
    return names


def _check_same_data(results) -> None:
    first = results[0].design.y
    for r in results[1:]:
        if r.nobs != results[0].nobs or not np.array_equal(r.design.y, first):
            raise ValueError("models were not all fitted to the same data (same rows and "
                             "response): they cannot be compared")


def compare(*results, names=None, refit: bool = True) -> pd.DataFrame:
    """lme4's anova(m1, m2, ...) of two or more `FitResult` of the same data.

    >>> import lmm_jax
    >>> data = lmm_jax.datasets.load("sleepstudy")
    >>> m0 = lmm_jax.fit("Reaction ~ Days + (1 | Subject)", data, method="ML")
    >>> m1 = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", data, method="ML")
    >>> lmm_jax.compare(m0, m1)["Df"].tolist()
    [nan, 2.0]

    Returns a DataFrame indexed by `names` (default: the formulas), with columns npar,
    AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq); `.attrs["refitted"]` says whether
    REML fits were refitted with ML (a warning says so too). `refit=False`: REML fits are
    compared as fitted, which needs the same method and the same fixed effects in all.
    """
    if len(results) < 2:
        raise ValueError("compare needs at least two fitted models")
    labels = _names(results, names)
    _check_same_data(results)
    if not refit:
        _check_comparable_as_fitted(results)
    refitted = refit and any(r.method == "REML" for r in results)
    if refitted:
        warnings.warn(REFIT_MESSAGE, UserWarning, stacklevel=2)
        results = [refit_ml(r) if r.method == "REML" else r for r in results]
    order = sorted(range(len(results)), key=lambda i: results[i].df_model)
    table = _table([results[i] for i in order], [labels[i] for i in order])
    table.attrs["refitted"] = refitted
    return table


def _check_comparable_as_fitted(results) -> None:
    """`refit=False`: restricted likelihoods compare only between REML fits with the same X."""
    methods = {r.method for r in results}
    if len(methods) > 1:
        raise ValueError(f"refit=False compares fits as fitted, but they use different methods {sorted(methods)}")
    if methods == {"REML"} and not all(same_fixed_effects(results[0], r) for r in results[1:]):
        raise ValueError("refit=False: the REML fits have different fixed effects, so their restricted "
                         "likelihoods are not comparable; use refit=True (ML refits)")


def _table(results, labels) -> pd.DataFrame:
    from scipy import stats  # scipy.stats takes 0.3 s to import: only when needed
    npar = np.array([r.df_model for r in results], dtype=float)
    loglik = np.array([r.loglik for r in results])
    chisq = np.concatenate([[np.nan], 2.0 * np.maximum(0.0, np.diff(loglik))])
    df = np.concatenate([[np.nan], np.diff(npar)])
    with np.errstate(invalid="ignore"):
        p = np.where(df > 0, stats.chi2.sf(chisq, np.where(df > 0, df, 1)), np.nan)
    return pd.DataFrame({"npar": npar.astype(int), "AIC": [r.aic for r in results],
                         "BIC": [r.bic for r in results], "logLik": loglik,
                         "deviance": -2.0 * loglik, "Chisq": chisq, "Df": df, "Pr(>Chisq)": p},
                        index=pd.Index(labels, name="model"))
