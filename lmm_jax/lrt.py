"""Likelihood-ratio test of two nested fits, with the boundary-corrected p-value.

    statistic = 2 (ℓ_full - ℓ_reduced),    df = k_full - k_reduced  (k = `df_model`)

`p_value` is the naive P(χ²_df > statistic) that lme4's anova() prints. When the tested
parameters include variances that are zero under H0, they lie on the boundary of the
parameter space and the statistic's law is a chi-bar-square mixture Σ_j w_j χ²_j
(Self & Liang 1987; Stram & Lee 1994), given in `p_value_boundary` (χ²₀ is a point
mass at 0). The mixture is built per random term of the full model (`lrt_mixture.py`):

- a new scalar term, (1 | g) added:                  ½χ²₀ + ½χ²₁
- a term going from q to q+1 correlated effects, as (1 | g) -> (1 + x | g): one new
  variance on the boundary, q new covariances:       ½χ²_q + ½χ²_{q+1}
- only covariances added, (x || g) -> (x | g): interior, χ²_a (a covariances)
- added fixed effects (ML fits): interior, each shifts the mixture by one df
- several terms changing at once: the convolution of the per-term mixtures, e.g. two
  new scalar terms: ¼χ²₀ + ½χ²₁ + ¼χ²₂. This is exact when the estimators of the tested
  variances are asymptotically independent (orthogonal information), an approximation
  otherwise; the `mixture` string says so.
- a term gaining two or more variances at once, e.g. (1 | g) -> (1 + x + z | g): no
  closed-form weights (they depend on the information matrix): p_value_boundary is None.

REML fits: the restricted likelihoods of two models with different fixed effects are
densities of different error contrasts, so the test is refused (refit both with
method="ML"). With the same fixed effects the REML LRT is valid and kept as it is; we do
not refit silently (lme4's anova() refits with ML; `compare` does as lme4).
"""

from __future__ import annotations

import numpy as np

from .lrt_mixture import mixture_p_value, variance_mixture

NESTED_TOLERANCE = 1e-8


def _check_same_data(reduced, full) -> None:
    if reduced.nobs != full.nobs or not np.array_equal(reduced.design.y, full.design.y):
        raise ValueError(f"the two fits are not of the same data (nobs {reduced.nobs} and "
                         f"{full.nobs}, or different responses): a likelihood-ratio test "
                         "compares two models of the same observations")


def same_fixed_effects(one, other) -> bool:
    """Whether two fits have the same fixed-effect design X (their REML criteria compare)."""
    a, b = one.design.X, other.design.X
    return a.shape == b.shape and np.allclose(a, b)


def _fixed_nested(reduced, full) -> bool:
    """Is the column space of the reduced X inside that of the full X?"""
    q, _ = np.linalg.qr(full.design.X)
    xr = reduced.design.X
    residual = xr - q @ (q.T @ xr)
    return bool(np.linalg.norm(residual) <= NESTED_TOLERANCE * max(1.0, np.linalg.norm(xr)))


def check_pair(reduced, full) -> None:
    """The refusals of `lrt`: same data, same method, nested fixed parts, fewer parameters."""
    _check_same_data(reduced, full)
    if reduced.method != full.method:
        raise ValueError(f"the fits use different methods ({reduced.method} and {full.method}); "
                         "refit both with method='ML'")
    if reduced.method == "REML" and not same_fixed_effects(reduced, full):
        raise ValueError("the REML fits have different fixed effects: their restricted "
                         "likelihoods are not comparable; refit both with method='ML'")
    if reduced.df_model > full.df_model:
        raise ValueError(f"`reduced` has more parameters ({reduced.df_model}) than `full` "
                         f"({full.df_model}): pass the smaller model first")
    if reduced.df_model == full.df_model:
        raise ValueError(f"both fits have {full.df_model} parameters: nothing is tested")
    if not _fixed_nested(reduced, full):
        raise ValueError("the fixed effects of `reduced` are not nested in those of `full`")


def lrt(reduced, full) -> dict:
    """Likelihood-ratio test of `reduced` against `full` (two `FitResult`, nested).

    >>> import lmm_jax
    >>> data = lmm_jax.datasets.load("sleepstudy")
    >>> m0 = lmm_jax.fit("Reaction ~ Days + (1 | Subject)", data, method="ML")
    >>> m1 = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", data, method="ML")
    >>> out = lmm_jax.lrt(m0, m1)
    >>> round(out["statistic"], 3), out["df"], out["mixture"][:21]
    (42.139, 2, '1/2 χ²(1) + 1/2 χ²(2)')

    Returns a dict: `statistic`, `df`, `p_value` (naive χ²_df, as lme4's anova()),
    `p_value_boundary` (the chi-bar-square mixture; None where no closed form applies),
    `mixture` (which mixture and why), `method` ("ML" or "REML"), `loglik_reduced`,
    `loglik_full`. Raises ValueError for fits of different data, REML fits with different
    fixed effects, non-nested fixed parts, or a `reduced` with as many or more parameters.
    See the module docstring for the cases the mixture covers.
    """
    from scipy import stats  # scipy.stats takes 0.3 s to import: only when needed
    check_pair(reduced, full)
    statistic = 2.0 * (full.loglik - reduced.loglik)
    df = full.df_model - reduced.df_model
    p_naive = float(stats.chi2.sf(max(statistic, 0.0), df))
    weights, why = variance_mixture(reduced.design, full.design)
    if _residual_parameters(full) != _residual_parameters(reduced):
        weights, why = None, ("the fits' residual structures (correlation= / weights= variance "
                              "functions) differ: no boundary mixture is derived for their parameters; "
                              "p_value is the naive χ²(df), as nlme's anova()")
    elif weights is not None and max(weights) != df:
        weights, why = None, f"{why}; its largest degrees of freedom differ from df = {df}: not applied"
    p_boundary = None if weights is None else mixture_p_value(statistic, weights)
    return {"statistic": float(statistic), "df": int(df), "p_value": p_naive,
            "p_value_boundary": p_boundary, "mixture": why, "method": full.method,
            "loglik_reduced": reduced.loglik, "loglik_full": full.loglik}


def _residual_parameters(result) -> int:
    """The number of residual-structure parameters of a fit (0 without structures)."""
    shape = getattr(result.model, "residual_shape", None)
    return 0 if shape is None else int(shape.n_residual)
