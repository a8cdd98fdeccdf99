"""`lmm_jax.fit`: the one-call entry point."""

from __future__ import annotations

import warnings

from .model import Model


def fit(formula: str, data, method: str = "REML", weights=None, data_name: str | None = None,
        known=None, correlation: str | None = None, family: str = "gaussian"):
    """Fit a linear mixed model written in lme4's formula syntax.

    >>> import lmm_jax
    >>> result = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", lmm_jax.datasets.load("sleepstudy"))
    >>> round(result.reml_criterion, 2)
    1743.63

    `method` is "REML" (default) or "ML"; `data` a DataFrame or a dict of arrays (never
    modified); `data_name` the name summary() prints as `Data:` (default: the caller's
    variable, or `data.attrs["name"]`, `data_names.py`); `weights` prior weights (an array
    or a column name): Var(ε_i) = σ²/w_i.
    `known`: {grouping factor: K} gives a term (1 | g) the covariance σ_g² K for a known
    relationship matrix K over g's levels (`known_covariance.py`). Returns a `FitResult`.

    Residual structures as nlme's `correlation=` and `weights=` (`residual_model.py`):
    `correlation="ar1(~ 1 | g)"`, `"car1(~ t | g)"`, `"cs(~ 1 | g)"`, `"un(~ 1 | g)"`,
    `"exp(~ x + y | g, nugget=True)"`; `weights="ident(~ 1 | f)"` or `"power(~ x)"` (a
    string with '~' is a variance function, not a column). A formula without random terms
    is then a gls fit. A formula without random terms and without residual structures is
    the linear model (i.i.d. errors) fitted by REML or ML, e.g. the null model of a
    likelihood-ratio test: `lmm_jax.lrt(lmm_jax.fit("y ~ x", d, method="ML"), full)`.
    Returns a `ResidualFitResult` (nlme's logLik, AIC, BIC).

    `family`: "gaussian" only. These are linear mixed models (a Gaussian response, identity
    link); generalised ones (lme4's glmer: binomial, poisson, ...) are out of scope, and any
    other family is a ValueError saying so, before the data are read.
    """
    _check_family(family)
    from .data_names import data_name_of
    from .formula import parse_formula
    from .residual_design import looks_like_structure

    data_name = data_name_of(data, data_name)
    fixed_only = not parse_formula(formula).random if isinstance(formula, str) else False
    if correlation is not None or looks_like_structure(weights) or fixed_only:
        from .residual_model import ResidualModel

        variance = weights if looks_like_structure(weights) else None
        prior = None if variance is not None else weights
        return _told_of_problems(ResidualModel.from_formula(formula, data, method, prior, data_name,
                                                            correlation, variance).fit())
    return _told_of_problems(Model.from_formula(formula, data, method, weights=weights, data_name=data_name,
                                                known=known).fit())


def _check_family(family) -> None:
    """Refuses a family other than gaussian: GLMMs are not fitted here."""
    if not (isinstance(family, str) and family.lower() == "gaussian"):
        raise ValueError(f"family={family!r}: lmm_jax fits linear mixed models (a Gaussian response) "
                         "only; generalised linear mixed models (GLMMs, lme4's glmer) are not supported")


def _told_of_problems(result):
    """lme4's messages at fit time, as warnings: a fit that did not converge, and a singular
    one (a variance estimated as 0, or a correlation as ±1), which users should know before
    reading its numbers."""
    failures = result.convergence_checks[0]
    if not result.converged and failures and int(result.params.status) <= 1:
        warnings.warn("the optimiser stopped normally, but the fit is not converged: " + "; ".join(failures)
                      + " (result.converged is False; lme4's convergence checks)", stacklevel=3)
    elif not result.converged:
        warnings.warn(f"the fit did not converge ({result.convergence_message}); its estimates are "
                      "not an optimum of the criterion", stacklevel=3)
    for message in result.convergence_checks[1]:
        warnings.warn(message, stacklevel=3)
    if result.singular:
        warnings.warn("boundary (singular) fit: a random-effect variance is estimated as 0 or a correlation "
                      "as +-1 (lme4's isSingular; result.singular)", stacklevel=3)
    return result
