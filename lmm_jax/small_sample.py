"""Small-sample inference for the fixed effects: one compiled program per model shape.

`small_sample_terms` evaluates, at the fit, everything Satterthwaite's
(`satterthwaite.py`) and Kenward-Roger's (`kenward_roger.py`, REML fits with unstructured
terms) tests need; the df of any contrast then follow on the host from small matrices.
`coefficient_tests` gives lmerTest's per-coefficient table: t = β̂_j/se_j on Satterthwaite's
df, and the KR t = β̂_j/√(Φ_A)_jj on KR's df (lmerTest's `summary(m, ddf = "Kenward-Roger")`).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .arrays import ModelArrays, ModelShape, to_host
from .blocked import cross_products
from .conditioning import Reparametrisation, conditioned, user_xtvx_inverse
from .exported_programs import cached_call
from .kenward_roger import KenwardRogerTerms, kenward_roger_adjust, kenward_roger_terms
from .satterthwaite import (SatterthwaiteTerms, contrast_df, satterthwaite_terms_phi,
                            satterthwaite_terms_psi)
from .scale_derivatives import scale_derivatives
from .structures import CholeskyFactor
from .term_centring import centred_arrays, centred_theta, centring_maps


class SmallSampleTerms(NamedTuple):
    satterthwaite: SatterthwaiteTerms
    kenward_roger: KenwardRogerTerms | None


def on_variance_scale(shape: ModelShape) -> bool:
    """Whether the model has the variance scale φ (unstructured terms only)."""
    return all(type(s) is CholeskyFactor for s in shape.structures)


@partial(jax.jit, static_argnames=("shape", "boundary"))
def small_sample_terms(arrays: ModelArrays, shape: ModelShape, theta, sigma2,
                       boundary: bool = False) -> SmallSampleTerms:
    """Satterthwaite's terms, and Kenward-Roger's for REML fits on the φ scale.

    One forward-over-forward pass on φ serves both (`scale_derivatives.py`); Satterthwaite
    is taken on lmerTest's ψ = (θ, σ) scale instead at a `boundary` (a singular fit, where
    φ's df differ from lmerTest's) or without the φ scale.

    The terms are computed where the fit optimised, on the terms' centred columns at θ̂_c
    (`term_centring.py`; the df are invariant to that map of the variance parameters, away
    from a boundary; at one, lmerTest's ψ = (θ, σ) is lme4's θ on the user's columns), and on
    the conditioned X and y (`conditioning.py`: X_c'V₀⁻¹X_c inverts without the digits a
    covariate of large mean costs), then mapped back to the user's β (`user_terms`)."""
    maps = (None,) * len(shape.structures) if boundary else centring_maps(arrays, shape)
    theta = centred_theta(theta, maps, shape)
    arrays, rep = conditioned(centred_arrays(arrays, maps))
    phi_scale = on_variance_scale(shape)
    derivatives, interior = None, None
    if phi_scale and boundary and shape.reml:  # and at lme4's start θ₀ (Λ = I: interior), for
        # the information's null space (`expected_information_inverse`): one loop body of two
        # steps (compiled once; vmap over jacfwd-of-jacfwd hangs on XLA:CPU here)
        both = jax.lax.map(lambda th: scale_derivatives(arrays, shape, th, sigma2),
                           jnp.stack([theta, jnp.asarray(shape.initial_theta(), theta.dtype)]))
        derivatives = jax.tree.map(lambda leaf: leaf[0], both)
        interior = -0.5 * both.logdet_hessian[1]
    elif phi_scale:
        derivatives = scale_derivatives(arrays, shape, theta, sigma2)
    if phi_scale and not boundary:
        satt = satterthwaite_terms_phi(derivatives)
    else:
        satt = satterthwaite_terms_psi(cross_products(arrays, shape), arrays, shape, theta, sigma2)
    kr = kenward_roger_terms(derivatives, interior) if phi_scale and shape.reml else None
    return user_terms(SmallSampleTerms(satt, kr), rep)


def user_terms(terms: SmallSampleTerms, rep: Reparametrisation) -> SmallSampleTerms:
    """The terms of β_c = R(β - b₀) as terms of β: each covariance of β̂ and each of its
    derivatives C -> R⁻¹CR⁻ᵀ (`conditioning.user_xtvx_inverse`)."""
    satt = terms.satterthwaite._replace(vcov=user_xtvx_inverse(terms.satterthwaite.vcov, rep),
                                        jacobian=user_xtvx_inverse(terms.satterthwaite.jacobian, rep))
    kr = terms.kenward_roger
    if kr is not None:
        kr = kr._replace(vcov=user_xtvx_inverse(kr.vcov, rep), phi_p_phi=user_xtvx_inverse(kr.phi_p_phi, rep),
                         vcov_adjusted=user_xtvx_inverse(kr.vcov_adjusted, rep))
    return SmallSampleTerms(satt, kr)


def fit_terms(result) -> SmallSampleTerms:
    """`small_sample_terms` at a `FitResult`'s estimates, on the host (`checked_varpar`)."""
    model, params = result.model, result.params
    terms = to_host(cached_call(small_sample_terms,
                                dict(arrays=model.arrays, theta=params.theta, sigma2=params.sigma2),
                                dict(shape=model.shape, boundary=bool(result.singular))))
    return terms._replace(satterthwaite=checked_varpar(terms.satterthwaite))


MIN_DF = 1e-6  # ν = 2/CV(v̂)² of a coefficient's variance v: below this, CV(v̂) > 1414


VARPAR_RANK_TOLERANCE = 1e-10  # smallest eigenvalue of Var(ψ̂)'s correlation form


def _smallest_correlation_eigenvalue(varpar: np.ndarray) -> float:
    """The smallest eigenvalue of D^(-1/2) Var(ψ̂) D^(-1/2), D = diag Var(ψ̂): free of the
    parameters' units, near 0 where H is singular (a direction of ψ without curvature)."""
    scale = np.sqrt(np.diag(varpar))
    return float(np.linalg.eigvalsh(varpar / np.outer(scale, scale)).min())


def checked_varpar(satt: SatterthwaiteTerms) -> SatterthwaiteTerms:
    """Satterthwaite's terms, with Var(ψ̂) = 2H⁻¹ set to NaN (and a warning) where H is not
    positive definite, or where a coefficient's ν = 2v²/Var(v̂) is below `MIN_DF` (the
    estimate of its variance v uncertain by over 1,000 times itself): a variance parameter
    the likelihood does not identify (a random term confounded with the fixed effects:
    bodyweight's (1 | Diet:Tf) beside Tf * Diet) has no curvature, and 2H⁻¹ came out with
    an eigenvalue of -1.8e18 (df ~-7e-14, NaN p-values, only numpy's warning) or, with
    other rounding, +1.6e18 (df ~1e-14, p = 1). Rounding alone decides which, and whether
    the df come out tiny: (1 | Subject) + (0 + late | Subject) (late a two-level factor) gave
    eigenvalues 1e4..5e17 and df 17.004, so a smallest eigenvalue of 2H⁻¹'s correlation
    form below `VARPAR_RANK_TOLERANCE` (9e-14 there) counts as singular too."""
    varpar = np.asarray(satt.vcov_varpar)
    coefficients = np.eye(np.asarray(satt.vcov).shape[0])
    if varpar.size and np.all(np.isfinite(varpar)) and np.linalg.eigvalsh(varpar).min() > 0 \
            and _smallest_correlation_eigenvalue(varpar) > VARPAR_RANK_TOLERANCE \
            and min(contrast_df(row, satt) for row in coefficients) >= MIN_DF:
        return satt
    warnings.warn("the deviance's Hessian in the variance parameters is not positive definite (or "
                  "nearly singular) at the estimates (a variance parameter the data do not identify, "
                  "e.g. a random term confounded with the fixed effects): Satterthwaite's degrees of "
                  "freedom are undefined (NaN)", UserWarning, stacklevel=3)
    return satt._replace(vcov_varpar=np.full_like(varpar, np.nan))


def two_sided_p(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    from scipy import stats  # scipy.stats takes 0.3 s to import: only when needed
    return 2.0 * stats.t.sf(np.abs(t), df)


def coefficient_tests(beta: np.ndarray, terms: SmallSampleTerms) -> dict:
    """Per fixed effect: df_satterthwaite, t, p_satterthwaite, and for KR df_kenward_roger,
    t_kenward_roger, p_kenward_roger (None without KR)."""
    p = beta.size
    rows = np.eye(p)
    satt = terms.satterthwaite
    se = np.sqrt(np.diag(np.asarray(satt.vcov)))
    df = np.array([contrast_df(row, satt) for row in rows])
    t = beta / se
    out = {"df_satterthwaite": df, "t": t, "p_satterthwaite": two_sided_p(t, df),
           "df_kenward_roger": None, "t_kenward_roger": None, "p_kenward_roger": None}
    kr = terms.kenward_roger
    if kr is not None:
        df_kr = np.array([kenward_roger_adjust(row[None, :], kr)[0] for row in rows])
        t_kr = beta / np.sqrt(np.diag(np.asarray(kr.vcov_adjusted)))
        out.update(df_kenward_roger=df_kr, t_kenward_roger=t_kr, p_kenward_roger=two_sided_p(t_kr, df_kr))
    return out


def fixed_effect_tests(result) -> dict:
    """`coefficient_tests` of a `FitResult` as JSON-able lists (None for a missing or
    non-finite value)."""
    out = coefficient_tests(result.fixef.to_numpy(), result.small_sample_terms())
    return {key: None if values is None else [float(v) if np.isfinite(v) else None for v in values]
            for key, values in out.items()}
