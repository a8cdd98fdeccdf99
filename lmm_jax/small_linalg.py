"""Cholesky factors and triangular solves of many tiny matrices, unrolled into elementwise ops.

The first random term contributes one p₁ x p₁ block per level (p₁ is 1 to a few). Batched
LAPACK calls over thousands of such blocks are slow and, on jaxlib's CPU backend, can
deadlock: its batched kernels wait on the same thread pool that runs them (seen with two
concurrent batched `trsm` calls on 2 cores). For the small static p used here, unrolling
the textbook recurrences over p gives vectorised elementwise code instead:

    L_jj = sqrt(A_jj - Σ_{k<j} L_jk²),   L_ij = (A_ij - Σ_{k<j} L_ik L_jk) / L_jj   (i > j)
    forward:  x_i = (b_i - Σ_{k<i} L_ik x_k) / L_ii        (solves L x = b)
    backward: x_i = (b_i - Σ_{k>i} L_ki x_k) / L_ii        (solves L' x = b)

All functions take arrays with any leading batch dimensions. Above `UNROLL_LIMIT` (p = 11
for ar1 over 11 times, or a known relationship matrix: one level, many columns) the
unrolled graph, differentiated twice inside the fit, takes minutes to compile; LAPACK is
used instead, one unbatched call per level (`jax.lax.map`), never a batched kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

UNROLL_LIMIT = 6


def _unbatched(function, *arrays):
    """`function` on arrays with a leading batch of one, as unbatched LAPACK calls (a batched
    call is what deadlocks on jaxlib's CPU backend); larger batches are mapped one by one."""
    if all(a.ndim == 3 and a.shape[0] == 1 for a in arrays):
        return function(*(a[0] for a in arrays))[None]
    return jax.lax.map(lambda args: function(*args), arrays) if arrays[0].ndim == 3 else function(*arrays)


def small_cholesky(a: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor of symmetric positive-definite a (..., p, p)."""
    p = a.shape[-1]
    if p > UNROLL_LIMIT:
        return _unbatched(jnp.linalg.cholesky, a)
    entries = [[None] * p for _ in range(p)]
    for j in range(p):
        diag = a[..., j, j] - sum((entries[j][k] ** 2 for k in range(j)), jnp.zeros_like(a[..., 0, 0]))
        entries[j][j] = jnp.sqrt(diag)
        for i in range(j + 1, p):
            off = a[..., i, j] - sum((entries[i][k] * entries[j][k] for k in range(j)),
                                     jnp.zeros_like(a[..., 0, 0]))
            entries[i][j] = off / entries[j][j]
    zero = jnp.zeros_like(a[..., 0, 0])
    rows = [jnp.stack([entries[i][j] if j <= i else zero for j in range(p)], axis=-1) for i in range(p)]
    return jnp.stack(rows, axis=-2)


def small_solve_lower(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """x = L⁻¹ b for lower-triangular L (..., p, p) and b (..., p, k)."""
    p = l.shape[-1]
    if p > UNROLL_LIMIT:
        return _unbatched(lambda l_, b_: solve_triangular(l_, b_, lower=True), l, b)
    xs = []
    for i in range(p):
        acc = b[..., i, :]
        for k in range(i):
            acc = acc - l[..., i, k, None] * xs[k]
        xs.append(acc / l[..., i, i, None])
    return jnp.stack(xs, axis=-2)


def small_solve_upper_transposed(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """x = L'⁻¹ b for lower-triangular L (..., p, p) and b (..., p, k)."""
    p = l.shape[-1]
    if p > UNROLL_LIMIT:
        return _unbatched(lambda l_, b_: solve_triangular(l_, b_, lower=True, trans="T"), l, b)
    xs = [None] * p
    for i in reversed(range(p)):
        acc = b[..., i, :]
        for k in range(i + 1, p):
            acc = acc - l[..., k, i, None] * xs[k]
        xs[i] = acc / l[..., i, i, None]
    return jnp.stack(xs, axis=-2)
