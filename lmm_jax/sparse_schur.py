"""The sparse part of the blocked Cholesky's Schur complement, for large crossed designs.

The blocked evaluator (`blocked.py`) subtracts B'B from the rest block, where B has one
p₁ x r slab B_l per level l of the first term. Its Z-by-Z part (the q₂ x q₂ block over
the other terms' random effects) is

    (B'B)_ZZ = Σ_l B_l,Z' B_l,Z,

and B_l,Z is non-zero only in the columns of the levels that share an observation with
level l (an instructor's students, a student's instructors: MixedModels.jl's sparse
off-diagonal blocks). Formed densely this costs m₁p₁q₂² (4·10⁹ multiply-adds for
InstEval: 2,972 students x 1,156²); summed over the non-zero pairs only it costs
p₁ × (number of pairs), 2.1·10⁶ for InstEval.

`schur_pairs(design)` finds, once on the host, every (level l, column i, column j) with
i ≥ j both non-zero in B_l (columns come in whole level blocks of p_k, since Λ₂ mixes a
level's own columns); `sparse_zz_block` sums B_l,Zi · B_l,Zj over those pairs with a
segment sum and mirrors the lower triangle. The pairs depend only on the grouping codes,
which no fit replaces (y, X and the prior weights may change: the values come from B).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MIN_REST_SIZE = 64  # q₂ below this: the dense product is cheap, keep it
MIN_SAVING = 8.0  # use the pairs when the dense product does this many times more work


class SchurPairs(NamedTuple):
    """Flat pair lists: level of term 1, and row/column (i ≥ j) in the q₂ x q₂ block."""

    level: jnp.ndarray
    row: jnp.ndarray
    col: jnp.ndarray


def _touched_blocks(design) -> tuple[np.ndarray, np.ndarray, int]:
    """(level of term 1, first column of a touched level block of another term, its width)
    for each distinct pair, and q₂."""
    first = design.terms[0]
    levels, starts, widths, offset = [], [], [], 0
    for term in design.terms[1:]:
        key = np.unique(first.codes.astype(np.int64) * term.n_levels + term.codes)
        levels.append(key // term.n_levels)
        starts.append(offset + (key % term.n_levels) * term.dim)
        widths.append(np.full(key.size, term.dim))
        offset += term.n_levels * term.dim
    return np.concatenate(levels), np.concatenate(starts), np.concatenate(widths), offset


def _columns_per_level(design):
    """For each level of term 1, the sorted non-zero columns of B_l,Z (numpy int64)."""
    levels, starts, widths, q2 = _touched_blocks(design)
    columns = np.concatenate([s + np.arange(w) for s, w in zip(starts, widths)]) if levels.size else np.zeros(0, int)
    owners = np.repeat(levels, widths)
    order = np.lexsort((columns, owners))
    return owners[order], columns[order], q2


def schur_pairs(design) -> SchurPairs | None:
    """The pair lists for `design`, or None when the dense product is as cheap (small q₂,
    or B_Z nearly dense)."""
    if len(design.terms) < 2:
        return None
    owners, columns, q2 = _columns_per_level(design)
    m1, p1 = design.terms[0].n_levels, design.terms[0].dim
    counts = np.bincount(owners, minlength=m1)
    n_pairs = int(np.sum(counts * (counts + 1) // 2))
    if q2 < MIN_REST_SIZE or m1 * q2 * q2 < MIN_SAVING * n_pairs:
        return None
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pair_level, rows, cols = [], [], []
    for count in np.unique(counts[counts > 0]):  # all levels with `count` columns at once
        members = np.flatnonzero(counts == count)
        cols_of = columns[starts[members][:, None] + np.arange(count)]  # (members, count)
        i, j = np.tril_indices(count)
        pair_level.append(np.repeat(members, i.size))
        rows.append(cols_of[:, i].ravel())
        cols.append(cols_of[:, j].ravel())
    as_int = (lambda parts: jnp.asarray(np.concatenate(parts), jnp.int32))
    return SchurPairs(as_int(pair_level), as_int(rows), as_int(cols))


def sparse_zz_block(b_z: jnp.ndarray, pairs: SchurPairs, q2: int) -> jnp.ndarray:
    """Σ_l B_l,Z' B_l,Z (q₂ x q₂) from B_Z (m₁, p₁, q₂), summing only the listed pairs."""
    products = jnp.sum(b_z[pairs.level, :, pairs.row] * b_z[pairs.level, :, pairs.col], axis=-1)
    lower = jax.ops.segment_sum(products, pairs.row * q2 + pairs.col, q2 * q2).reshape(q2, q2)
    return lower + lower.T - jnp.diag(jnp.diag(lower))
