"""The sparse part of the blocked Cholesky's Schur complement, for large crossed designs.

The blocked evaluator (`blocked.py`) subtracts B'B from the rest block, where B has one
p₁ x r slab B_l per level l of the first term. Its Z-by-Z part (the q₂ x q₂ block over
the other terms' random effects) is

    (B'B)_ZZ = Σ_l B_l,Z' B_l,Z,

and B_l,Z is non-zero only in the columns of the levels that share an observation with
level l (an instructor's students, a student's instructors: MixedModels.jl's sparse
off-diagonal blocks). Formed densely this costs m₁p₁q₂² (4·10⁹ multiply-adds for
InstEval: 2,972 students x 1,156²); summed over the non-zero pairs only it costs
p₁² × (number of pairs), 1.8·10⁶ for InstEval.

`schur_pairs(design)` finds, once on the host, every (level l, column i, column j) with
i ≥ j both non-zero in B_l (columns come in whole level blocks of p_k, since Λ₂ mixes a
level's own columns), level by level (each level's pairs together, by (i, j) within it).
Not sorted by (i, j) overall: the host's argsort of 1.8·10⁶ keys is saved (InstEval's model
build 0.27-0.44 -> 0.12-0.14 s), the segment sum's scatter runs faster (5.1 against 6.7 ms:
sorted, successive updates of one slot wait on each other) and its transpose, a gather,
slower (a value+gradient ~9 ms more); a warm fit takes as long as before. The pairs depend
only on the grouping codes, which no fit replaces (y, X and the prior weights may change).

With C_l = (Z₁'WR)_l (p₁ x r, formed once per fit) and E_l = L₁₁,l⁻¹Λ₁', B_l = E_l C_l Λᵣ,
so B'B = Λᵣ' [Σ_l C_l' Q_l C_l] Λᵣ with Q_l = E_l'E_l = Λ₁ (Λ₁'Z₁'WZ₁Λ₁ + I)_l⁻¹ Λ₁'
(p₁ x p₁). Only Q depends on θ: `pair_products` forms C_l,Zi C_l,Zj' for every pair once
per fit, and `sparse_zz_block` sums ⟨Q_l, C_l,Zi C_l,Zj'⟩ over the pairs at each θ (a
gather of the m₁ tiny Q_l, a product and a segment sum), without forming B. The
Z-by-[X y] block Σ_l C_l,Z' Q_l C_l,XY likewise sums over C_Z's non-zero entries only.
Those entries are summed from the observations (`entry_values`), so the criterion never
forms C_Z densely (InstEval: 27 MB; the fit's working memory 166 -> 138 MB). Nor do the
summaries: the transposes of those sums, over the same lists, give the first term's BLUPs
(`level_entry_sums`: C_l,Z b̂₂) and conditional covariances (`level_pair_sums`:
C_l,Z M C_l,Z' for M = Λ₂S_ZZ⁻¹Λ₂').
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


MIN_REST_SIZE = 64  # q₂ below this: the dense product is cheap, keep it
MIN_SAVING = 8.0  # use the pairs when the dense product does this many times more work


class SchurPairs(NamedTuple):
    """Flat pair lists: level of term 1, and row/column (i ≥ j) in the q₂ x q₂ block,
    each level's pairs together; the non-zero columns of each C_l,Z as flat (level, column)
    entry lists, sorted by column; for each pair the entries of its row and its column; and
    for each observation (n, q-columns of the other terms' blocks) the entry it adds to."""

    level: jnp.ndarray
    row: jnp.ndarray
    col: jnp.ndarray
    entry_level: jnp.ndarray
    entry_column: jnp.ndarray
    row_entry: jnp.ndarray
    col_entry: jnp.ndarray
    observation_entry: jnp.ndarray


def _columns_per_level(design):
    """For each level of term 1, the sorted non-zero columns of B_l,Z, as flat (owner level,
    column) arrays (numpy int64); the observations' entries (`_observation_positions`'s
    input); and q₂. A level touches whole blocks of p_k columns: those of the other terms'
    levels it shares an observation with."""
    first = design.terms[0]
    owners, columns, row_keys, offset, start = [], [], [], 0, 0
    for term in design.terms[1:]:
        key, key_of_row = np.unique(first.codes.astype(np.int64) * term.n_levels + term.codes,
                                    return_inverse=True)
        block_starts = offset + (key % term.n_levels) * term.dim
        owners.append(np.repeat(key // term.n_levels, term.dim))
        columns.append((block_starts[:, None] + np.arange(term.dim)).ravel())
        row_keys.append((start, key_of_row.reshape(-1), term.dim))
        offset += term.n_levels * term.dim
        start += key.size * term.dim
    owners, columns = np.concatenate(owners), np.concatenate(columns)
    order = np.argsort(owners * offset + columns, kind="stable")
    return owners[order], columns[order], (order, row_keys), offset


def _observation_positions(order, row_keys) -> np.ndarray:
    """(n, Σ_k p_k): for each observation and each column of its levels' blocks in the other
    terms, the position of that (level of term 1, column) in `_columns_per_level`'s arrays."""
    sorted_position = np.empty_like(order)
    sorted_position[order] = np.arange(order.size)
    return sorted_position[np.concatenate([start + key_of_row[:, None] * dim + np.arange(dim)
                                           for start, key_of_row, dim in row_keys], axis=1)]


def schur_pairs(design) -> SchurPairs | None:
    """The pair lists for `design`, or None when the dense product is as cheap (small q₂,
    or B_Z nearly dense)."""
    if len(design.terms) < 2:
        return None
    owners, columns, observations, q2 = _columns_per_level(design)
    m1, p1 = design.terms[0].n_levels, design.terms[0].dim
    counts = np.bincount(owners, minlength=m1)
    n_pairs = int(np.sum(counts * (counts + 1) // 2))
    if q2 < MIN_REST_SIZE or m1 * q2 * q2 < MIN_SAVING * n_pairs:
        return None
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    pair_level, row_position, col_position = [], [], []
    for count in np.unique(counts[counts > 0]):  # all levels with `count` columns at once
        members = np.flatnonzero(counts == count).astype(np.int32)
        positions = starts[members][:, None] + np.arange(count, dtype=np.int32)  # (members, count)
        i, j = np.tril_indices(count)
        pair_level.append(np.repeat(members, i.size))
        row_position.append(positions[:, i].ravel())
        col_position.append(positions[:, j].ravel())
    pair_level, row_position, col_position = (np.concatenate(parts)
                                              for parts in (pair_level, row_position, col_position))
    columns = columns.astype(np.int32)  # int32 throughout: half the memory traffic of int64
    rows, cols = columns[row_position], columns[col_position]
    by_column = np.argsort(columns, kind="stable")
    entry_of_position = np.empty(by_column.size, np.int32)
    entry_of_position[by_column] = np.arange(by_column.size, dtype=np.int32)
    as_int = (lambda values: values.astype(np.int32, copy=False))  # host arrays (`model.host_arrays`)
    return SchurPairs(as_int(pair_level), as_int(rows), as_int(cols),
                      as_int(owners[by_column]), as_int(columns[by_column]),
                      as_int(entry_of_position[row_position]), as_int(entry_of_position[col_position]),
                      as_int(entry_of_position[_observation_positions(*observations)]))


def pair_products(entries: jnp.ndarray, pairs: SchurPairs) -> jnp.ndarray:
    """C_l,Zi C_l,Zj' (p₁ x p₁) for every pair (l, i, j), from the `entry_values`: once per fit."""
    return entries[pairs.row_entry][:, :, None] * entries[pairs.col_entry][:, None, :]


def entry_values(weighted_values1: jnp.ndarray, rest_values: jnp.ndarray, pairs: SchurPairs) -> jnp.ndarray:
    """C_l,Zi (p₁) at every non-zero entry (l, i) of C_Z, summed from the observations:
    C_l,Zi = Σ_{rows r of level l} w_r z₁,r z_i,r, with `weighted_values1` the rows' w_r z₁,r
    (n, p₁) and `rest_values` their values in the other terms' columns (n, Σ_k p_k; the column
    of each is `pairs.observation_entry`'s). Once per fit, and without C_Z stored densely
    (m₁ x q₂: InstEval's 2,972 x 1,156, 27 MB formed and read once per fit for 9·10⁴ entries)."""
    contributions = weighted_values1[:, None, :] * rest_values[:, :, None]  # (n, Σ p_k, p₁)
    n_entries = pairs.entry_level.shape[0]
    return jax.ops.segment_sum(contributions.reshape(-1, weighted_values1.shape[1]),
                               pairs.observation_entry.reshape(-1), n_entries)


def sparse_z_rest_block(q_c_rest: jnp.ndarray, entries: jnp.ndarray, pairs: SchurPairs, q2: int) -> jnp.ndarray:
    """Σ_l C_l,Z' (Q_l C_l,XY) (q₂ x (p + 1)) from Q_l C_l,XY (m₁, p₁, p + 1) and the
    `entry_values`: a sum over the non-zero entries of C_Z (InstEval: 9·10⁴ of 3.4·10⁶)
    instead of a product with C_Z stored densely (15 ms a value, 17 ms more a gradient)."""
    terms = jnp.einsum("ea,eac->ec", entries, q_c_rest[pairs.entry_level])
    return jax.ops.segment_sum(terms, pairs.entry_column, q2, indices_are_sorted=True)


def sparse_zz_block(q: jnp.ndarray, products: jnp.ndarray, pairs: SchurPairs, q2: int) -> jnp.ndarray:
    """Σ_l C_l,Z' Q_l C_l,Z (q₂ x q₂) from Q (m₁, p₁, p₁) and the `pair_products`, summing
    only the listed pairs and mirroring the lower triangle."""
    values = jnp.sum(q[pairs.level] * products, axis=(1, 2))
    lower = jax.ops.segment_sum(values, pairs.row * q2 + pairs.col, q2 * q2).reshape(q2, q2)
    return lower + lower.T - jnp.diag(jnp.diag(lower))


def level_pair_sums(matrix: jnp.ndarray, products: jnp.ndarray, pairs: SchurPairs, m1: int) -> jnp.ndarray:
    """C_l,Z M C_l,Z' (m₁, p₁, p₁) for every level l of term 1, for a symmetric q₂ x q₂ M:
    the transpose of `sparse_zz_block`, Σ over the level's pairs (i ≥ j) of M_ij C_l,Zi C_l,Zj'
    and its mirror for i > j (the conditional covariances of term 1's random effects)."""
    weights = jnp.where(pairs.row == pairs.col, 1.0, 2.0) * matrix[pairs.row, pairs.col]
    sums = jax.ops.segment_sum(weights[:, None, None] * products, pairs.level, m1)
    return 0.5 * (sums + jnp.swapaxes(sums, 1, 2))


def level_entry_sums(vector: jnp.ndarray, entries: jnp.ndarray, pairs: SchurPairs, m1: int) -> jnp.ndarray:
    """C_l,Z v (m₁, p₁) for every level l of term 1, for a q₂-vector v: a sum over the
    non-zero entries of C_Z (the transpose of `sparse_z_rest_block`)."""
    return jax.ops.segment_sum(entries * vector[pairs.entry_column][:, None], pairs.entry_level, m1)
