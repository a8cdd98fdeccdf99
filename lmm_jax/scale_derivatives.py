"""First and second derivatives on the variance scale φ, from one forward-over-forward pass.

At φ (`variance_scale.py`: V = Σ_i φ_i V_i) one blocked factorisation gives

    D(φ) = -2ℓ_R(φ) or -2ℓ(φ)             (σ² not profiled; ML: β̂(φ) profiled)
    G(φ) = log|V| + log|M| (REML), log|V| (ML)   (the expected information is -½ ∂²G)
    M(φ) = X'V⁻¹X = L_XX L_XX'/σ²         (Var(β̂) = M⁻¹)

and differentiating (D, G, M) twice in forward mode gives ∂²D, ∂²G, ∂M and ∂²M, all that
Satterthwaite's and Kenward-Roger's df need, in one trace (compile time is the cost here).

At a boundary (a factor diagonal θ_j below `BOUNDARY_FLOOR`: a zero variance) Σ_k = σ²Λ_kΛ_k'
is singular and φ → θ is not differentiable there; the derivatives are then taken with those
diagonals at `BOUNDARY_FLOOR`, i.e. variances of order 1e-8 σ² (G and M are smooth in φ
there, so Kenward-Roger's df move by O(1e-8)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .arrays import ModelArrays, ModelShape, bounded_mask
from .blocked import CrossProducts, blocked_factor, cross_products, rest_size
from .variance_scale import engine_parameters, variance_parameters

BOUNDARY_FLOOR = 1e-4


class FactorSummary(NamedTuple):
    """From one blocked Cholesky factor at θ: log|V₀|, r² and L_XX (X'V₀⁻¹X = L_XX L_XX')."""

    logdet_v0: jnp.ndarray
    rss: jnp.ndarray
    l_xx: jnp.ndarray


def factor_summary(theta, cp: CrossProducts, shape: ModelShape) -> FactorSummary:
    """One factorisation for the deviance and Var(β̂) alike (as `blocked.blocked_profile`)."""
    factor = blocked_factor(theta, cp, shape)
    q2, r = rest_size(shape), factor.l22.shape[0]
    log_diag11 = jnp.log(jnp.diagonal(factor.l11, axis1=1, axis2=2))
    log_diag22 = jnp.log(jnp.diag(factor.l22))
    logdet_v0 = 2.0 * (jnp.sum(log_diag11) + jnp.sum(log_diag22[:q2])) - cp.sum_log_weights
    return FactorSummary(logdet_v0, factor.l22[-1, -1] ** 2, factor.l22[q2:r - 1, q2:r - 1])


def deviance_terms(summary: FactorSummary, sigma2, n: int, reml: bool):
    """(D, log|V| + [REML] log|M|) from a factor summary and σ² (module docstring)."""
    p = summary.l_xx.shape[0]
    d = n - p if reml else n
    logdet_xtvx0 = 2.0 * jnp.sum(jnp.log(jnp.diag(summary.l_xx)))
    dev = summary.logdet_v0 + d * jnp.log(2.0 * jnp.pi * sigma2) + summary.rss / sigma2
    logdets = summary.logdet_v0 + n * jnp.log(sigma2)
    if reml:
        dev = dev + logdet_xtvx0
        logdets = logdets + logdet_xtvx0 - p * jnp.log(sigma2)
    return dev, logdets


class ScaleDerivatives(NamedTuple):
    """∂²D (k, k), ∂²G (k, k), M (p, p), ∂M (k, p, p), ∂²M (p, p, k, k) at φ."""

    deviance_hessian: jnp.ndarray
    logdet_hessian: jnp.ndarray
    m: jnp.ndarray
    d_m: jnp.ndarray
    d2_m: jnp.ndarray


def floored_theta(theta, shape: ModelShape):
    """θ with bounded entries below `BOUNDARY_FLOOR` raised to it (module docstring)."""
    floor = jnp.where(jnp.asarray(bounded_mask(shape)), BOUNDARY_FLOOR, -jnp.inf)
    return jnp.where(jnp.abs(theta) < floor, floor, theta)


def scale_derivatives(arrays: ModelArrays, shape: ModelShape, theta, sigma2) -> ScaleDerivatives:
    """The derivatives at φ(θ̂, σ̂²) (θ floored at a boundary); unstructured terms only."""
    cp, n = cross_products(arrays, shape), arrays.X.shape[0]
    phi = variance_parameters(floored_theta(theta, shape), sigma2, shape)

    def values(x):
        th, s2 = engine_parameters(x, shape)
        summary = factor_summary(th, cp, shape)
        dev, logdets = deviance_terms(summary, s2, n, shape.reml)
        return jnp.stack([dev, logdets]), summary.l_xx @ summary.l_xx.T / s2

    def first(x):
        d_scalars, d_m = jax.jacfwd(values)(x)
        return (d_scalars, d_m), (d_m, values(x)[1])

    (hessians, d2_m), (d_m, m) = jax.jacfwd(first, has_aux=True)(phi)
    return ScaleDerivatives(hessians[0], hessians[1], m, jnp.moveaxis(d_m, -1, 0), d2_m)
