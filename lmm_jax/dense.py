"""The dense evaluator: the textbook formulas with the n x n matrix V₀, the test oracle.

    V₀ = Z Λ Λ' Z' + W⁻¹,   β̂ = (X'V₀⁻¹X)⁻¹ X'V₀⁻¹ y,   r² = (y - Xβ̂)' V₀⁻¹ (y - Xβ̂)

with log-determinants from Cholesky factors. O(n³): for checking the fast evaluator
and small models only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from .arrays import ModelArrays, ModelShape, relative_factors
from .likelihood import Profiled


def dense_z_lambda(theta: jnp.ndarray, arrays: ModelArrays, shape: ModelShape) -> jnp.ndarray:
    """Z Λ (n x q), columns ordered term by term, level-major within a term."""
    blocks = []
    for codes, values, m, lam in zip(arrays.codes, arrays.values, shape.n_levels,
                                     relative_factors(theta, shape)):
        one_hot = jax.nn.one_hot(codes, m, dtype=values.dtype)
        blocks.append((one_hot[:, :, None] * (values @ lam)[:, None, :]).reshape(codes.shape[0], -1))
    return jnp.concatenate(blocks, axis=1)


def residual_variances(weights: jnp.ndarray) -> jnp.ndarray:
    """diag(W⁻¹) = 1/wᵢ; a padded row (wᵢ = 0, all-zero X, Z and y) gets 1, so it adds
    an identity block to V₀ and nothing to r² or log|V₀|."""
    return 1.0 / jnp.where(weights > 0, weights, 1.0)


def dense_v0(theta: jnp.ndarray, arrays: ModelArrays, shape: ModelShape) -> jnp.ndarray:
    """V₀ = ZΛΛ'Z' + W⁻¹."""
    zl = dense_z_lambda(theta, arrays, shape)
    return zl @ zl.T + jnp.diag(residual_variances(arrays.weights))


def dense_profile(theta: jnp.ndarray, arrays: ModelArrays, shape: ModelShape) -> Profiled:
    """`Profiled` at θ straight from V₀."""
    return profile_from_v0(dense_v0(theta, arrays, shape), arrays)


def profile_from_v0(v0: jnp.ndarray, arrays: ModelArrays) -> Profiled:
    """`Profiled` from a dense V₀ (n x n) and the arrays' y and X."""
    chol_v = jnp.linalg.cholesky(v0)
    vinv_x = cho_solve((chol_v, True), arrays.X)
    vinv_y = cho_solve((chol_v, True), arrays.y)
    xtvx = arrays.X.T @ vinv_x
    chol_x = jnp.linalg.cholesky(xtvx)
    beta = cho_solve((chol_x, True), arrays.X.T @ vinv_y)
    resid = arrays.y - arrays.X @ beta
    rss = resid @ cho_solve((chol_v, True), resid)
    return Profiled(2.0 * jnp.sum(jnp.log(jnp.diag(chol_v))),
                    2.0 * jnp.sum(jnp.log(jnp.diag(chol_x))), rss, beta)


def dense_xtvx_inverse(theta: jnp.ndarray, arrays: ModelArrays, shape: ModelShape) -> jnp.ndarray:
    """(X'V₀⁻¹X)⁻¹, so that Var(β̂) = σ² (X'V₀⁻¹X)⁻¹."""
    chol_v = jnp.linalg.cholesky(dense_v0(theta, arrays, shape))
    return jnp.linalg.inv(arrays.X.T @ cho_solve((chol_v, True), arrays.X))


def dense_random_effects(theta: jnp.ndarray, arrays: ModelArrays, shape: ModelShape, sigma2):
    """Conditional modes b̂ = G₀Z'V₀⁻¹(y - Xβ̂) and their conditional covariance given β̂,
    σ² (G₀ - G₀Z'V₀⁻¹ZG₀) with G₀ = ΛΛ' (q x q, all terms)."""
    zl = dense_z_lambda(theta, arrays, shape)
    big_lambda = jax.scipy.linalg.block_diag(
        *[jnp.kron(jnp.eye(m), lam) for m, lam in zip(shape.n_levels, relative_factors(theta, shape))])
    chol_v = jnp.linalg.cholesky(zl @ zl.T + jnp.diag(residual_variances(arrays.weights)))
    beta = dense_profile(theta, arrays, shape).beta
    g0_zt = big_lambda @ zl.T
    modes = g0_zt @ cho_solve((chol_v, True), arrays.y - arrays.X @ beta)
    g0 = big_lambda @ big_lambda.T
    cond_cov = sigma2 * (g0 - g0_zt @ cho_solve((chol_v, True), g0_zt.T))
    return modes, cond_cov
