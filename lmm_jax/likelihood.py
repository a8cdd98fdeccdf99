"""The profiled log-likelihood and restricted log-likelihood, written once.

Model: y = Xβ + Zα + ε with α ~ N(0, σ² ΛΛ'), ε ~ N(0, σ² W⁻¹), so
V = σ² V₀ with V₀ = Z Λ Λ' Z' + W⁻¹ (W the diagonal of prior weights).

An *evaluator* (dense: `dense.py`; blocked Cholesky: `blocked.py`) turns θ into four
numbers-and-vectors, `Profiled`:

    log|V₀|,   log|X' V₀⁻¹ X|,   r² = min_β (y - Xβ)' V₀⁻¹ (y - Xβ),   β̂ = argmin.

β and σ² are then profiled out in closed form. With d = n (ML) or d = n - p (REML),
σ̂² = r²/d and

    -2 ℓ(θ)   = log|V₀| + n [1 + log(2π r²/n)]                               (ML deviance)
    -2 ℓ_R(θ) = log|V₀| + log|X'V₀⁻¹X| + (n-p) [1 + log(2π r²/(n-p))]         (REML criterion)

exactly as lme4 and MixedModels.jl define them (the REML criterion carries no log|X'X|
term). REML differs from ML in the denominator d and the one log-determinant.

With a *known residual scale* (`ModelShape.known_scale`: W⁻¹ = diag(D_i) known, as in the
Fay-Herriot model or a meta-analysis) σ² is fixed at 1 instead of profiled, V = V₀, and

    -2 ℓ(θ)   = log|V₀| + r² + n log(2π)                                       (ML)
    -2 ℓ_R(θ) = log|V₀| + log|X'V₀⁻¹X| - log|X'X| + r² + (n-p) log(2π)         (REML)

(`known_scale_deviance`). The REML form is the density of n - p error contrasts
(Harville 1974), and it is metafor's (rma.uni's default REMLf = TRUE), which keeps the
-log|X'X| term: on bcg its REML log-likelihood is ours only with that term (without it
ours would be lower by ½ log|X'X| = 5.195). The term is constant in θ, so the estimates
do not depend on it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class Profiled(NamedTuple):
    """What an evaluator returns at θ (see the module docstring)."""

    logdet_v: jnp.ndarray
    logdet_xtvx: jnp.ndarray
    rss: jnp.ndarray
    beta: jnp.ndarray


def residual_dof(n: int, p: int, reml: bool) -> int:
    """d = n - p for REML, n for ML: the divisor of σ̂² = r²/d."""
    return n - p if reml else n


def profiled_deviance(profiled: Profiled, n: int, p: int, reml: bool) -> jnp.ndarray:
    """-2 × the profiled (restricted) log-likelihood: lme4's deviance / REML criterion."""
    d = residual_dof(n, p, reml)
    out = profiled.logdet_v + d * (1.0 + jnp.log(2.0 * jnp.pi * profiled.rss / d))
    if reml:
        out = out + profiled.logdet_xtvx
    return out


def known_scale_deviance(profiled: Profiled, n: int, p: int, reml: bool,
                         logdet_xtx=0.0) -> jnp.ndarray:
    """-2 × the (restricted) log-likelihood with σ² = 1 known (see the module docstring);
    `logdet_xtx` = log|X'X| enters the REML form only."""
    d = residual_dof(n, p, reml)
    out = profiled.logdet_v + profiled.rss + d * jnp.log(2.0 * jnp.pi)
    if reml:
        out = out + profiled.logdet_xtvx - logdet_xtx
    return out


def profiled_sigma2(profiled: Profiled, n: int, p: int, reml: bool) -> jnp.ndarray:
    """σ̂²(θ) = r²/d."""
    return profiled.rss / residual_dof(n, p, reml)
