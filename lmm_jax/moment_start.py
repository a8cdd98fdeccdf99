"""A start for a large model's quasi-Newton fit: MINQUE(0) moment estimates of the variances.

Each column j of each random term k is taken as its own variance component g = (k, j):
Z_g (n x m_k) holds that column's values at the rows' levels, and for the start

    V = Σ_g σ_g² Z_g Z_g' + σ² W⁻¹      (W the prior weights; correlations taken as 0).

MINQUE(0) (Rao 1971; LaMotte 1973; Searle, Casella & McCulloch 1992, §11.3) equates the
quadratic forms of the weighted least-squares residuals e = y - Xβ̃, β̃ = A X'Wy with
A = (X'WX)⁻¹, to their expectations under that V:

    Q_g = ||Z_g'We||²,   E[Q_g] = Σ_h σ_h² K_gh + σ² c_g,
    e'We,                E[e'We] = Σ_h σ_h² c_h + σ² (n - p),

    K_gh = ||G_gh - F_g A F_h'||²_F = ||G_gh||²_F - 2 ⟨G_gh, F_g A F_h'⟩ + tr(A M_g A M_h),
    c_g  = tr G_gg - tr(A M_g),

with G_gh = Z_g'WZ_h, F_g = Z_g'WX and M_g = F_g'F_g. Every piece comes from the blocked
evaluator's cross products (`blocked.CrossProducts`), which are formed once per fit
anyway: ⟨G_gh, ·⟩ runs over G's non-zeros only (the first term's diagonal blocks, C_Z's
non-zero entries of a sparse model, the dense rest block), so no matrix over all random-
effect levels is formed. With a known scale σ² = 1 and the last equation is dropped.

The start is θ_g = σ_g/σ on Λ_k's diagonal (0 elsewhere), each at least `MIN_RELATIVE_SD`
(where the estimate is negative or tiny: the log-scale steps of BFGS need θ_g > 0). On
InstEval it is (0.273, 0.478, 0.090) against the optimum (0.276, 0.435, 0.093): within 10%
in each entry, where lme4's θ₀ = 1 is 11x off in dept:service. It costs 11-14 ms there,
the cross products it reads included. The fit from it (`model._quasi_newton_start`) takes
10 criterion values and 3 BFGS iterations where the search's start took 20 values and 2
iterations: 0.75 -> 0.61 s warm.

Defined for models whose terms all have lme4's structure (`CholeskyFactor`); other
structures' θ need not hold the standard deviations, and start from their θ₀.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .arrays import ModelArrays, ModelShape
from .blocked import CrossProducts, rest_size
from .structures import CholeskyFactor

MIN_RELATIVE_SD = 2.0 ** -6  # as low as `start_search`'s halvings go from θ₀ = 1


def applies(shape: ModelShape) -> bool:
    """Whether every term has lme4's structure (θ_k: Λ_k's lower triangle), the one the
    start is written for."""
    return bool(shape.structures) and all(type(s) is CholeskyFactor for s in shape.structures)


def moment_start(cp: CrossProducts, arrays: ModelArrays, shape: ModelShape, n_observations) -> jnp.ndarray:
    """θ from the MINQUE(0) estimates (module docstring); NaN entries where its system is
    singular (the caller then keeps θ₀)."""
    variances, scale = component_variances(cp, arrays, shape, n_observations)
    relative_sd = jnp.sqrt(jnp.maximum(variances / scale, MIN_RELATIVE_SD ** 2))
    relative_sd = jnp.where(jnp.isfinite(scale) & (scale > 0), relative_sd, jnp.nan)
    theta = jnp.zeros(shape.n_theta, relative_sd.dtype)
    return theta.at[_diagonal_positions(shape)].set(relative_sd)


def component_variances(cp: CrossProducts, arrays: ModelArrays, shape: ModelShape, n_observations):
    """(σ_g² for every component, term by term and column by column; σ²) by MINQUE(0)."""
    p = arrays.X.shape[1]
    fixed = _fixed_effect_parts(cp.rtr, rest_size(shape), p)
    first, rest = _first_term_parts(cp, fixed, shape, p), _rest_parts(cp.rtr, fixed, shape, p)
    cross_sq, cross_fit = _first_rest_products(cp, fixed, shape, p)
    square = jnp.block([[first["square"], cross_sq], [cross_sq.T, rest["square"]]])
    fitted = jnp.block([[first["fitted"], cross_fit], [cross_fit.T, rest["fitted"]]])
    trace, moment, forms = (jnp.concatenate([first[key], rest[key]])
                            for key in ("trace", "moment", "quadratic_form"))
    a_moment = jnp.einsum("pq,gqr->gpr", fixed["xtwx_inverse"], moment)
    k = square - 2.0 * fitted + jnp.einsum("gpr,hrp->gh", a_moment, a_moment)
    c = trace - jnp.einsum("gpp->g", a_moment)
    if shape.known_scale:
        return jnp.linalg.solve(k, forms - c), jnp.ones((), k.dtype)
    system = jnp.block([[k, c[:, None]], [c[None, :], jnp.reshape(n_observations - p, (1, 1)).astype(k.dtype)]])
    solution = jnp.linalg.solve(system, jnp.append(forms, fixed["residual_square"]))
    return solution[:-1], solution[-1]


def _fixed_effect_parts(rtr: jnp.ndarray, q2: int, p: int) -> dict:
    """A = (X'WX)⁻¹, β̃ = A X'Wy and e'We = y'Wy - β̃'X'Wy from R'WR's [X y] block."""
    xtwx, xtwy, ytwy = rtr[q2:q2 + p, q2:q2 + p], rtr[q2:q2 + p, q2 + p], rtr[-1, -1]
    xtwx_inverse = jnp.linalg.inv(xtwx)
    beta = xtwx_inverse @ xtwy
    return dict(xtwx_inverse=xtwx_inverse, beta=beta, residual_square=ytwy - beta @ xtwy)


def _first_term_parts(cp: CrossProducts, fixed: dict, shape: ModelShape, p: int) -> dict:
    """The first term's p₁ components: G_gh is diagonal over its levels (Z₁'WZ₁'s blocks),
    F_g = (Z₁'WX)'s column j per level."""
    xy = _first_term_xy(cp, shape)
    f = xy[:, :, :p]  # (m₁, p₁, p)
    residual = xy[:, :, p] - f @ fixed["beta"]
    fitted_diagonal = jnp.einsum("ljp,pq,lkq->ljk", f, fixed["xtwx_inverse"], f)
    return dict(square=jnp.sum(cp.z1tz1 ** 2, axis=0), fitted=jnp.sum(cp.z1tz1 * fitted_diagonal, axis=0),
                trace=jnp.einsum("ljj->j", cp.z1tz1), moment=jnp.einsum("ljp,ljq->jpq", f, f),
                quadratic_form=jnp.sum(residual ** 2, axis=0))


def _first_term_xy(cp: CrossProducts, shape: ModelShape) -> jnp.ndarray:
    """Z₁'W[X y] per level (m₁, p₁, p + 1): a sparse model's own array, else Z₁'WR's last columns."""
    return cp.z1txy if cp.z1txy is not None else cp.z1tr[:, :, rest_size(shape):]


def _rest_parts(rtr: jnp.ndarray, fixed: dict, shape: ModelShape, p: int) -> dict:
    """The other terms' components, from the dense rest block of R'WR, summed over each
    component's columns (`_rest_components`)."""
    q2, n_rest = rest_size(shape), sum(shape.dims[1:])
    component = jnp.asarray(_rest_components(shape))

    def by_component(rows):
        return jax.ops.segment_sum(rows, component, n_rest)

    def by_components(matrix):
        return by_component(by_component(matrix).T).T

    g, f = rtr[:q2, :q2], rtr[:q2, q2:q2 + p]
    residual = rtr[:q2, q2 + p] - f @ fixed["beta"]
    f_a_f = f @ fixed["xtwx_inverse"] @ f.T
    return dict(square=by_components(g ** 2), fitted=by_components(g * f_a_f), trace=by_component(jnp.diagonal(g)),
                moment=by_component(f[:, :, None] * f[:, None, :]), quadratic_form=by_component(residual ** 2))


def _first_rest_products(cp: CrossProducts, fixed: dict, shape: ModelShape, p: int):
    """(||G_gh||², ⟨G_gh, F_g A F_h'⟩) for g in the first term and h in the others, over the
    non-zero entries of C_Z = Z₁'WZ₂ (a sparse model's lists, else every entry)."""
    q2, m1, p1 = rest_size(shape), shape.n_levels[0], shape.dims[0]
    n_rest = sum(shape.dims[1:])
    if cp.z_entries is not None:
        entries, level, column = cp.z_entries, cp.pairs.entry_level, cp.pairs.entry_column
    else:
        entries = jnp.swapaxes(cp.z1tr[:, :, :q2], 1, 2).reshape(m1 * q2, p1)
        level, column = jnp.repeat(jnp.arange(m1), q2), jnp.tile(jnp.arange(q2), m1)
    xy = _first_term_xy(cp, shape)
    rest_f_a = cp.rtr[:q2, q2:q2 + p] @ fixed["xtwx_inverse"]
    fitted = jnp.einsum("ejp,ep->ej", xy[level, :, :p], rest_f_a[column])
    component = jnp.asarray(_rest_components(shape))[column]
    square = jax.ops.segment_sum(entries ** 2, component, n_rest)
    return square.T, jax.ops.segment_sum(entries * fitted, component, n_rest).T


def _rest_components(shape: ModelShape) -> np.ndarray:
    """For each column of the q₂ rest block (term by term, level-major), its component's
    index among the other terms' Σ_k p_k columns."""
    parts, first = [], 0
    for m, d in zip(shape.n_levels[1:], shape.dims[1:]):
        parts.append(first + np.tile(np.arange(d), m))
        first += d
    return np.concatenate(parts) if parts else np.zeros(0, int)


def _diagonal_positions(shape: ModelShape) -> np.ndarray:
    """θ's indices of every Λ_k's diagonal entries (column-wise lower triangles), term by term."""
    positions = [sl.start + np.flatnonzero(s.diagonal_mask())
                 for s, sl in zip(shape.structures, shape.theta_slices())]
    return np.concatenate(positions)
