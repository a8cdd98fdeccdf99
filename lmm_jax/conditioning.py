"""Fit a well-conditioned equivalent of the fixed part: y's least-squares residual on an
orthonormalised X, and report on the user's scale.

The profiled likelihood sees y only through its residual from X's column space, and X only
through that space, except REML's log|X'V₀⁻¹X|: for any c and invertible A

    ℓ(θ; X, y + Xc) = ℓ(θ; X, y),    β̂(X, y + Xc) = β̂(X, y) + c,
    -2ℓ_R(θ; XA, y) = -2ℓ_R(θ; X, y) + log|A'A|,    β̂(XA, y) = A⁻¹β̂(X, y).

An evaluator that reads r² from the last diagonal of the Cholesky factor of [Z X y]'W[Z X y]
loses (‖y‖/‖r‖)²·eps of it (a response of mean 1e8, or one X fits almost exactly), and one
with nearly collinear columns of X (a covariate of large mean next to the intercept) loses
log|X'V₀⁻¹X| and β̂. So with the weighted thin QR √W X = QR the evaluators get

    X_c = X R⁻¹ (W-orthonormal columns),  b₀ = R⁻¹Q'√W y,  y_c = y - X b₀ (W-orthogonal to X),

and their results map back exactly: β̂ = b₀ + R⁻¹β̂_c, log|X'V₀⁻¹X| = log|X_c'V₀⁻¹X_c| +
2 Σ log|R_ii|, (X'V₀⁻¹X)⁻¹ = R⁻¹(X_c'V₀⁻¹X_c)⁻¹R⁻ᵀ; r², log|V₀| and the random effects'
modes are unchanged. R and b₀ carry no derivative (`jax.lax.stop_gradient`): the identities
hold for every fixed A and c, so derivatives w.r.t. y, X and the weights stay exact.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from .arrays import ModelArrays, ModelShape
from .blocked import CrossProducts, cross_products
from .likelihood import Profiled


class Reparametrisation(NamedTuple):
    """b₀ (p,) and R (p, p) upper triangular with a positive diagonal: the fit's X_c = X R⁻¹
    and y_c = y - X b₀."""

    shift: jnp.ndarray
    r: jnp.ndarray


def conditioned(arrays: ModelArrays) -> tuple[ModelArrays, Reparametrisation]:
    """(arrays with X_c and y_c, the `Reparametrisation` mapping back): module docstring.
    A model without fixed effects is returned as it is (R the empty matrix)."""
    x = arrays.X
    p = x.shape[1]
    if p == 0:
        return arrays, Reparametrisation(jnp.zeros(0, x.dtype), jnp.zeros((0, 0), x.dtype))
    root_w = jnp.sqrt(jax.lax.stop_gradient(arrays.weights))[:, None]
    fixed_x = jax.lax.stop_gradient(x)
    q, r = jnp.linalg.qr(root_w * fixed_x)
    signs = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(x.dtype)
    q, r = q * signs, r * signs[:, None]
    shift = solve_triangular(r, q.T @ (root_w[:, 0] * jax.lax.stop_gradient(arrays.y)), lower=False)
    x_c = solve_triangular(r, x.T, lower=False, trans="T").T
    return dataclasses.replace(arrays, X=x_c, y=arrays.y - x @ shift), Reparametrisation(shift, r)


def conditioned_cross_products(arrays: ModelArrays, shape: ModelShape
                               ) -> tuple[CrossProducts, Reparametrisation]:
    """The blocked evaluator's cross-products of the conditioned arrays, and the map back:
    every consumer of [Z X y]'W[Z X y] (fits, information, df, profiles) starts here."""
    data, rep = conditioned(arrays)
    return cross_products(data, shape), rep


def user_profiled(profiled: Profiled, rep: Reparametrisation) -> Profiled:
    """An evaluator's `Profiled` on the conditioned arrays, mapped to the user's X and y."""
    if rep.r.shape[0] == 0:
        return profiled
    return profiled._replace(logdet_xtvx=profiled.logdet_xtvx + log_abs_det_squared(rep),
                             beta=user_beta(profiled.beta, rep))


def user_beta(beta_c: jnp.ndarray, rep: Reparametrisation) -> jnp.ndarray:
    """β = b₀ + R⁻¹β_c."""
    return rep.shift + solve_triangular(rep.r, beta_c, lower=False)


def conditioned_beta(beta: jnp.ndarray, rep: Reparametrisation) -> jnp.ndarray:
    """β_c = R(β - b₀), the inverse of `user_beta`."""
    return rep.r @ (beta - rep.shift)


def user_xtvx_factor(l_xx_c: jnp.ndarray, rep: Reparametrisation) -> jnp.ndarray:
    """L = R'L_c, lower triangular with a positive diagonal: X'V₀⁻¹X = R'(X_c'V₀⁻¹X_c)R = LL'
    when X_c'V₀⁻¹X_c = L_cL_c'."""
    return rep.r.T @ l_xx_c


def log_abs_det_squared(rep: Reparametrisation) -> jnp.ndarray:
    """log|R'R| = 2 Σ log|R_ii|: REML's criterion on X less its value on X_c."""
    return 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(rep.r))))


def user_xtvx_inverse(xtvx_inv_c: jnp.ndarray, rep: Reparametrisation) -> jnp.ndarray:
    """(X'V₀⁻¹X)⁻¹ = R⁻¹(X_c'V₀⁻¹X_c)⁻¹R⁻ᵀ; as for any covariance of β_c = Rβ + const (or a
    stack (..., p, p) of them, its derivatives): Var(β) = R⁻¹ Var(β_c) R⁻ᵀ."""
    if rep.r.shape[0] == 0:
        return xtvx_inv_c
    r_inv = solve_triangular(rep.r, jnp.eye(rep.r.shape[0], dtype=rep.r.dtype), lower=False)
    return jnp.einsum("ab,...bc,dc->...ad", r_inv, xtvx_inv_c, r_inv)


def fitted_exactly(arrays: ModelArrays, tolerance: float) -> jnp.ndarray:
    """Whether X fits y exactly: ‖√W(y - Xb₀)‖ ≤ tolerance ‖√W y‖ (`Design.exactly_fitted`'s
    rule, traceable: `Model.fit_params` of a constant response)."""
    root_w = jnp.sqrt(arrays.weights)
    residual = conditioned(arrays)[0].y
    return jnp.linalg.norm(root_w * residual) <= tolerance * jnp.linalg.norm(root_w * arrays.y)
