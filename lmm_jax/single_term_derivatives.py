"""Closed-form gradient and Hessian of the criterion for a model with one random term.

With one term (q effects per level, m levels, relative covariance G = ΛΛ') the blocked
evaluator (`blocked.py`) reads θ only through, per level l (A_l = Z_l'WZ_l, C_l = Z_l'W[X y]),

    log|M_l| = log|I + Λ'A_lΛ| = log|I + A_lG|      and     S = [X y]'W[X y] - Σ_l C_l'Q_lC_l,
    Q_l = ΛM_l⁻¹Λ' = G(I + A_lG)⁻¹,

and the criterion is a small function F(Σ_l log|M_l|, S) of those ((p + 1) x (p + 1) Cholesky of S).
With P_l = A_l(I + GA_l)⁻¹ = A_l - E_l'E_l and U_l = (I + A_lG)⁻¹C_l = C_l - E_l'B_l,
where E_l = L_l⁻¹Λ'A_l and B_l = L_l⁻¹Λ'C_l from M_l = L_lL_l' (no inverse of G, so
singular G is fine), and D_i = ∂G/∂θ_i, G_ij = ∂²G/∂θ_i∂θ_j (symmetric):

    ∂_i Σ log|M_l|  =  Σ_l tr(P_l D_i)
    ∂_ij Σ log|M_l| =  Σ_l tr(P_l G_ij) - tr(P_l D_i P_l D_j)
    ∂_i S           = -Σ_l U_l' D_i U_l
    ∂_ij S          =  Σ_l U_l'(D_j P_l D_i + D_i P_l D_j)U_l - U_l' G_ij U_l

(from dQ = T dG T', T = (I + GA)⁻¹, and dT = -T dG A T). From S's derivatives follow those of
log|X'V₀⁻¹X| = log|S_XX| and of r² (`_schur_derivatives`), and the criterion, a function of
the three scalars (log|V₀|, log|X'V₀⁻¹X|, r²), is differentiated by autodiff over those three
only (the chain rule: ∇ = J'c, ∇² = J'C J + Σ_a c_a ∇²z_a). On sleepstudy-shaped fits
(vmapped by 16) this costs ~12 µs per evaluation against ~20 µs for forward-over-reverse
autodiff through the per-level factorisations (tests/test_single_term_derivatives.py:
equal to autodiff).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from .arrays import ModelArrays, ModelShape
from .blocked import CrossProducts, blocked_schur, cross_products, profile_from_schur
from .likelihood import Profiled
from .small_linalg import small_cholesky, small_solve_lower

MAX_TERM_DIM = 4  # larger first terms keep autodiff (the per-level tensors grow as q⁴)


def applies(arrays: ModelArrays, shape: ModelShape) -> bool:
    """One random term of at most `MAX_TERM_DIM` effects per level (static shapes only)."""
    return len(shape.n_levels) == 1 and shape.dims[0] <= MAX_TERM_DIM and arrays.schur_pairs is None


def _covariance_derivatives(theta: jnp.ndarray, shape: ModelShape):
    """(Λ, D, G2) for G = ΛΛ': D (k, q, q) with D_i = ∂G/∂θ_i, G2 (k, k, q, q) with ∂²G/∂θ_i∂θ_j."""
    structure = shape.structures[0]

    def covariance(t):
        lam = structure.relative_factor(t)
        return lam @ lam.T

    d = jnp.moveaxis(jax.jacfwd(covariance)(theta), -1, 0)
    g2 = jnp.moveaxis(jax.jacfwd(jax.jacfwd(covariance))(theta), (-2, -1), (0, 1))
    return structure.relative_factor(theta), d, g2


def _level_products(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """X_l'Y_l for every level l, x (m, q, a) and y (m, q, b): summed over the tiny q in
    Python, so XLA fuses it into elementwise code (a batched `dot_general` over m levels of
    q x q blocks runs as a slow loop of tiny matrix kernels: ~15% of the evaluation here)."""
    return sum(x[:, j, :, None] * y[:, j, None, :] for j in range(x.shape[1]))


def _per_level_sums(theta: jnp.ndarray, cp: CrossProducts, shape: ModelShape):
    """(`Profiled`, L', L'', S, S', S''): the blocked evaluator's profiled quantities, the
    θ-derivatives of L = Σ log|M_l|, and S with its θ-derivatives (module docstring)."""
    lam, d, g2 = _covariance_derivatives(theta, shape)
    a, c = cp.z1tz1, cp.z1tr
    q = lam.shape[0]
    chol, b, schur = blocked_schur(theta, cp, shape)                   # L_l, B_l = L_l⁻¹Λ'C_l, S
    e = small_solve_lower(chol, jnp.einsum("ji,ljk->lik", lam, a))      # L⁻¹Λ'A
    p_mat = a - _level_products(e, e)
    u = c - _level_products(e, b)
    p_sum = jnp.sum(p_mat, axis=0)
    pd = jnp.einsum("lab,ibc->liac", p_mat, d)                         # P_l D_i
    logdet_1 = jnp.einsum("ab,iba->i", p_sum, d)
    logdet_2 = jnp.einsum("ab,ijba->ij", p_sum, g2) - jnp.einsum("liab,ljba->ij", pd, pd)
    uu = jnp.einsum("lar,lbs->abrs", u, u)                             # Σ_l U_l ⊗ U_l
    w = jnp.einsum("iab,lbr->liar", d, u)                              # D_i U_l
    pw = sum(p_mat[:, None, :, j, None] * w[:, :, j, None, :] for j in range(q))  # P_l D_i U_l
    cross = jnp.einsum("ljar,lias->ijrs", w, pw)                       # Σ_l U'D_j P D_i U
    schur_1 = -jnp.einsum("iab,abrs->irs", d, uu)
    schur_2 = cross + jnp.swapaxes(cross, 0, 1) - jnp.einsum("ijab,abrs->ijrs", g2, uu)
    return profile_from_schur(chol, schur, cp, shape), logdet_1, logdet_2, schur, schur_1, schur_2


def _schur_derivatives(schur, schur_1, schur_2, beta):
    """θ-derivatives of log|S_XX| and r² = w'Sw, w = [-β̂; 1], from those of S:

        ∂_i log|S_XX|  = tr(S_XX⁻¹ S_i)_XX,
        ∂_ij log|S_XX| = tr(S_XX⁻¹ S_ij)_XX - tr(S_XX⁻¹ S_i S_XX⁻¹ S_j)_XX
        ∂_i r²         = w'S_i w,
        ∂_ij r²        = w'S_ij w - 2 (S_i w)_X' S_XX⁻¹ (S_j w)_X

    (r² is the minimum over b of [-b; 1]'S[-b; 1], so its first derivative is the envelope's)."""
    p = schur.shape[0] - 1
    l_inv = small_solve_lower(small_cholesky(schur[:p, :p]), jnp.eye(p, dtype=schur.dtype))
    inv_xx = l_inv.T @ l_inv
    inv_s1 = jnp.einsum("ab,ibc->iac", inv_xx, schur_1[:, :p, :p])
    logdet_1 = jnp.trace(inv_s1, axis1=1, axis2=2)
    logdet_2 = jnp.einsum("ab,ijba->ij", inv_xx, schur_2[:, :, :p, :p]) - jnp.einsum("iab,jba->ij", inv_s1, inv_s1)
    w = jnp.concatenate([-beta, jnp.ones(1, schur.dtype)])
    s1w = schur_1 @ w
    rss_1 = s1w @ w
    rss_2 = jnp.einsum("ijrs,r,s->ij", schur_2, w, w) - 2.0 * s1w[:, :p] @ inv_xx @ s1w[:, :p].T
    return logdet_1, logdet_2, rss_1, rss_2


def value_grad_hess_function(arrays: ModelArrays, shape: ModelShape, criterion: Callable) -> Callable:
    """θ -> (criterion, gradient, Hessian) in closed form per level; `criterion(Profiled)`
    maps the profiled quantities to -2ℓ or -2ℓ_R (`model.criterion`), and only its
    dependence on the three scalars (log|V₀|, log|X'V₀⁻¹X|, r²) is differentiated by
    autodiff."""
    cp = cross_products(arrays, shape)

    def evaluate(theta):
        profiled, logdet_1, logdet_2, schur, schur_1, schur_2 = _per_level_sums(theta, cp, shape)
        xtvx_1, xtvx_2, rss_1, rss_2 = _schur_derivatives(schur, schur_1, schur_2, profiled.beta)

        def of_scalars(z):
            return criterion(Profiled(z[0], z[1], z[2], profiled.beta))

        z = jnp.stack([profiled.logdet_v, profiled.logdet_xtvx, profiled.rss])
        first, second = jnp.stack([logdet_1, xtvx_1, rss_1]), jnp.stack([logdet_2, xtvx_2, rss_2])
        value, slope = jax.value_and_grad(of_scalars)(z)
        curvature = jax.hessian(of_scalars)(z)
        hess = first.T @ curvature @ first + jnp.einsum("a,aij->ij", slope, second)
        return value, first.T @ slope, 0.5 * (hess + hess.T)

    return evaluate
