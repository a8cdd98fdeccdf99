"""Quadratic forms of projections and the moment equations E(Q) = Q, in pure JAX.

Model: y = Xβ + Σ_j Z_j α_j + ε with α_j ~ N(0, σ_j² I), ε ~ N(0, σ_e² I). For a
symmetric matrix A with A X = 0,

    E(y'Ay) = Σ_j σ_j² tr(Z_j' A Z_j) + σ_e² tr(A).

The ANOVA estimators take A from projections P_S onto the column space of a set S of
blocks of W = [X | Z_1 | ... | Z_K]. Everything is computed from the cross-products
G = W'W, b = W'y and y'y (one pass over the data):

    y'P_S y = b_S' G_SS⁺ b_S,   tr(P_S) = rank(G_SS),   tr(Z_j'P_S Z_j) = tr(G_SS⁺ G_Sj G_jS).

A table row is a linear combination (a row of `contrasts`) of such forms, e.g. the
reduction R(Z_k | X, Z_1..Z_{k-1}) = y'P_{X..k}y - y'P_{X..k-1}y of Henderson's method III.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

EIGEN_TOLERANCE = 1e-10  # eigenvalues of the unit-diagonal Gram matrix below this x the largest are zero


class Forms(NamedTuple):
    """Per projection P: y'Py, tr(P) and tr(Z_j' P Z_j) for every random term j."""

    quadratic: jnp.ndarray  # (F,)
    trace: jnp.ndarray  # (F,)
    term_traces: jnp.ndarray  # (F, K)


class MomentTable(NamedTuple):
    """Rows of sums of squares with df and expected-mean-square coefficients, and the solution.

    E(ss_r) = Σ_j coefficients[r, j] σ_j² + df_r σ_e²;  `variances` = (σ_1², ..., σ_K², σ_e²).
    """

    ss: jnp.ndarray
    df: jnp.ndarray
    coefficients: jnp.ndarray
    variances: jnp.ndarray


def block_matrix(X: jnp.ndarray, codes: tuple[jnp.ndarray, ...], n_levels: tuple[int, ...]):
    """W = [X | Z_1 | ... | Z_K] with Z_k the indicator matrix of term k's levels (n x (p+q))."""
    blocks = [X] + [jax.nn.one_hot(c, m, dtype=X.dtype) for c, m in zip(codes, n_levels)]
    return jnp.concatenate(blocks, axis=1)


def _pseudo_inverse(gram: jnp.ndarray):
    """G⁺ and rank(G) of a positive semi-definite G, after scaling it to unit diagonal."""
    scale = 1.0 / jnp.sqrt(jnp.diag(gram))
    values, vectors = jnp.linalg.eigh(gram * scale[:, None] * scale[None, :])
    keep = values > EIGEN_TOLERANCE * jnp.max(values)
    inv_values = jnp.where(keep, 1.0 / jnp.where(keep, values, 1.0), 0.0)
    inverse = (vectors * inv_values) @ vectors.T
    return inverse * scale[:, None] * scale[None, :], jnp.sum(keep)


def projection_forms(W: jnp.ndarray, y: jnp.ndarray, column_sets: tuple[tuple[int, ...], ...],
                     term_columns: tuple[tuple[int, ...], ...]) -> Forms:
    """`Forms` of the projections onto W[:, S] for each S in `column_sets`; an empty S is
    the identity (y'y, n, tr(Z_j'Z_j) = n)."""
    gram, cross, yy = W.T @ W, W.T @ y, y @ y
    n = jnp.asarray(y.shape[0], dtype=y.dtype)
    quadratic, trace, term_traces = [], [], []
    for cols in column_sets:
        if not cols:
            quadratic.append(yy)
            trace.append(n)
            term_traces.append(jnp.full(len(term_columns), n))
            continue
        s = jnp.asarray(cols)
        inverse, rank = _pseudo_inverse(gram[s][:, s])
        quadratic.append(cross[s] @ inverse @ cross[s])
        trace.append(rank.astype(y.dtype))
        traces = []
        for tcols in term_columns:
            block = gram[s][:, jnp.asarray(tcols)]
            traces.append(jnp.sum((inverse @ block) * block))
        term_traces.append(jnp.stack(traces))
    return Forms(jnp.stack(quadratic), jnp.stack(trace), jnp.stack(term_traces))


def solve_moments(forms: Forms, contrasts: jnp.ndarray) -> MomentTable:
    """Rows ss = L q, df = L tr, coefficients = L T (L = `contrasts`), then solve E(ss) = ss:

        [coefficients | df] (σ_1², ..., σ_K², σ_e²)' = ss.
    """
    ss = contrasts @ forms.quadratic
    df = contrasts @ forms.trace
    coefficients = contrasts @ forms.term_traces
    system = jnp.concatenate([coefficients, df[:, None]], axis=1)
    return MomentTable(ss, df, coefficients, jnp.linalg.solve(system, ss))
