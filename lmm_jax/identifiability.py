"""Structural checks that a design's variance components are identified, made on the host
before an optimum is trusted (the likelihood is flat along some direction of θ otherwise,
and θ̂ is wherever the optimiser stopped, often its start).

- within a term, the columns of its model matrix are linearly dependent (a zero column,
  `(0 + z | g)` with z = 0; a constant column beside the intercept, `(1 + c | g)`);
- two terms group the rows into the same partition (the same factor twice, or two columns
  with one-to-one levels) and their columns together are linearly dependent
  (`(1 | g) + (1 | g)`);
- a term's random effects lie in the fixed effects' column space (a fixed factor equal to
  the grouping factor): with X = QR, ‖Z_j - QQ'Z_j‖² = ‖Z_j‖² - ‖Q'Z_j‖² ≈ 0 for every
  column j of Z, from per-level sums without forming Z.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RANK_TOLERANCE = 1e-8  # relative to the largest singular value, or to ‖Z_j‖²


def identifiability_messages(design) -> list[str]:
    """One message per term (or pair of terms) whose parameters are not identified."""
    terms = design.terms
    out = [f"random term {_label(t)}: its columns {list(t.column_names)} are linearly dependent "
           "(a zero column, or a constant beside the intercept)" for t in terms if _rank_deficient(t.values)]
    for i, a in enumerate(terms):
        for b in terms[i + 1:]:
            if _same_partition(a.codes, b.codes) and _rank_deficient(np.hstack([a.values, b.values])):
                out.append(f"random terms {_label(a)} and {_label(b)} group the rows identically and "
                           "their columns are linearly dependent: their variances are not identified")
    out += [f"random term {_label(t)} lies in the fixed effects' column space (a fixed factor equal to "
            "its grouping factor?): its variance is not identified"
            for t in terms if _in_fixed_span(design.X, t)]
    return out


def _label(term) -> str:
    columns = ["1" if name == "(Intercept)" else name for name in term.column_names]
    return f"({' + '.join(columns)} | {term.group})"


def _rank_deficient(values: np.ndarray) -> bool:
    """Whether the columns are linearly dependent, judged on the columns centred beside a
    column of ones (the same column space): a covariate of mean 1e6 beside the intercept has
    a smallest singular value 1e-12 of the largest, and is not a constant."""
    values = np.asarray(values, float)
    ones = np.all(values == 1.0, axis=0)
    if ones.any():
        values = np.where(ones, values, values - values.mean(axis=0))
    singular = np.linalg.svd(values, compute_uv=False)
    return values.shape[1] > 0 and (singular.size == 0 or singular[-1] <= RANK_TOLERANCE * singular[0])


def _same_partition(codes_a: np.ndarray, codes_b: np.ndarray) -> bool:
    """Whether the two level codings are one-to-one (a relabelling of each other)."""
    pairs = pd.DataFrame({"a": codes_a, "b": codes_b}).drop_duplicates()
    return pairs["a"].is_unique and pairs["b"].is_unique


def _in_fixed_span(x: np.ndarray, term) -> bool:
    """Whether every column of the term's Z (v_ik on the rows of level l) is in X's span."""
    if x.shape[1] == 0 or x.shape[1] < term.n_levels:
        return False
    q = np.linalg.qr(x)[0]
    values, codes, m = np.asarray(term.values, float), term.codes, term.n_levels
    projected = np.stack([np.stack([np.bincount(codes, q[:, j] * values[:, k], m) for j in range(q.shape[1])])
                          for k in range(values.shape[1])])  # (p_k, p, m): Q'Z
    norms = np.stack([np.bincount(codes, values[:, k] ** 2, m) for k in range(values.shape[1])])
    residual = norms - np.sum(projected ** 2, axis=1)
    return bool(np.all(residual <= RANK_TOLERANCE * np.maximum(norms, 1.0)))
