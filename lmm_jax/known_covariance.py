"""A random intercept with a known relationship matrix: Var(α) = σ_g² K over the levels of g.

`lmm_jax.fit("y ~ x + (1 | id)", data, known={"id": K})`: K is m x m, symmetric positive
semi-definite, over the levels of id (a DataFrame indexed, and with columns, by level
names; or an array in sorted-level order, the order `ranef()` reports). Levels of K not in
the data are dropped (the marginal of the observed levels is K's sub-matrix).

The term fits the existing blocked evaluator without an m x m dense block per level: with
K = L L' (L = U diag(√λ) from K's eigendecomposition, keeping the r columns with λ > 0),
α = σ s L u with u ~ N(0, I_r), so the term becomes *one* level with r columns whose
model-matrix row for observation i is L[level(i), :], and structure `ScaledIdentity`
(Λ = s I_r, θ = s, σ_g² = σ² s²). Its cost per evaluation is O(r³) (a dense r x r block).

Reports are in level space: `ranef()` gives α̂ = L (s û) per level, with conditional SDs
from diag(L C L') (C the conditional covariance of s u), and VarCorr one variance σ_g².
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .covariance_structures import ScaledIdentity

SYMMETRY_TOLERANCE = 1e-8  # relative to max |K_ij|
EIGEN_TOLERANCE = 1e-10  # eigenvalues below this times the largest are zero


def check_known(known, group_names: set[str]) -> dict:
    """`known` as a dict group name -> matrix; an error naming an unknown group."""
    if known is None:
        return {}
    if not isinstance(known, dict):
        raise TypeError(f"known must be a dict {{grouping factor: K}}, got {type(known).__name__}")
    for name in known:
        if name not in group_names:
            raise ValueError(f"known matrix given for {name!r}, which is not a grouping factor of a "
                             f"random term (grouping factors: {', '.join(sorted(group_names))})")
    return known


def aligned_matrix(matrix, levels: tuple[str, ...], group: str) -> np.ndarray:
    """K over `levels` (the data's sorted levels of `group`), checked: square, finite,
    symmetric, positive semi-definite, and naming every level of the data."""
    from .design import DataError

    if isinstance(matrix, pd.DataFrame):
        index, columns = [str(v) for v in matrix.index], [str(v) for v in matrix.columns]
        if index != columns:
            raise DataError(f"known matrix for {group!r}: its index and columns must be the same level names")
        missing = [level for level in levels if level not in index]
        if missing:
            raise DataError(f"known matrix for {group!r} lacks {len(missing)} level(s) of the data, "
                            f"e.g. {missing[:5]}")
        position = [index.index(level) for level in levels]
        values = matrix.to_numpy(dtype=float)
        _check_square_symmetric_psd(values, group)
        return values[np.ix_(position, position)]
    values = np.asarray(matrix, dtype=float)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise DataError(f"known matrix for {group!r} must be square, got shape {values.shape}")
    if values.shape[0] != len(levels):
        raise DataError(f"known matrix for {group!r} is {values.shape[0]} x {values.shape[0]} but the "
                        f"data have {len(levels)} levels of {group!r}; give a DataFrame indexed by level "
                        "names, or an array over the data's levels in sorted order")
    _check_square_symmetric_psd(values, group)
    return values


def _check_square_symmetric_psd(values: np.ndarray, group: str) -> None:
    from .design import DataError

    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise DataError(f"known matrix for {group!r} must be square, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise DataError(f"known matrix for {group!r} has non-finite entries")
    scale = max(np.max(np.abs(values)), 1e-300)
    if np.max(np.abs(values - values.T)) > SYMMETRY_TOLERANCE * scale:
        raise DataError(f"known matrix for {group!r} is not symmetric")
    smallest = np.linalg.eigvalsh(values)[0]
    if smallest < -1e-8 * scale:
        raise DataError(f"known matrix for {group!r} is not positive semi-definite "
                        f"(smallest eigenvalue {smallest:.3g})")


def loadings(matrix: np.ndarray) -> np.ndarray:
    """L (m x r) with L L' = K: eigenvectors scaled by √λ for the r eigenvalues λ > 0."""
    eigvals, eigvecs = np.linalg.eigh(matrix)
    keep = eigvals > EIGEN_TOLERANCE * max(eigvals[-1], 1e-300)
    return eigvecs[:, keep] * np.sqrt(eigvals[keep])


def known_term(term, matrix):
    """The fitting form of a term `(1 | g)` with Var = σ_g² K: one level, r columns L[level(i)].

    `term` is the ordinary (report-space) term; it is kept as the new term's `report`."""
    from .design import DataError

    if term.column_names != ("(Intercept)",):
        raise DataError(f"random term {term.spec.source!r}: a known relationship matrix applies to a "
                        f"random intercept (1 | {term.group}) only, got columns {list(term.column_names)}")
    factor = loadings(aligned_matrix(matrix, term.levels, term.group))
    columns = tuple(f"L[{j + 1}]" for j in range(factor.shape[1]))
    return dataclasses.replace(term, levels=("(all)",), level_keys=(("(all)",),),
                               codes=np.zeros_like(term.codes),
                               values=factor[term.codes], column_names=columns,
                               structure=ScaledIdentity(factor.shape[1]), report=term, loadings=factor)


def report_arrays(terms, modes, cond_cov, rel_cov):
    """Per term, modes (m, p), conditional covariances (m, p, p) and Σ/σ² in report space:
    for a known term α̂ = L b̂ (b̂ = s û), Var(α | y) = L C L' (diagonal kept), Σ/σ² = s²."""
    out_modes, out_cov, out_rel = [], [], []
    for term, mode, cov, rel in zip(terms, modes, cond_cov, rel_cov):
        if term.loadings is None:
            out_modes.append(mode), out_cov.append(cov), out_rel.append(rel)
            continue
        factor = term.loadings
        out_modes.append((factor @ mode[0])[:, None])
        out_cov.append(np.einsum("ij,jk,ik->i", factor, cov[0], factor)[:, None, None])
        out_rel.append(rel[:1, :1])
    return out_modes, out_cov, out_rel
