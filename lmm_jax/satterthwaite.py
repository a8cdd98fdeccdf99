"""Satterthwaite's degrees of freedom for contrasts of β̂, with lmerTest's semantics.

lmerTest works on the variance parameters ψ = (θ, σ) (lme4's relative Cholesky factor θ
and the residual SD σ) and the (restricted) deviance with σ not profiled:

    -2ℓ_R(ψ) = log|V₀| + log|X'V₀⁻¹X| + (n-p) log(2πσ²) + r²(θ)/σ²   (REML)
    -2ℓ(ψ)   = log|V₀| + n log(2πσ²) + r²(θ)/σ²                     (ML, β̂(θ) profiled)

At the estimate ψ̂, with H the Hessian of that deviance (exact here, numerical in
lmerTest) and C(ψ) = Var(β̂)(ψ) = σ² (X'V₀⁻¹X)⁻¹:

    A = Var(ψ̂) = 2 H⁻¹,    J_i = ∂C/∂ψ_i
    for a contrast l:  v = l'Cl,  g_i = l'J_i l,  ν = 2 v² / (g'Ag)

For q contrasts L (lmerTest's contestMD): LCL' = Σ_m d_m p_m p_m' (eigenvalues d_m > 0,
up to a relative tolerance), ν_m is the 1-D ν of the contrast p_m'L, F = Σ_m (p_m'Lβ̂)²/d_m / q
and the denominator df are 2E/(E - q), E = Σ_m ν_m/(ν_m - 2); 2 when any ν_m ≤ 2, their
mean when all ν_m agree to 1e-8, ν₁ when q = 1.

Away from a boundary the df are invariant to the parametrisation, and the variance scale φ
(`scale_derivatives.py`, which Kenward-Roger needs anyway) gives them; at a boundary θ_j = 0
(a singular fit) φ -> θ is not differentiable, and lmerTest's df are those of the ψ scale.
With a known residual scale ψ = θ.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jax.scipy.linalg import solve_triangular

from .arrays import ModelArrays, ModelShape
from .blocked import CrossProducts
from .scale_derivatives import ScaleDerivatives, deviance_terms, factor_summary

EIGEN_TOLERANCE = np.sqrt(np.finfo(float).eps)  # lmerTest's contestMD eps
EQUAL_DF_TOLERANCE = 1e-8  # lmerTest's get_Fstat_ddf tol


class SatterthwaiteTerms(NamedTuple):
    """Var(β̂) (p, p), its Jacobian in ψ (k, p, p) and Var(ψ̂) = 2H⁻¹ (k, k)."""

    vcov: jnp.ndarray
    jacobian: jnp.ndarray
    vcov_varpar: jnp.ndarray


def _split(varpar: jnp.ndarray, shape: ModelShape):
    if shape.known_scale:
        return varpar, jnp.asarray(1.0, varpar.dtype)
    return varpar[:-1], varpar[-1] ** 2


def _deviance_and_vcov(varpar, cp: CrossProducts, arrays: ModelArrays, shape: ModelShape):
    """(-2ℓ_R(ψ) or -2ℓ(ψ), C(ψ)) (module docstring) from one factorisation."""
    theta, sigma2 = _split(varpar, shape)
    summary = factor_summary(theta, cp, shape)
    dev = deviance_terms(summary, sigma2, arrays.X.shape[0], shape.reml)[0]
    l_inv = solve_triangular(summary.l_xx, jnp.eye(summary.l_xx.shape[0]), lower=True)
    return dev, sigma2 * l_inv.T @ l_inv


def satterthwaite_terms_psi(cp: CrossProducts, arrays: ModelArrays, shape: ModelShape,
                        theta, sigma2) -> SatterthwaiteTerms:
    """C, ∂C/∂ψ and 2H⁻¹ at ψ̂ = (θ̂, σ̂): on lmerTest's own scale (pure JAX)."""
    varpar = theta if shape.known_scale else jnp.concatenate([theta, jnp.sqrt(sigma2)[None]])

    def gradient(x):  # ∂(deviance, C)/∂ψ; the deviance's gradient is differentiated again
        d_dev, d_vcov = jax.jacfwd(_deviance_and_vcov)(x, cp, arrays, shape)
        return d_dev, (d_vcov, _deviance_and_vcov(x, cp, arrays, shape)[1])

    hessian, (d_vcov, vcov) = jax.jacfwd(gradient, has_aux=True)(varpar)
    return SatterthwaiteTerms(vcov, jnp.moveaxis(d_vcov, -1, 0), 2.0 * jnp.linalg.inv(hessian))


def satterthwaite_terms_phi(derivatives: ScaleDerivatives) -> SatterthwaiteTerms:
    """The same on the variance scale φ: C = M⁻¹, ∂C/∂φ_i = -C (∂M/∂φ_i) C, A = 2(∂²D)⁻¹.

    ν is invariant to the parametrisation at a stationary point with a smooth map ψ -> φ,
    so away from a boundary these are lmerTest's df (from the pass Kenward-Roger needs)."""
    vcov = jnp.linalg.inv(derivatives.m)
    jac = -jnp.einsum("ab,kbc,cd->kad", vcov, derivatives.d_m, vcov)
    return SatterthwaiteTerms(vcov, jac, 2.0 * jnp.linalg.inv(derivatives.deviance_hessian))


def contrast_df(l: np.ndarray, terms: SatterthwaiteTerms) -> float:
    """ν = 2 (l'Cl)² / (g'Ag), g_i = l'J_i l, for one contrast vector l."""
    var = l @ terms.vcov @ l
    grad = np.einsum("i,kij,j->k", l, terms.jacobian, l)
    return float(2.0 * var ** 2 / (grad @ terms.vcov_varpar @ grad))


def combined_df(nu: np.ndarray) -> float:
    """lmerTest's get_Fstat_ddf: the F denominator df from the per-eigencontrast ν_m."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < EQUAL_DF_TOLERANCE):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    e = np.sum(nu / (nu - 2.0))
    return float(2.0 * e / (e - nu.size))


def satterthwaite_f_test(L: np.ndarray, beta: np.ndarray, terms: SatterthwaiteTerms) -> dict:
    """F test of Lβ = 0 (lmerTest's contestMD); L (q, p). NumDF is the numerical rank."""
    d, vectors = np.linalg.eigh(L @ terms.vcov @ L.T)
    order = np.argsort(d)[::-1]
    d, vectors = d[order], vectors[:, order]
    keep = d > max(EIGEN_TOLERANCE * d[0], 0.0)
    rotated = vectors[:, keep].T @ L
    q = int(keep.sum())
    f_value = float(np.sum((rotated @ beta) ** 2 / d[keep]) / q)
    nu = np.array([contrast_df(row, terms) for row in rotated])
    return {"F": f_value, "num_df": q, "den_df": combined_df(nu)}
