"""The contrasts of lmerTest's `anova(m, type = 1 | 2 | 3)`, per fixed-effect term.

Type I (sequential, lmerTest's `get_contrasts_type1`): with X'X = U'DU (Doolittle, U unit
upper triangular), term T's rows of U test T adjusted for the terms before it in the formula.

Type II (car's marginality principle, lmerTest's `get_contrasts_type2_unfolded`): a term
contained in no other term is tested by its own coefficients (L = the rows of I at its
columns); a term T contained in others (`type3.containing_terms`) by T's rows of the
Doolittle factor of X'X with X's columns reordered [terms not containing T, T, terms
containing T], read back in X's column order: T adjusted for every term not containing it.

Type III: `type3.py`. Types I and II use the fit's own (full-rank) X, as lmerTest does; with
at most one term lmerTest gives type I for every type.
"""

from __future__ import annotations

import numbers

import numpy as np

from .model_matrices import lme4_column_names
from .type3 import containing_terms, fixed_terms, type1_contrasts, type3_contrasts

TYPES = {"1": 1, "i": 1, "2": 2, "ii": 2, "3": 3, "iii": 3}


def anova_type(value) -> int:
    """1, 2 or 3 from lmerTest's spellings (1, "1", "I", ... "III"); other values refused."""
    spelt = isinstance(value, (numbers.Integral, str)) and not isinstance(value, bool)
    key = str(value).lower() if spelt else None
    if key not in TYPES:
        raise ValueError(f"type must be 1, 2 or 3 (or 'I', 'II', 'III'), got {value!r}")
    return TYPES[key]


def term_contrasts(design, contrast_type: int) -> dict[str, np.ndarray]:
    """{term: L (rows, p)} of lmerTest's type I, II or III tests for the design's fixed part."""
    if contrast_type == 3:
        return type3_contrasts(design)
    kinds, terms = fixed_terms(design.fixed_spec)
    columns = _term_columns(design, terms)
    if contrast_type == 1 or design.X.shape[1] <= 1 or len(terms) <= 1:
        return type1_contrasts(design.X, columns)
    contained_in = containing_terms(terms, kinds)
    return {name: (np.eye(design.X.shape[1])[cols] if not contained_in[name]
                   else _type2_rows(design.X, columns, name, contained_in[name]))
            for name, cols in columns.items()}


def _term_columns(design, terms) -> dict[str, list[int]]:
    """Per term, its columns in the fit's X (columns dropped for rank deficiency left out)."""
    position = {name: j for j, name in enumerate(design.fixed_names)}
    spec_names = lme4_column_names(design.fixed_spec)
    indices = {str(t): list(v) for t, v in design.fixed_spec.term_indices.items()}
    return {str(t): [position[spec_names[j]] for j in indices[str(t)] if spec_names[j] in position]
            for t in terms}


def _type2_rows(X: np.ndarray, columns: dict, term: str, containing: list[str]) -> np.ndarray:
    """T's rows of the type I contrasts of X's columns in the order [others, T, containing T]."""
    last = columns[term] + [c for t in containing for c in columns[t]]
    order = [j for j in range(X.shape[1]) if j not in last] + last
    rows = type1_contrasts(X[:, order], {term: [order.index(c) for c in columns[term]]})[term]
    back = np.empty_like(rows)
    back[:, order] = rows
    return back
