"""Cholesky factors and forward solves of many equal-size matrices, as loops over columns.

The residual correlation matrices of the groups (n_groups, s, s) with s up to a few dozen
are too large to unroll (`small_linalg.py`: compile time grows as s³, minutes for s = 11
under a Hessian) and must not go through batched LAPACK (jaxlib's CPU batched kernels can
deadlock). A `lax.fori_loop` over the s columns, vectorised over the groups, keeps the
program small:

    column j:  L_jj = √(A_jj - Σ_{k<j} L_jk²),   L_ij = (A_ij - Σ_{k<j} L_ik L_jk) / L_jj  (i > j)
    row i:     x_i = (b_i - Σ_{k<i} L_ik x_k) / L_ii                               (L x = b)

Both are differentiable (reverse mode turns the loop into a scan) and work under vmap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def loop_cholesky(a: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor of symmetric positive-definite a (..., s, s)."""
    s = a.shape[-1]
    index = jnp.arange(s)

    def column(j, factor):
        row = factor[..., j, :]  # L_jk, k < j (zero from j on)
        pivot = jnp.sqrt(a[..., j, j] - jnp.sum(row ** 2, axis=-1))
        below = (a[..., :, j] - jnp.einsum("...ik,...k->...i", factor, row)) / pivot[..., None]
        new = jnp.where(index > j, below, 0.0) + jnp.where(index == j, 1.0, 0.0) * pivot[..., None]
        return factor.at[..., :, j].set(new)

    return jax.lax.fori_loop(0, s, column, jnp.zeros_like(a))


def loop_solve_lower(factor: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """x = L⁻¹ b for lower-triangular L (..., s, s) and b (..., s, k)."""
    s = factor.shape[-1]

    def row(i, x):
        value = (b[..., i, :] - jnp.einsum("...k,...kc->...c", factor[..., i, :], x)) / factor[..., i, i, None]
        return x.at[..., i, :].set(value)

    return jax.lax.fori_loop(0, s, row, jnp.zeros_like(b))
