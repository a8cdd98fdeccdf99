"""lmerTest's type III contrasts for the fixed-effect terms (its `get_contrasts_type3`).

For treatment-coded X (formulaic's default) lmerTest expresses each term's full dummy coding
(`~ 0 + term`, every level) in X's coefficients, L₀ = (X⁺ R)' with R the stacked full codings
(and the intercept), then, from the highest-order term down, replaces a term's columns of L₀
by their residuals on the columns of the terms containing it (T ⊂ T₂: T₂ has all of T's
variables and more, and the same numeric variables, counting only a term's variables at 1 in
R's factors table: `_contrast_coded_variables`). A term's contrast is its columns of L₀
read at X's own columns (rows with all |entries| ≤ 1e-8 dropped). With a single term lmerTest
uses type I instead: the term's rows of U, X'X = U'DU (Doolittle, U unit upper triangular,
from the fit's own X). X coded otherwise (`C(x, contr.sum)`, `contr.poly`): the contrasts L_t
of the treatment-coded X_t, mapped to X's coefficients, L = L_t X_t⁺X, as lmerTest does.

X⁺R is computed on a synthetic frame holding every combination of factor levels, with
random numeric values: where R lies in the span of X (every formula whose terms are all
contained in higher-order ones by R's rules, e.g. `a * b + c`) this is exactly lmerTest's
data-based result; otherwise lmerTest's contrasts depend on the data and this module refuses.
A rank-deficient X (missing cells) is handled on the data's own rows, as lmerTest does.
"""

from __future__ import annotations

import ast
import itertools
import re
import warnings

import formulaic
import numpy as np
import pandas as pd

from .design import full_rank_columns
from .errors import plain_message
from .model_matrices import fit_context
from .factor_levels import FACTOR_CALLS, PREDICT_CONTEXT

TOLERANCE = 1e-8


def fixed_terms(spec) -> tuple[dict, list]:
    """{variable: categories or None (numeric)} and the non-intercept terms of the fixed spec."""
    kinds = {}
    for name, (kind, state) in spec.encoder_state.items():
        kinds[name] = list(state["categories"]) if str(kind.value) == "categorical" else None
    terms = [t for t in spec.terms if str(t) != "1"]
    return kinds, terms


def _term_variables(term) -> set:
    return {str(f) for f in term.factors}


def _contrast_coded_variables(variables: dict) -> dict:
    """Per term, its variables whose entry in R's `attr(terms, "factors")` is 1: v in T is 1
    when T without v is a term of the model or empty, else 2 (in `z + x + x:g2`, x:g2 has g2
    at 1 and x at 2). lmerTest's `term_contain` reads only the 1 entries, so x is not contained
    in x:g2 and its test is of x's own coefficient."""
    present = {frozenset(v) for v in variables.values()}
    return {name: {v for v in vs if not (vs - {v}) or frozenset(vs - {v}) in present}
            for name, vs in variables.items()}


def _synthetic_frame(spec, kinds: dict, repeats: int = 3) -> pd.DataFrame:
    """Every combination of factor levels, `repeats` rows each (more where that gives fewer
    than 2p + 3 rows for X's p columns: with 3 rows, `y ~ x * z`'s X had rank 3 of 4 and
    X⁺R was a projection, not I), numeric variables in [1, 3]."""
    rng = np.random.default_rng(20240601)
    factors = {}
    for var in sorted(spec.required_variables):
        levels = [v for k, v in kinds.items() if v is not None and re.search(rf"\b{re.escape(var)}\b", k)]
        if levels:
            factors[var] = levels[0]
    cells = list(itertools.product(*factors.values())) or [()]
    repeats = max(repeats, -(-(2 * len(spec.column_names) + 3) // len(cells)))
    rows = [dict(zip(factors, cell)) for cell in cells for _ in range(repeats)]
    frame = pd.DataFrame(rows, index=range(len(rows)))
    for name, levels in factors.items():
        frame[name] = pd.Categorical(frame[name], categories=levels)
    for name in sorted(set(spec.required_variables) - set(factors)):
        frame[name] = rng.uniform(1.0, 3.0, size=len(rows))
    return frame


def _column_map(spec, terms) -> dict:
    indices = {str(t): list(v) for t, v in spec.term_indices.items()}
    return {str(t): indices[str(t)] for t in terms}


def type1_contrasts(X: np.ndarray, columns: dict) -> dict:
    """lmerTest's type I rows: U from X'X = U'DU (the unit upper-triangular Doolittle factor)."""
    chol = np.linalg.cholesky(X.T @ X)
    unit_upper = (chol / np.diag(chol)).T
    return {name: unit_upper[cols] for name, cols in columns.items()}


def type3_contrasts(design) -> dict[str, np.ndarray]:
    """{term: L (rows, p)} of lmerTest's type III tests, for the design's fixed part.

    Factors coded otherwise than by treatment contrasts (`C(x, contr.sum)`, `contr.poly`)
    are handled as lmerTest's `get_contrasts_type3` handles them: the contrasts of the
    treatment-coded X_t, mapped to X's coefficients by L = L_t X_t⁺X (Xβ = X_tβ_t)."""
    spec = design.fixed_spec
    kinds, terms = fixed_terms(spec)
    columns = _column_map(spec, terms)
    if design.dropped_columns:
        return _rank_deficient_contrasts(design, kinds, terms, columns)
    try:
        frame = _synthetic_frame(spec, kinds)
        X = np.asarray(spec.get_model_matrix(frame, context=PREDICT_CONTEXT), dtype=float)
    except Exception as error:
        raise _unbuildable(error) from None
    if X.shape[1] <= 1 or len(terms) <= 1:
        return type1_contrasts(design.X, columns)
    X_t, full = _treatment_matrices(spec, terms, frame)
    to_x, *_ = np.linalg.lstsq(X_t, X, rcond=None)  # X = X_t to_x: β_t = to_x β
    if X_t.shape[1] != X.shape[1] or not np.allclose(X_t @ to_x, X, atol=1e-8 * max(1.0, np.abs(X).max())):
        raise NotImplementedError("the treatment-coded fixed part does not span X's columns; use result.test")
    return _mapped(_treatment_contrasts(X_t, full, [columns[str(t)] for t in terms], _has_intercept(spec),
                                        terms, kinds), columns, to_x)


def _rank_deficient_contrasts(design, kinds: dict, terms, columns: dict) -> dict[str, np.ndarray]:
    """lmerTest's type III contrasts when X lost columns (a factorial with missing cells):
    computed, as lmerTest computes them, on the data's own rows (the synthetic frame of all
    cells would have no missing cell), with the treatment-coded X_t reduced to full rank as
    X was, then mapped to X's kept coefficients; lmerTest's warning names the missing cells."""
    spec = design.fixed_spec
    if design.frame is None or len(terms) <= 1:
        raise NotImplementedError("type III contrasts of this rank-deficient fixed part are not implemented; "
                                  "test the remaining coefficients with result.test")
    X_t, full = _treatment_matrices(spec, terms, design.frame)
    kept = full_rank_columns(X_t)
    position = {j: i for i, j in enumerate(kept)}
    kept_columns = [[position[j] for j in columns[str(t)] if j in position] for t in terms]
    L_t = _treatment_contrasts(X_t[:, kept], full, kept_columns, _has_intercept(spec), terms, kinds)
    to_x, *_ = np.linalg.lstsq(X_t[:, kept], design.X, rcond=None)
    warnings.warn(f"Missing cells for: {', '.join(design.dropped_columns)}. Interpret type III hypotheses with care.",
                  stacklevel=5)  # the caller of FitResult.anova
    return _mapped(L_t, columns, to_x)


def _treatment_matrices(spec, terms, frame: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    """(X_t, the terms' full dummy codings) of the fixed part coded by treatment contrasts
    (`_treatment_coded`) on `frame`; formulaic's failures as `_unbuildable`."""
    try:
        treatment_terms = [_treatment_coded(t) for t in terms]
        X_t = _matrix(" + ".join(["1" if _has_intercept(spec) else "0"] + treatment_terms), frame)
        return X_t, [_matrix(f"0 + {t}", frame) for t in treatment_terms]
    except Exception as error:
        raise _unbuildable(error) from None


def _unbuildable(error: Exception) -> NotImplementedError:
    return NotImplementedError(f"cannot build type III contrasts for this fixed part "
                               f"({plain_message(error)}); "
                               "use result.test with your own L")


def _mapped(L_t: list, columns: dict, to_x: np.ndarray) -> dict[str, np.ndarray]:
    """{term: L_t X_t⁺X} over X's coefficients, rows with all |entries| ≤ `TOLERANCE` dropped."""
    out = {}
    for name, L in zip(columns, L_t):
        L = L @ to_x
        out[name] = L[np.abs(L).sum(axis=1) > TOLERANCE]
    return out


def _has_intercept(spec) -> bool:
    return any(str(t) == "1" for t in spec.terms)


def _matrix(formula: str, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(formulaic.model_matrix(formula, frame, context=fit_context()), dtype=float)


def _treatment_coded(term) -> str:
    """The term with every `C(x, <contrasts>, levels=...)` / `factor(x, ...)` call's contrasts
    dropped (so treatment-coded, as formulaic codes a bare factor), levels kept."""
    def rewrite(factor) -> str:
        tree = ast.parse(str(factor.expr), mode="eval")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FACTOR_CALLS:
                node.args = node.args[:1]
                node.keywords = [k for k in node.keywords if k.arg == "levels"]
        return ast.unparse(tree)
    return ":".join(rewrite(factor) for factor in term.factors)


def _treatment_contrasts(X: np.ndarray, full: list, columns: list, has_intercept: bool, terms, kinds) -> list:
    """Per term, its L_t over the treatment-coded X's coefficients (module docstring): L₀ =
    (X⁺R)', orthogonalised, read at the full codings' columns that are X's own columns."""
    R = np.column_stack(([np.ones(X.shape[0])] if has_intercept else []) + full)
    coef, *_ = np.linalg.lstsq(X, R, rcond=None)
    if not np.allclose(X @ coef, R, atol=1e-8 * max(1.0, np.abs(R).max())):
        raise NotImplementedError("lmerTest's type III contrasts of this formula depend on the data "
                                  "(a term's full coding is outside the span of X); use result.test")
    L0 = coef.T
    _orthogonalise(L0, terms, dict(zip((str(t) for t in terms), columns)), kinds)
    at_x = [int(np.flatnonzero(np.all(np.isclose(R, X[:, [j]]), axis=0))[0]) for j in range(X.shape[1])]
    return [L0[at_x][:, cols].T for cols in columns]


def containing_terms(terms, kinds: dict) -> dict[str, list[str]]:
    """lmerTest's `containment`: per term, the terms containing it (T ⊂ T₂: T₂ has all of T's
    contrast-coded variables and more, and the same numeric ones; module docstring)."""
    variables = _contrast_coded_variables({str(t): _term_variables(t) for t in terms})
    numerics = {k: {v for v in vs if kinds.get(v) is None} for k, vs in variables.items()}
    return {term: [t for t in variables if variables[term] < variables[t]
                   and numerics[term] == numerics[t]] for term in variables}


def _orthogonalise(L0: np.ndarray, terms, columns: dict, kinds: dict) -> None:
    """From the highest order down: a term's columns -> residuals on its containing terms'."""
    order = {str(t): len(_term_variables(t)) for t in terms}
    contained_in = containing_terms(terms, kinds)
    for term in sorted(order, key=lambda k: -order[k]):  # by order: all variables
        containing = contained_in[term]
        if not containing:
            continue
        basis = L0[:, [c for t in containing for c in columns[t]]]
        target = L0[:, columns[term]]
        fitted = basis @ np.linalg.lstsq(basis, target, rcond=None)[0]
        L0[:, columns[term]] = target - fitted
