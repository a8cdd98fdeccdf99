"""The model on the variance/covariance scale φ, where V is linear in the parameters.

    φ = (vech-entries of Σ_1, ..., vech-entries of Σ_K, σ²),   V(φ) = Σ_k Z_k (I ⊗ Σ_k) Z_k' + σ² W⁻¹

Per term the entries follow lme4's `as.data.frame(VarCorr(m))` order (`FitResult.varcorr()`):
the variances Σ_k[i, i], then the covariances Σ_k[i, j] (i > j), lower triangle column by
column; σ² last. With a known residual scale (`ModelShape.known_scale`) σ² = 1 is not a
parameter and φ has no last entry.

The engine's parameters (θ, σ²) follow from φ by Λ_k = chol(Σ_k / σ²), so the (restricted)
log-likelihood on this scale is the one of `likelihood.py`, not profiled over σ²:

    -2ℓ_R(φ) = log|V₀| + log|X'V₀⁻¹X| + (n-p) log(2πσ²) + r²/σ²     (REML)
    -2ℓ(φ)   = log|V₀| + n log(2πσ²) + r²/σ²                       (ML, β̂(φ) profiled)

with V = σ²V₀ (profiling β out of the ML likelihood leaves the φ-block of the inverse
observed information unchanged: a Schur complement). Because V is linear in φ
(∂²V/∂φ_i∂φ_j = 0), the expected information has an exact autodiff form:

    I_ij = ½ tr(P V_i P V_j) = -½ ∂²/∂φ_i∂φ_j [log|V| + log|X'V⁻¹X|]      (REML)
    I_ij = ½ tr(V⁻¹V_i V⁻¹V_j) = -½ ∂²/∂φ_i∂φ_j log|V|                  (ML)

since ∂_j(log|V| + log|X'V⁻¹X|) = tr(P V_j) and ∂_i P = -P V_i P; here log|V| = log|V₀| + n
log σ² and log|X'V⁻¹X| = log|X'V₀⁻¹X| - p log σ², all from the blocked evaluator (no n x n
matrix). Valid where every Σ_k is positive definite (Λ_k = chol(Σ_k/σ²) is differentiable
there); a term with a zero variance (a singular fit) lies on the boundary and its entries
have no standard errors.

Only terms with the unstructured `CholeskyFactor` structure have this scale.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .arrays import ModelArrays, ModelShape, relative_factors
from .blocked import blocked_profile, blocked_xtvx_inverse
from .conditioning import conditioned_cross_products, user_profiled, user_xtvx_inverse
from .likelihood import Profiled
from .structures import CholeskyFactor


def _check_unstructured(shape: ModelShape) -> None:
    for s in shape.structures:
        if type(s) is not CholeskyFactor:
            raise NotImplementedError(
                f"the variance/covariance scale needs unstructured terms; a {type(s).__name__} "
                "term has its own parameters")


def _vech_indices(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a term's entries in varcorr order: the diagonal, then i > j by column."""
    rows, cols = list(range(dim)), list(range(dim))
    for j in range(dim):
        for i in range(j + 1, dim):
            rows.append(i)
            cols.append(j)
    return np.array(rows), np.array(cols)


def n_variance_parameters(shape: ModelShape) -> int:
    """dim φ: the number of variances and covariances (σ² included unless the scale is known)."""
    return sum(d * (d + 1) // 2 for d in shape.dims) + (0 if shape.known_scale else 1)


def variance_parameters(theta: jnp.ndarray, sigma2, shape: ModelShape) -> jnp.ndarray:
    """(θ, σ²) -> φ: Σ_k = σ² Λ_kΛ_k' entries in varcorr order, then σ²."""
    parts = []
    for lam in relative_factors(theta, shape):
        rows, cols = _vech_indices(lam.shape[0])
        parts.append((sigma2 * lam @ lam.T)[rows, cols])
    if not shape.known_scale:
        parts.append(jnp.reshape(sigma2, (1,)))
    return jnp.concatenate(parts)


def engine_parameters(phi: jnp.ndarray, shape: ModelShape) -> tuple[jnp.ndarray, jnp.ndarray]:
    """φ -> (θ, σ²) with Λ_k = chol(Σ_k / σ²) (column-wise lower triangle, lme4's θ)."""
    _check_unstructured(shape)
    sigma2 = jnp.asarray(1.0, phi.dtype) if shape.known_scale else phi[-1]
    thetas, start = [], 0
    for dim in shape.dims:
        rows, cols = _vech_indices(dim)
        size = rows.size
        entries = phi[start:start + size]
        start += size
        cov = jnp.zeros((dim, dim), phi.dtype).at[rows, cols].set(entries).at[cols, rows].set(entries)
        lam = jnp.linalg.cholesky(cov / sigma2) if dim > 1 else jnp.sqrt(cov / sigma2)
        t_rows, t_cols = CholeskyFactor(dim)._indices()
        thetas.append(lam[t_rows, t_cols])
    return jnp.concatenate(thetas), sigma2


def deviance_on_variance_scale(phi: jnp.ndarray, arrays: ModelArrays, shape: ModelShape):
    """-2ℓ_R(φ) (REML) or -2ℓ(φ) (ML, β profiled), σ² not profiled (module docstring)."""
    return deviance_at(*engine_parameters(phi, shape), arrays, shape)


def log_determinants(phi: jnp.ndarray, arrays: ModelArrays, shape: ModelShape):
    """log|V| + log|X'V⁻¹X| (REML) or log|V| (ML) at φ: -½ its Hessian is the expected information."""
    return log_determinants_at(*engine_parameters(phi, shape), arrays, shape)


def deviance_at(theta, sigma2, arrays: ModelArrays, shape: ModelShape):
    """`deviance_on_variance_scale` at the engine's (θ, σ²) (information.py holds a boundary
    term's Σ_k fixed through θ, where φ -> θ is not differentiable)."""
    profiled = profile_at(theta, arrays, shape)
    n, p = arrays.X.shape
    d = n - p if shape.reml else n
    out = profiled.logdet_v + d * jnp.log(2.0 * jnp.pi * sigma2) + profiled.rss / sigma2
    if shape.reml:
        out = out + profiled.logdet_xtvx
    return out


def profile_at(theta, arrays: ModelArrays, shape: ModelShape) -> Profiled:
    """The blocked evaluator's `Profiled` at θ, of the conditioned arrays mapped back to the
    user's X and y (`conditioning.py`: a response or covariate of large mean keeps its digits)."""
    cp, rep = conditioned_cross_products(arrays, shape)
    return user_profiled(blocked_profile(theta, cp, shape), rep)


def log_determinants_at(theta, sigma2, arrays: ModelArrays, shape: ModelShape):
    """`log_determinants` at the engine's (θ, σ²)."""
    profiled = profile_at(theta, arrays, shape)
    n, p = arrays.X.shape
    out = profiled.logdet_v + n * jnp.log(sigma2)
    if shape.reml:
        out = out + profiled.logdet_xtvx - p * jnp.log(sigma2)
    return out


def beta_covariance(phi: jnp.ndarray, arrays: ModelArrays, shape: ModelShape) -> jnp.ndarray:
    """Var(β̂)(φ) = (X'V⁻¹X)⁻¹ = σ² (X'V₀⁻¹X)⁻¹."""
    theta, sigma2 = engine_parameters(phi, shape)
    cp, rep = conditioned_cross_products(arrays, shape)
    return sigma2 * user_xtvx_inverse(blocked_xtvx_inverse(theta, cp, shape), rep)
