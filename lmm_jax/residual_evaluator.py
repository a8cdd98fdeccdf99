"""The likelihood pieces with residual structures, by per-group whitening (never n x n).

V = σ² V₀, V₀ = ZΛΛ'Z' + R₀, R₀ block-diagonal over correlation groups,
R₀_g = S_g C_g S_g (`residual_structures.py`). With C_g = L_g L_g' (Cholesky per group,
padded slots identity) put ỹ_g = L_g⁻¹ S_g⁻¹ y_g, and likewise X̃ and each random term's
values. Then (R₀^-½ = blockdiag(L_g⁻¹ S_g⁻¹))

    V₀ = R₀^½ (Z̃ΛΛ'Z̃' + I) R₀^½',   log|V₀| = log|Z̃ΛΛ'Z̃' + I| + log|R₀|,
    log|R₀| = 2 Σ_i log s_i + 2 Σ_g Σ log diag L_g,

and X'V₀⁻¹X, r², β̂ are those of the whitened model with unit weights. Whitening keeps
each random term's level codes valid when its grouping factor is constant within every
correlation group (checked on the host). So the blocked evaluator (`blocked.py`) runs on
the whitened arrays (padded rows are zeros and add nothing), and without random terms
(gls) a Cholesky factor of [X̃ ỹ]'[X̃ ỹ] gives `Profiled` directly. The cross-products
now depend on the correlation parameters, so they are formed in every evaluation
(O(n r²)). `dense_residual_profile` builds the n x n V₀: the test oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from .arrays import ModelArrays, ModelShape
from .blocked import RandomEffects, blocked_profile, blocked_summaries, cross_products
from .conditioning import conditioned, user_profiled, user_xtvx_inverse
from .dense import dense_z_lambda, profile_from_v0
from .group_linalg import loop_cholesky, loop_solve_lower
from .likelihood import Profiled
from .residual_design import ResidualArrays
from .residual_structures import Correlation, VarianceFunction
from .small_linalg import small_cholesky, small_solve_lower

UNROLLED_MAX_SIZE = 4  # larger groups use the column loops of `group_linalg.py` (compile time)


@dataclass(frozen=True)
class ResidualShape:
    """Static description: the G-side `ModelShape` plus the residual structures.
    The parameter vector is x = (θ, correlation params, variance params)."""

    model: ModelShape
    correlation: Correlation
    variance: VarianceFunction

    @property
    def n_residual(self) -> int:
        return self.correlation.n_params + self.variance.n_params

    def split(self, x: jnp.ndarray):
        """x -> (θ, correlation params, variance params)."""
        k, c = self.model.n_theta, self.correlation.n_params
        return x[:k], x[k:k + c], x[k + c:]

    def initial(self) -> np.ndarray:
        parts = [self.correlation.initial_params(), self.variance.initial_params()]
        if self.model.n_levels:
            parts.insert(0, self.model.initial_theta())
        return np.concatenate(parts).astype(float)


def row_scales(x, arrays: ModelArrays, res: ResidualArrays, shape: ResidualShape) -> jnp.ndarray:
    """s_i = a_i / √w_i: the residual SD multipliers (n,)."""
    _, _, a_var = shape.split(x)
    multipliers = shape.variance.sd_multipliers(a_var, res.var_codes, res.var_covariate)
    return multipliers / jnp.sqrt(arrays.weights)


def correlation_factors(x, res: ResidualArrays, shape: ResidualShape) -> jnp.ndarray:
    """L_g with C_g = L_g L_g' (n_groups, size, size); padded slots have C = I."""
    _, a_cor, _ = shape.split(x)
    pairs = res.mask[:, :, None] & res.mask[:, None, :]
    eye = jnp.eye(res.mask.shape[1], dtype=res.coords.dtype)
    cor = jnp.where(pairs, shape.correlation.matrices(a_cor, res.coords), eye)
    if cor.shape[1] <= UNROLLED_MAX_SIZE:
        return small_cholesky(cor)
    return loop_cholesky(cor)


def _solve_lower(factors: jnp.ndarray, rhs: jnp.ndarray) -> jnp.ndarray:
    if factors.shape[1] <= UNROLLED_MAX_SIZE:
        return small_solve_lower(factors, rhs)
    return loop_solve_lower(factors, rhs)


def whiten(x, arrays: ModelArrays, res: ResidualArrays, shape: ResidualShape):
    """(whitened `ModelArrays` with n_groups·size rows and unit weights, log|R₀|)."""
    scales = jnp.where(res.mask, row_scales(x, arrays, res, shape)[res.index], 1.0)
    factors = correlation_factors(x, res, shape)
    columns = jnp.concatenate([arrays.y[:, None], arrays.X] + list(arrays.values), axis=1)
    grouped = jnp.where(res.mask[:, :, None], columns[res.index], 0.0) / scales[:, :, None]
    white = _solve_lower(factors, grouped).reshape(-1, columns.shape[1])
    p = arrays.X.shape[1]
    widths = np.cumsum([1, p] + [v.shape[1] for v in arrays.values])
    values = tuple(white[:, a:b] for a, b in zip(widths[1:-1], widths[2:]))
    codes = tuple(c[res.index].reshape(-1) for c in arrays.codes)
    whitened = ModelArrays(white[:, 0], white[:, 1:1 + p], jnp.ones(white.shape[0]), codes, values)
    logdet_r = 2.0 * (jnp.sum(jnp.log(scales)) + jnp.sum(jnp.log(jnp.diagonal(factors, axis1=1, axis2=2))))
    return whitened, logdet_r


def gls_profile(white: ModelArrays) -> Profiled:
    """`Profiled` of the whitened model without random effects (V₀ = I): a Cholesky factor
    of [X̃ ỹ]'[X̃ ỹ] gives log|X̃'X̃| (its X block), r² (its last diagonal entry squared) and β̂."""
    xy = jnp.concatenate([white.X, white.y[:, None]], axis=1)
    factor = jnp.linalg.cholesky(xy.T @ xy)
    p = white.X.shape[1]
    beta = solve_triangular(factor[:p, :p], factor[p, :p], lower=True, trans="T")
    return Profiled(jnp.zeros(()), 2.0 * jnp.sum(jnp.log(jnp.diag(factor)[:p])), factor[p, p] ** 2, beta)


def residual_profile(x, arrays: ModelArrays, res: ResidualArrays, shape: ResidualShape) -> Profiled:
    """`Profiled` at x = (θ, residual params) through whitening and the blocked evaluator, of
    the conditioned arrays (whitening is linear, so `conditioning.py`'s identities hold)."""
    data, rep = conditioned(arrays)
    white, logdet_r = whiten(x, data, res, shape)
    if not shape.model.n_levels:
        profiled = gls_profile(white)
    else:
        theta, _, _ = shape.split(x)
        profiled = blocked_profile(theta, cross_products(white, shape.model), shape.model)
    return user_profiled(profiled._replace(logdet_v=profiled.logdet_v + logdet_r), rep)


def dense_r0(x, arrays: ModelArrays, res: ResidualArrays, shape: ResidualShape) -> jnp.ndarray:
    """R₀ as an n x n matrix (the oracle: scatter S_g C_g S_g into the rows of each group)."""
    _, a_cor, _ = shape.split(x)
    s = row_scales(x, arrays, res, shape)
    cor = shape.correlation.matrices(a_cor, res.coords)
    pairs = res.mask[:, :, None] & res.mask[:, None, :]
    block = jnp.where(pairs, cor * s[res.index][:, :, None] * s[res.index][:, None, :], 0.0)
    n = arrays.y.shape[0]
    rows = jnp.broadcast_to(res.index[:, :, None], block.shape)
    cols = jnp.broadcast_to(res.index[:, None, :], block.shape)
    return jnp.zeros((n, n)).at[rows, cols].add(block)


def dense_residual_profile(x, arrays: ModelArrays, res: ResidualArrays, shape: ResidualShape) -> Profiled:
    """`Profiled` from the dense V₀ = ZΛΛ'Z' + R₀ (O(n³); tests only)."""
    v0 = dense_r0(x, arrays, res, shape)
    if shape.model.n_levels:
        theta, _, _ = shape.split(x)
        zl = dense_z_lambda(theta, arrays, shape.model)
        v0 = v0 + zl @ zl.T
    return profile_from_v0(v0, arrays)


def residual_post_fit(x, arrays: ModelArrays, res: ResidualArrays, shape: ResidualShape, beta, sigma2):
    """(X'V₀⁻¹X)⁻¹, the random effects (`blocked.RandomEffects`, empty without random terms)
    and the fitted values Xβ̂ + Zb̂ on the original rows, at the estimates (x, β̂, σ̂²)."""
    data, rep = conditioned(arrays)
    white, _ = whiten(x, data, res, shape)
    fitted = arrays.X @ beta
    if not shape.model.n_levels:
        return user_xtvx_inverse(jnp.linalg.inv(white.X.T @ white.X), rep), RandomEffects([], []), fitted
    theta, _, _ = shape.split(x)
    xtvx_inv, effects = blocked_summaries(theta, cross_products(white, shape.model), shape.model, sigma2)
    xtvx_inv = user_xtvx_inverse(xtvx_inv, rep)
    for codes, values, modes in zip(arrays.codes, arrays.values, effects.modes):
        fitted = fitted + (values * modes[codes]).sum(axis=1)
    return xtvx_inv, effects, fitted
