"""The fast evaluator: lme4/MixedModels.jl penalised least squares with a blocked Cholesky.

With u the spherical random effects (α = Λu, u ~ N(0, σ²I)) the profiled quantities come
from the Cholesky factor L of the symmetric matrix, in blocks
(1: the first term, 2: the other terms, then X, then y; W the prior weights):

    [ Λ₁'Z₁'WZ₁Λ₁ + I   Λ₁'Z₁'W[Z₂Λ₂ X y] ]   =  L L'
    [       ...          Λᵣ'R'WR Λᵣ + D    ]      R = [Z₂ X y], Λᵣ = diag(Λ₂, I, 1), D = diag(I, 0, 0)

The first term (lme4's with the most levels) has a block-diagonal Λ₁'Z₁'WZ₁Λ₁ + I (one
p₁ x p₁ block per level), factored level by level; the rest is a dense Schur complement
S = Λᵣ'R'WRΛᵣ + D - B'B with B = L₁₁⁻¹Λ₁'Z₁'WRΛᵣ. From L:

    log|V₀| = 2 Σ log diag(L) over the random-effect blocks - Σ log wᵢ
    log|X'V₀⁻¹X| = 2 Σ log diag(L) over the X block
    r² = (last diagonal entry of L)²,   β̂ = L_XX'⁻¹ c_X (c the last row of L)

The cross-products Z'WZ, Z'WX, ... are formed once per fit from the per-row level codes
(no dense Z), so the cost per θ is O(m₁p₁³ + m₁p₁r² + r³) with r = q₂ + p + 1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from .arrays import ModelArrays, ModelShape, relative_factors
from .likelihood import Profiled
from .small_linalg import UNROLL_LIMIT, small_cholesky, small_solve_lower, small_solve_upper_transposed
from .schur_cholesky import schur_factor_parts
from .sparse_schur import (SchurPairs, entry_values, level_entry_sums, level_pair_sums, pair_products,
                           sparse_z_rest_block, sparse_zz_block)


class CrossProducts(NamedTuple):
    """Z₁'WZ₁ per level (m₁, p₁, p₁), Z₁'WR per level (m₁, p₁, r), R'WR (r, r), Σ log wᵢ,
    and the sparse pairs of B'B's Z block with their products, C_Z's non-zero entries and
    Z₁'W[X y] per level (`sparse_schur.py`; None: form it densely). The criterion of a
    sparse model and its summaries read Z₁'WR only through the last two, so under jit the
    dense Z₁'WR is not formed for it."""

    z1tz1: jnp.ndarray
    z1tr: jnp.ndarray
    rtr: jnp.ndarray
    sum_log_weights: jnp.ndarray
    pairs: SchurPairs | None = None
    pair_products: jnp.ndarray | None = None
    z_entries: jnp.ndarray | None = None
    z1txy: jnp.ndarray | None = None


class BlockedFactor(NamedTuple):
    """L₁₁ per level (m₁, p₁, p₁), B = L₂₁' per level (m₁, p₁, r), and L₂₂ (r, r)."""

    l11: jnp.ndarray
    b: jnp.ndarray
    l22: jnp.ndarray


def rest_size(shape: ModelShape) -> int:
    """q₂: the number of random effects outside the first term."""
    return sum(m * d for m, d in zip(shape.n_levels[1:], shape.dims[1:]))


def factors_unrolled(shape: ModelShape, n_fixed: int) -> bool:
    """Whether every dense factor of a fit is unrolled (`small_linalg.UNROLL_LIMIT`): the
    first term's blocks (p₁ x p₁) and the Schur complement ((q₂ + p + 1) square). A larger
    one is a LAPACK call, and a batched one under vmap (`batch_runner.run_in_chunks`)."""
    return max(shape.dims[0], rest_size(shape) + n_fixed + 1) <= UNROLL_LIMIT


def cross_products(arrays: ModelArrays, shape: ModelShape) -> CrossProducts:
    """All weighted cross-products the blocked evaluator needs; formed once per fit."""
    w = arrays.weights
    codes1, values1, m1 = arrays.codes[0], arrays.values[0], shape.n_levels[0]
    wv1 = w[:, None] * values1
    xy = jnp.concatenate([arrays.X, arrays.y[:, None]], axis=1)
    z1tz1 = (wv1.T @ values1)[None] if m1 == 1 else \
        jax.ops.segment_sum(wv1[:, :, None] * values1[:, None, :], codes1, m1)
    rest = list(zip(arrays.codes[1:], arrays.values[1:], shape.n_levels[1:]))
    z1tr = [_pair_block(codes1, wv1, m1, codes, values, m).reshape(m1, values1.shape[1], -1)
            for codes, values, m in rest]
    z1txy = jax.ops.segment_sum(wv1[:, :, None] * xy[:, None, :], codes1, m1)
    z1tr.append(z1txy)
    rows = []
    for codes_a, values_a, m_a in rest:
        wva = w[:, None] * values_a
        row = [_pair_block(codes_a, wva, m_a, codes_b, values_b, m_b) for codes_b, values_b, m_b in rest]
        row.append(jax.ops.segment_sum(wva[:, :, None] * xy[:, None, :], codes_a, m_a)
                   .reshape(m_a * values_a.shape[1], -1))
        rows.append(jnp.concatenate(row, axis=1))
    xy_block = jnp.concatenate([blk.T for blk in (r[:, -xy.shape[1]:] for r in rows)]
                               + [(w[:, None] * xy).T @ xy], axis=1)
    rtr = jnp.concatenate(rows + [xy_block], axis=0)
    log_w = jnp.log(jnp.where(w > 0, w, 1.0))  # rows of weight 0 (padding) are not observations
    z1tr = jnp.concatenate(z1tr, axis=2)
    pairs = arrays.schur_pairs
    if pairs is None:
        return CrossProducts(z1tz1, z1tr, rtr, jnp.sum(log_w))
    entries = entry_values(wv1, jnp.concatenate(arrays.values[1:], axis=1), pairs)
    return CrossProducts(z1tz1, z1tr, rtr, jnp.sum(log_w), pairs, pair_products(entries, pairs), entries, z1txy)


def _pair_block(codes_a, wvalues_a, m_a, codes_b, values_b, m_b):
    """Z_a'WZ_b as a dense (m_a p_a) x (m_b p_b) matrix, by scatter-adding row contributions."""
    p_a, p_b = wvalues_a.shape[1], values_b.shape[1]
    if m_a == 1 and m_b == 1:  # one-level terms (a known relationship matrix): a plain product
        return wvalues_a.T @ values_b
    rows = codes_a[:, None, None] * p_a + jnp.arange(p_a)[None, :, None]
    cols = codes_b[:, None, None] * p_b + jnp.arange(p_b)[None, None, :]
    contributions = wvalues_a[:, :, None] * values_b[:, None, :]
    return jnp.zeros((m_a * p_a, m_b * p_b), values_b.dtype).at[rows, cols].add(contributions)


def _lambda_right(matrix: jnp.ndarray, lams: list, n_levels: tuple[int, ...]) -> jnp.ndarray:
    """matrix @ Λᵣ where Λᵣ = diag(I_{m₂}⊗Λ₂, ..., I) acts on the leading columns."""
    if not lams:
        return matrix
    if all(lam.shape[0] == 1 for lam in lams):  # scalar terms: Λᵣ is diagonal, scale the columns
        scale = [jnp.broadcast_to(lam[0, 0], (m,)) for lam, m in zip(lams, n_levels)]
        rest = matrix.shape[-1] - sum(n_levels)
        return matrix * jnp.concatenate(scale + [jnp.ones(rest, matrix.dtype)])
    parts, start = [], 0
    lead = matrix.shape[:-1]
    for lam, m in zip(lams, n_levels):
        p = lam.shape[0]
        block = matrix[..., start:start + m * p].reshape(lead + (m, p)) @ lam
        parts.append(block.reshape(lead + (m * p,)))
        start += m * p
    parts.append(matrix[..., start:])
    return jnp.concatenate(parts, axis=-1)


def blocked_factor(theta: jnp.ndarray, cp: CrossProducts, shape: ModelShape) -> BlockedFactor:
    """The blocked Cholesky factor L at θ."""
    l11, b, schur = blocked_schur(theta, cp, shape)
    return BlockedFactor(l11, b, small_cholesky(schur))


def blocked_schur(theta: jnp.ndarray, cp: CrossProducts, shape: ModelShape):
    """(L₁₁, B, S) at θ: the first term's factor, B = L₂₁', and the Schur complement S that
    L₂₂ factors."""
    lams = relative_factors(theta, shape)
    lam1, lams_rest, levels_rest = lams[0], lams[1:], shape.n_levels[1:]
    p1 = lam1.shape[0]
    a11 = jnp.einsum("ji,ljk,kh->lih", lam1, cp.z1tz1, lam1) + jnp.eye(p1)
    l11 = small_cholesky(a11)
    z1tr = _lambda_right(jnp.einsum("ji,ljr->lir", lam1, cp.z1tr), lams_rest, levels_rest)
    b = small_solve_lower(l11, z1tr)
    q2, r = rest_size(shape), cp.rtr.shape[0]
    identity_part = jnp.concatenate([jnp.ones(q2), jnp.zeros(r - q2)])
    if cp.pairs is None:
        rtr = _lambda_both(cp.rtr, lams_rest, levels_rest)
        schur = rtr + jnp.diag(identity_part) - jnp.einsum("lir,lis->rs", b, b)
    else:  # B is not formed (under jit the unused b is dropped): B'B = Λᵣ'(Σ_l C_l'Q_l C_l)Λᵣ
        e = _scaled_first_inverse(l11, lam1)
        q = jnp.einsum("lki,lkj->lij", e, e)
        schur = _lambda_both(cp.rtr - _sparse_c_q_c(q, cp, q2), lams_rest, levels_rest) + jnp.diag(identity_part)
    return l11, b, schur


def _scaled_first_inverse(l11: jnp.ndarray, lam1: jnp.ndarray) -> jnp.ndarray:
    """E_l = L₁₁,l⁻¹Λ₁' for every level l of the first term (m₁, p₁, p₁): B_l = E_l C_l Λᵣ."""
    return small_solve_lower(l11, jnp.broadcast_to(lam1.T, l11.shape))


def _lambda_both(matrix: jnp.ndarray, lams: list, n_levels: tuple[int, ...]) -> jnp.ndarray:
    """Λᵣ' matrix Λᵣ for symmetric `matrix`."""
    return _lambda_right(_lambda_right(matrix, lams, n_levels).T, lams, n_levels)


def _sparse_c_q_c(q: jnp.ndarray, cp: CrossProducts, q2: int) -> jnp.ndarray:
    """Σ_l C_l'Q_l C_l (r x r) with C_l = (Z₁'WR)_l: its Z block from the sparse pairs."""
    c_xy = cp.z1txy
    q_c_xy = jnp.einsum("lab,lbc->lac", q, c_xy)
    zxy = sparse_z_rest_block(q_c_xy, cp.z_entries, cp.pairs, q2)
    return jnp.block([[sparse_zz_block(q, cp.pair_products, cp.pairs, q2), zxy],
                      [zxy.T, jnp.einsum("lac,lad->cd", c_xy, q_c_xy)]])


def blocked_profile(theta: jnp.ndarray, cp: CrossProducts, shape: ModelShape) -> Profiled:
    """`Profiled` at θ from the blocked Cholesky factor: of L₂₂ only Σ_{i<q₂} log L_ii and
    the trailing block L_TT over [X y] (`schur_cholesky.py`; its cheaper derivative for
    large q₂)."""
    l11, _, schur = blocked_schur(theta, cp, shape)
    return profile_from_schur(l11, schur, cp, shape)


def profile_from_schur(l11: jnp.ndarray, schur: jnp.ndarray, cp: CrossProducts, shape: ModelShape) -> Profiled:
    """`Profiled` from the first term's factor L₁₁ and the Schur complement S (`blocked_schur`)."""
    return _profile_and_trailing_factor(l11, schur, cp, shape)[0]


def _profile_and_trailing_factor(l11, schur, cp: CrossProducts, shape: ModelShape):
    """(`Profiled`, L_TT): L_TT the trailing [X y] block of S's factor."""
    half_logdet_zz, l_tt = schur_factor_parts(schur, rest_size(shape))
    log_diag11 = jnp.log(jnp.diagonal(l11, axis1=1, axis2=2))
    logdet_v = 2.0 * (jnp.sum(log_diag11) + half_logdet_zz) - cp.sum_log_weights
    logdet_xtvx = 2.0 * jnp.sum(jnp.log(jnp.diag(l_tt))[:-1])
    rss = l_tt[-1, -1] ** 2
    beta = small_solve_upper_transposed(l_tt[:-1, :-1], l_tt[-1, :-1, None])[:, 0]
    return Profiled(logdet_v, logdet_xtvx, rss, beta), l_tt


def blocked_profile_and_xtvx_inverse(theta: jnp.ndarray, cp: CrossProducts, shape: ModelShape):
    """(`blocked_profile`, (X'V₀⁻¹X)⁻¹) at θ from one factor of S: (X'V₀⁻¹X)⁻¹ = (L_XX L_XX')⁻¹
    with L_XX the leading p x p block of L_TT (batch fits' standard errors; a separate
    `blocked_xtvx_inverse` factors S again, and XLA does not merge the two: a sleepstudy
    batch program had 276 fused kernels to compile instead of 255)."""
    l11, _, schur = blocked_schur(theta, cp, shape)
    profiled, l_tt = _profile_and_trailing_factor(l11, schur, cp, shape)
    return profiled, _gram_inverse(l_tt[:-1, :-1])


def _gram_inverse(l_xx: jnp.ndarray) -> jnp.ndarray:
    """(L L')⁻¹ = L⁻ᵀL⁻¹ for the lower-triangular p x p block L_XX of S's factor."""
    l_inv = small_solve_lower(l_xx, jnp.eye(l_xx.shape[0], dtype=l_xx.dtype))
    return l_inv.T @ l_inv


def blocked_xtvx_inverse(theta: jnp.ndarray, cp: CrossProducts, shape: ModelShape) -> jnp.ndarray:
    """(X'V₀⁻¹X)⁻¹ = (L_XX L_XX')⁻¹; times σ² it is the covariance of β̂."""
    return _xtvx_inverse_from_factor(blocked_factor(theta, cp, shape), shape)


def _xtvx_inverse_from_factor(factor: BlockedFactor, shape: ModelShape) -> jnp.ndarray:
    q2, r = rest_size(shape), factor.l22.shape[0]
    return _gram_inverse(factor.l22[q2:r - 1, q2:r - 1])


def blocked_summaries(theta: jnp.ndarray, cp: CrossProducts, shape: ModelShape, sigma2):
    """((X'V₀⁻¹X)⁻¹, `RandomEffects`) at θ from one blocked factor: a fit's summaries, which
    factored the 1,159² Schur complement of InstEval three times before (with β̂'s profile)."""
    factor = blocked_factor(theta, cp, shape)
    return _xtvx_inverse_from_factor(factor, shape), _random_effects_from_factor(factor, theta, cp, shape, sigma2)


class RandomEffects(NamedTuple):
    """Conditional modes b̂ (one (m_k, p_k) array per term) and, per level, the
    conditional covariance blocks σ²Λ_k (Λ'Z'WZΛ + I)⁻¹_kk Λ_k' (given β̂, as lme4's condVar)."""

    modes: list
    cond_cov: list


def blocked_random_effects(theta, cp: CrossProducts, shape: ModelShape, sigma2) -> RandomEffects:
    """Conditional modes and conditional covariances of the random effects at θ."""
    return _random_effects_from_factor(blocked_factor(theta, cp, shape), theta, cp, shape, sigma2)


def _random_effects_from_factor(factor: BlockedFactor, theta, cp: CrossProducts, shape: ModelShape,
                                sigma2) -> RandomEffects:
    """The modes from L: [û₂; β̂] = L_top⁻ᵀ c (c the last row of L₂₂ before its corner), then
    û₁ = L₁₁⁻ᵀ(B_y - B_[Z X] [û₂; β̂]) per level, b̂_k = Λ_k û_k; the covariances from
    `_inverse_diagonal_blocks` (dense B) or `_sparse_inverse_diagonal_blocks` (the pairs)."""
    lams = relative_factors(theta, shape)
    q2, r = rest_size(shape), factor.l22.shape[0]
    l_top = factor.l22[:r - 1, :r - 1]
    rest_solution = solve_triangular(l_top, factor.l22[-1, :r - 1], lower=True, trans="T")
    rest_modes = [u @ lam.T for u, lam in zip(_split_levels(rest_solution[:q2], shape), lams[1:])]
    if cp.pairs is None:
        rhs1 = factor.b[:, :, -1] - jnp.einsum("lir,r->li", factor.b[:, :, :r - 1], rest_solution)
        covs = _inverse_diagonal_blocks(factor, shape)
    else:
        rhs1 = _sparse_first_term_rhs(factor.l11, lams[0], cp, rest_solution[q2:], rest_modes, shape)
        covs = _sparse_inverse_diagonal_blocks(factor, lams, cp, shape)
    u1 = small_solve_upper_transposed(factor.l11, rhs1[:, :, None])[:, :, 0]
    modes = [u1 @ lams[0].T] + rest_modes
    cond_cov = [sigma2 * jnp.einsum("ij,ljk,hk->lih", lam, c, lam) for lam, c in zip(lams, covs)]
    return RandomEffects(modes, cond_cov)


def _sparse_first_term_rhs(l11, lam1, cp: CrossProducts, beta, rest_modes: list, shape: ModelShape):
    """B_y - B_[Z X] [û₂; β̂] per level of term 1 without B: B_l = E_l C_l Λᵣ with
    E_l = L₁₁,l⁻¹Λ₁', so it is E_l (C_l,y - C_l,X β̂ - C_l,Z b̂₂), b̂₂ = Λ₂û₂ the other terms'
    modes (C_l,Z from the non-zero entries: `level_entry_sums`)."""
    e = _scaled_first_inverse(l11, lam1)
    residual_xy = cp.z1txy @ jnp.concatenate([-beta, jnp.ones(1, beta.dtype)])
    rest = jnp.concatenate([m.reshape(-1) for m in rest_modes])
    raw = residual_xy - level_entry_sums(rest, cp.z_entries, cp.pairs, shape.n_levels[0])
    return jnp.einsum("lij,lj->li", e, raw)


def _split_levels(vector: jnp.ndarray, shape: ModelShape) -> list:
    out, start = [], 0
    for m, d in zip(shape.n_levels[1:], shape.dims[1:]):
        out.append(vector[start:start + m * d].reshape(m, d))
        start += m * d
    return out


def _first_term_inverse_blocks(factor: BlockedFactor, shape: ModelShape):
    """(C, A₁₁⁻¹): per level l of the first term C_l = L₁₁,l⁻¹ and A₁₁,l⁻¹ = C_l'C_l."""
    m1, p1 = shape.n_levels[0], shape.dims[0]
    c = small_solve_lower(factor.l11, jnp.broadcast_to(jnp.eye(p1), (m1, p1, p1)))
    return c, jnp.einsum("lki,lkj->lij", c, c)


def _inverse_diagonal_blocks(factor: BlockedFactor, shape: ModelShape) -> list:
    """Per term and level, the diagonal block of A⁻¹, A = Λ'Z'WZΛ + I, from L (A = LL').

    First term, level l: C_l'C_l + (K_l C_l)'(K_l C_l) with C_l = L₁₁,l⁻¹ and
    K = L₂₂⁻¹ B_Z'; other terms: the diagonal blocks of L₂₂⁻ᵀ L₂₂⁻¹.
    """
    q2 = rest_size(shape)
    m1, p1 = shape.n_levels[0], shape.dims[0]
    c, first = _first_term_inverse_blocks(factor, shape)
    if q2 == 0:
        return [first]
    l22z = factor.l22[:q2, :q2]
    b_z = factor.b[:, :, :q2].reshape(m1 * p1, q2)
    k = solve_triangular(l22z, b_z.T, lower=True).reshape(q2, m1, p1)
    kc = jnp.einsum("qlk,lkj->qlj", k, c)
    first = first + jnp.einsum("qli,qlj->lij", kc, kc)
    l22_inv = solve_triangular(l22z, jnp.eye(q2), lower=True)
    out, start = [first], 0
    for m, d in zip(shape.n_levels[1:], shape.dims[1:]):
        cols = l22_inv[:, start:start + m * d].reshape(q2, m, d)
        out.append(jnp.einsum("qli,qlj->lij", cols, cols))
        start += m * d
    return out


def _sparse_inverse_diagonal_blocks(factor: BlockedFactor, lams: list, cp: CrossProducts, shape: ModelShape) -> list:
    """`_inverse_diagonal_blocks` from the pairs, without B: with A₁₁,l⁻¹ = L₁₁,l⁻ᵀL₁₁,l⁻¹
    and S_ZZ⁻¹ (from L_ZZ), the first term's block is A₁₁,l⁻¹ + F_l (C_l,Z M C_l,Z') F_l'
    with F_l = A₁₁,l⁻¹Λ₁', M = Λ₂ S_ZZ⁻¹ Λ₂' and C_l = (Z₁'WR)_l (`level_pair_sums`: C_l,Z
    is non-zero only in the columns of the pairs); the other terms' are the diagonal blocks
    of S_ZZ⁻¹. InstEval: one S_ZZ⁻¹ instead of L₂₂⁻¹B_Z' (2,972 right-hand sides) and L₂₂⁻¹."""
    q2 = rest_size(shape)
    m1 = shape.n_levels[0]
    first = _first_term_inverse_blocks(factor, shape)[1]
    s_zz_inv = cho_solve((factor.l22[:q2, :q2], True), jnp.eye(q2, dtype=first.dtype))
    m = _lambda_both(s_zz_inv, [lam.T for lam in lams[1:]], shape.n_levels[1:])
    f = first @ lams[0].T
    first = first + f @ level_pair_sums(m, cp.pair_products, cp.pairs, m1) @ jnp.swapaxes(f, 1, 2)
    out, start = [first], 0
    for n_levels, d in zip(shape.n_levels[1:], shape.dims[1:]):
        block = s_zz_inv[start:start + n_levels * d, start:start + n_levels * d].reshape(n_levels, d, n_levels, d)
        out.append(block[jnp.arange(n_levels), :, jnp.arange(n_levels), :])
        start += n_levels * d
    return out
