"""Host-side model construction: formula + data -> the arrays of y = Xβ + Zα + ε.

Everything here is numpy/pandas/formulaic work done once per model. It checks the
input (columns present, missing values, one-level factors, rank deficiency) and
returns a `Design` of plain arrays plus the names needed to report results. The
random-effects matrix Z is never formed: each term keeps, per row, the index of its
level (`codes`) and the row of its own small model matrix (`values`, n x p_k).
"""

from __future__ import annotations

import ast
import builtins
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import formulaic
import numpy as np
import pandas as pd

from .formula import FormulaError, ParsedFormula, RandomTermSpec, parse_formula
from .covariance_structures import Diagonal
from .custom_structures import structure_for_term
from .known_covariance import check_known, known_term
from .factor_levels import FACTOR_CALLS, FIT_CONTEXT, as_factors
from .structures import CholeskyFactor, CovarianceStructure

RANK_TOLERANCE = 1e-7  # as lme4's chkRank.drop.cols / R's qr()


class DataError(ValueError):
    """Input data that cannot be fitted; the message names the column, level or term."""


@dataclass(frozen=True)
class RandomTerm:
    """One random-effect term after expansion, with its per-row level codes and values.

    `name` is lme4's VarCorr group name ("Subject", "Subject.1" for a second term on the
    same factor); `group` is the grouping factor's name ("Subject", "cask:batch").
    """

    name: str
    group: str
    spec: RandomTermSpec
    levels: tuple[str, ...]
    codes: np.ndarray
    values: np.ndarray
    column_names: tuple[str, ...]
    structure: CovarianceStructure
    model_spec: object = field(repr=False, compare=False)
    report: "RandomTerm | None" = field(default=None, repr=False, compare=False)
    loadings: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def reported(self) -> "RandomTerm":
        """The term as results report it: itself, or for a known relationship matrix the
        ordinary (1 | g) term over g's levels (`known_covariance.py`)."""
        return self if self.report is None else self.report

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def dim(self) -> int:
        return len(self.column_names)


@dataclass(frozen=True)
class Design:
    """The model's arrays and names, built once on the host."""

    formula: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    fixed_names: tuple[str, ...]
    terms: tuple[RandomTerm, ...]
    weights: np.ndarray
    n_dropped: int
    fixed_spec: object = field(repr=False, compare=False)
    dropped_columns: tuple[str, ...] = ()
    row_positions: np.ndarray = field(default=None, repr=False, compare=False)  # kept rows' positions in data

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_fixed(self) -> int:
        return int(self.X.shape[1])

    def least_squares_residuals(self, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y - Xb₀, b₀) per row y of `ys` (B, n), b₀ y's least-squares fit on X, in float64.
        What depends on y only through its residuals from X's span (θ̂, σ̂, SE(β̂), the
        (restricted) likelihood, β̂ - b₀, moment estimators' sums of squares) is computed
        from these without the digits a response of large mean cancels in y'y and X'y."""
        coef = np.linalg.lstsq(self.X, np.asarray(ys, dtype=float).T, rcond=None)[0]  # (p, B)
        return ys - (self.X @ coef).T, coef.T


def build_design(formula: str, data, weights=None, known_scale: bool = False, known=None,
                 allow_fixed_only: bool = False) -> Design:
    """Parse `formula`, check `data` and build the design (host side, once per model).

    `known`: {grouping factor: K}, a known relationship matrix for a term (1 | g), whose
    covariance is then σ_g² K (`known_covariance.py`). `allow_fixed_only`: a formula without
    random terms is accepted (a gls fit with residual structures, `residual_model.py`).

    `known_scale`: the residual variances 1/weights are known (σ² not estimated), so the
    checks that random effects are not confounded with the residual are not made.
    """
    parsed = parse_formula(formula)
    if not parsed.random and not allow_fixed_only:
        raise FormulaError(f"formula {formula!r} has no random terms (such as '(1 | group)'); "
                           "a model without random effects is an ordinary least-squares fit")
    given = _as_frame(data)
    used = _used_columns(parsed, given)
    frame, kept = _drop_missing(given, used, weights, _outside_given_levels(parsed, given))
    n_dropped = len(given) - len(kept)
    frame = as_factors(frame, keep=parsed.response)
    prior_weights = _prior_weights(weights, frame)
    fixed_built, terms_built = _model_matrices(parsed, frame, given if n_dropped else None)
    terms = _random_terms(parsed, frame, check_known(known, {t.group_name for t in parsed.random}), terms_built)
    y, X, names, spec = _fixed_part(parsed, frame, fixed_built)
    X, names, dropped = _drop_rank_deficient(X, names)
    if X.shape[1] == 0:  # the evaluators' small [X y] factor needs a column of X (lme4 allows none)
        raise FormulaError(f"formula {formula!r} has no fixed effects (its fixed part is {parsed.fixed!r}); "
                           "lmm_jax needs at least one fixed-effect column: keep the intercept or add a covariate")
    if not known_scale:
        _check_sizes(terms, y.shape[0], parsed)
    return Design(parsed, y, X, tuple(names), tuple(terms), prior_weights, n_dropped, spec,
                  tuple(dropped), kept)


def _as_frame(data) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict):
        try:
            return pd.DataFrame({key: np.asarray(value) for key, value in data.items()})
        except ValueError as error:
            raise DataError(f"the columns of `data` must all have the same length: {error}") from None
    raise DataError(f"data must be a pandas DataFrame or a dict of arrays, got {type(data).__name__}")


@lru_cache(maxsize=256)
def _formulaic(text: str) -> formulaic.Formula:
    """formulaic's parse of `text`, cached: parsing costs more than building a small matrix."""
    return formulaic.Formula(text)


def _used_columns(parsed: ParsedFormula, frame: pd.DataFrame) -> list[str]:
    """The data columns the formula needs; a missing one is an error naming the term."""
    needed: dict[str, str] = {}
    try:
        fixed_vars = _formula_variables(parsed.fixed, frame)
    except Exception as error:  # formulaic's parse errors
        raise FormulaError(f"cannot parse the fixed part {parsed.fixed!r}: {error}") from None
    for var in sorted(fixed_vars):
        needed.setdefault(var, f"fixed part {parsed.fixed!r}")
    for spec in parsed.random:
        try:
            expr_vars = _formula_variables(spec.expr, frame)
        except Exception as error:
            raise FormulaError(f"cannot parse {spec.expr!r} in random term {spec.source!r}: {error}") from None
        for var in sorted(expr_vars) + list(spec.factors):
            needed.setdefault(var, f"random term {spec.source!r}")
    for var, where in needed.items():
        if var not in frame.columns:
            raise DataError(f"column {var!r} (used in {where}) is not in the data; "
                            f"columns are: {', '.join(map(str, frame.columns))}")
    return list(needed)


def _formula_variables(text: str, frame: pd.DataFrame) -> set[str]:
    """The data columns formula `text` reads: formulaic's `required_variables`, and the
    columns named inside its stateful transforms (`center(x)`, `scale(x)`, `poly(x, 2)`,
    `bs(x)`), which formulaic 1.2.2 leaves out (its introspection of them fails and it
    returns no variables; fixed upstream in formulaic PR #268, not yet released). Python's
    builtins that formulaic reports (`list`, `range` in `C(x, levels=list(range(5)))`) are no
    columns unless the data has one of that name, and dotted names are read whole
    (`_dotted_columns`)."""
    columns = set(frame.columns)
    required = set()
    for name in _formulaic(text).required_variables:
        dotted = _dotted_columns(name, text, columns)
        if name in columns or not (dotted or hasattr(builtins, name) or name in FACTOR_CALLS):
            required.add(name)
        required |= dotted
    return required | (_python_factor_names(text) & columns)


def _dotted_columns(name: str, text: str, columns: set) -> set:
    """The columns `name.rest` (R's dotted names, `my.days`) that `text` names: formulaic
    reports `my.days` and `` `my.days` `` as a variable 'my', though it reads the column."""
    return {column for column in columns if isinstance(column, str) and column.startswith(f"{name}.")
            and re.search(rf"(?<![\w.]){re.escape(column)}(?![\w.])", text)}


@lru_cache(maxsize=256)
def _python_factor_names(text: str) -> frozenset[str]:
    """Every name the Python factors of `text` read as a value, not the functions they call:
    not `center` in `center(x)`, nor `np` in `np.log(x)` (a data column named `np` would
    otherwise be handed to formulaic and hide numpy from it)."""
    names = set()
    for tree in _python_factor_trees(text):
        called = {id(_callee_root(node.func)) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called}
    return frozenset(names)


def _callee_root(func: ast.expr) -> ast.expr:
    """The name a called expression starts from: `np` for `np.log`, `f` for `f`."""
    while isinstance(func, ast.Attribute):
        func = func.value
    return func


@lru_cache(maxsize=256)
def _python_factor_trees(text: str) -> tuple[ast.Expression, ...]:
    """The parsed Python expressions of the Python factors of formula `text` (not those in
    formulaic's own quoting, `a b`, which are no Python: formulaic reports their variables)."""
    formula = _formulaic(text)
    parts = (formula.lhs, formula.rhs) if hasattr(formula, "lhs") else (formula,)
    trees = []
    for factor in (f for part in parts for term in part for f in term.factors):
        if factor.eval_method == factor.EvalMethod.PYTHON:
            try:
                trees.append(ast.parse(factor.expr, mode="eval"))
            except SyntaxError:
                pass
    return tuple(trees)


def _outside_given_levels(parsed: ParsedFormula, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """For each `C(column, levels=[...])` with literal levels, the rows whose value is none
    of them (a label -> row flags). R's factor(x, levels=) makes such values NA and lmer drops
    their rows; formulaic would code them as the reference level, a silently different fit."""
    out = {}
    for text in (parsed.fixed, *(spec.expr for spec in parsed.random)):
        for tree in _python_factor_trees(text):
            for node in ast.walk(tree):
                column = categorical_call_column(node, frame)
                levels = None if column is None else _literal_levels(node)
                if levels is not None:
                    values = frame[column]
                    flags = ~values.isin(levels).to_numpy() & ~pd.isna(values.to_numpy())
                    out[f"{column} outside the levels of {ast.unparse(node)}"] = flags
    return out


def categorical_call_column(node: ast.AST, frame: pd.DataFrame) -> str | None:
    """x when `node` is a call `C(x, ...)` (or `factor(x)`) on a column x of `frame`, else None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FACTOR_CALLS
            and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in frame.columns):
        return node.args[0].id
    return None


def _literal_levels(node: ast.Call):
    """The levels of a `C(column, ..., levels=<literal>)` call node, else None."""
    for keyword in node.keywords:
        if keyword.arg == "levels":
            try:
                return list(ast.literal_eval(keyword.value))
            except (ValueError, TypeError, SyntaxError):
                return None
    return None


def _drop_missing(frame: pd.DataFrame, used: list[str], weights,
                  outside_levels: dict | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Keep the used columns of rows without missing values (a new frame; the caller's is
    untouched), and those rows' positions in `frame` (positions, not labels: an index with
    repeated labels would select every row of a label). Missing values are found column by
    column on the columns' arrays (`pd.isna` knows NaN, None, NA and NaT), not by a
    frame-wide `isna` on a copy (sleepstudy: 0.46 -> 0.3 ms). `outside_levels`: more rows
    counted as missing, by label (`_outside_given_levels`)."""
    sub = _columns(frame, used)
    missing = {col: pd.isna(frame[col].to_numpy()) for col in used}
    missing.update(outside_levels or {})
    if weights is not None and not isinstance(weights, str):
        w = np.asarray(weights, dtype=float)
        if w.shape != (len(frame),):
            raise DataError(f"weights must have one value per row ({len(frame)}), got shape {w.shape}")
        missing["__weights__"] = np.isnan(w)
        sub = sub.assign(__weights__=w)
    elif isinstance(weights, str):
        if weights not in frame.columns:
            raise DataError(f"weights column {weights!r} is not in the data")
        sub = sub.assign(__weights__=frame[weights].to_numpy(dtype=float))
        missing["__weights__"] = np.isnan(sub["__weights__"].to_numpy())
    bad_rows = np.logical_or.reduce(list(missing.values()))
    n_dropped = int(bad_rows.sum())
    if n_dropped:
        counts = {col: int(flags.sum()) for col, flags in missing.items() if flags.any()}
        detail = ", ".join(f"{'weights' if col == '__weights__' else col} ({n})" for col, n in counts.items())
        warnings.warn(f"dropped {n_dropped} of {len(frame)} rows with missing values in: {detail}",
                      stacklevel=4)
        sub = sub.loc[~bad_rows]
    if len(frame) == 0:
        raise DataError("data has no rows")
    if len(sub) == 0:
        raise DataError("no rows left after dropping rows with missing values")
    return sub, np.flatnonzero(~bad_rows)


def _columns(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """A new frame of `frame`'s columns `names`: by position with `take` when the column
    names are unique (sleepstudy: 0.04 ms against 0.19 ms for `frame[names]`, whose label
    lookup is slow in pandas 3), else by label."""
    if frame.columns.is_unique:  # each get_loc is then an int (get_indexer costs 0.06 ms here)
        return frame.take([frame.columns.get_loc(name) for name in names], axis=1)
    return frame[names]


def _prior_weights(weights, frame: pd.DataFrame) -> np.ndarray:
    if weights is None:
        return np.ones(len(frame))
    w = np.array(frame["__weights__"], dtype=float)  # our own copy, whatever pandas shares
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise DataError("prior weights must be finite and positive")
    return w


def _model_matrices(parsed: ParsedFormula, frame: pd.DataFrame, given: pd.DataFrame | None = None):
    """formulaic's matrices of the fixed part and of every random term's expression, from one
    structured formula: one call shares formulaic's set-up and its evaluated factors between
    the parts (sleepstudy: 2.0 ms against 3.0 ms for two calls). Returns the fixed part's
    (ModelMatrices, rhs ModelSpec) and each term's (ModelMatrix, ModelSpec), or None and
    Nones when formulaic fails, so that the part-by-part calls raise the error naming the
    part that failed.

    An expression with the terms of the fixed part's right-hand side or of an earlier random
    term (`Days` in `y ~ Days + (Days | g)`, `1` in `(1 | a) + (1 | b)`) is the same matrix
    on the same rows, so it is not materialised again (each part costs formulaic ~0.25 ms).

    A factor evaluated for an earlier part comes from formulaic's cache, and the later part's
    ModelSpec then lacks its state (a factor's levels, `center`'s mean), which `predict` on
    new data needs; so every part's spec gets the states of all parts (keyed by expression:
    one expression, one state, since every part saw the same rows).

    `given`: the data before rows with missing values were dropped, from which stateful
    transforms take their state (`_states_before_dropping`)."""
    first_with_terms = {str(_formulaic(parsed.fixed).rhs): "fixed"}  # terms -> first part with them
    sources = [first_with_terms.setdefault(str(_formulaic(spec.expr)), f"random{i}")
               for i, spec in enumerate(parsed.random)]
    read_response = _response_column(parsed, frame) is not None
    parts = {"fixed": parsed.fixed_rhs if read_response else parsed.fixed,
             **{f"random{i}": spec.expr for i, spec in enumerate(parsed.random) if sources[i] == f"random{i}"}}
    try:
        matrices = _materialise(_structured_formula(tuple(parts.items())), frame, given)
    except Exception:
        return None, [None] * len(parsed.random)
    lhs, rhs = (None, matrices["fixed"]) if read_response else (matrices["fixed"].lhs, matrices["fixed"].rhs)
    random = [rhs if source == "fixed" else matrices[source] for source in sources]
    specs = [rhs.model_spec] + [matrix.model_spec for matrix in random]
    states = {name: {key: value for spec in specs for key, value in getattr(spec, name).items()}
              for name in ("encoder_state", "transform_state")}
    specs = [spec.update(**states) for spec in specs]
    return (lhs, rhs, specs[0]), list(zip(random, specs[1:]))


def _response_column(parsed: ParsedFormula, frame: pd.DataFrame) -> str | None:
    """The response's column when the response is the bare name of a numeric column: y is
    then read from it (its values as floats, as formulaic's left-hand side gives them), not
    materialised (formulaic's left-hand side costs ~0.25 ms). Else None (`log(y)`, a
    logical or text column: formulaic's matrix, and its error for a factor response)."""
    name = parsed.response
    column = frame[name] if name.isidentifier() and name in frame.columns else None
    return name if isinstance(column, pd.Series) and column.dtype.kind in "iuf" else None


def _materialise(formula: formulaic.Formula, frame: pd.DataFrame, given: pd.DataFrame | None = None):
    """formulaic's model matrices of `formula` on `frame` (missing values raise), as numpy
    arrays: its pandas output builds a DataFrame per part (mathachieve: 2.4 -> 1.9 ms).
    Column names are in each matrix's `model_spec.column_names`, and the specs kept for
    `predict` materialise new data as numpy too. Formulas see this module's names (`np.log(x)`)
    and `C` keeps the levels the rows use (`factor_levels.C_of_used_levels`). With `given`
    (the rows before missing values were dropped), stateful transforms take their state from
    it (`_states_before_dropping`)."""
    context = fit_context()
    matrices = formulaic.model_matrix(formula, frame, na_action="raise", output="numpy", context=context)
    if given is None:
        return matrices
    states = _states_before_dropping(_leaf_specs(matrices.model_spec), given, len(frame))
    if not states:
        return matrices
    specs = matrices.model_spec
    with_states = (lambda spec: spec.update(transform_state={**spec.transform_state, **{
        name: state for name, state in states.items() if name in spec.transform_state}}))
    specs = with_states(specs) if isinstance(specs, formulaic.ModelSpec) else specs._map(with_states)
    return formulaic.model_matrix(specs, frame, na_action="raise", output="numpy", context=context)


def fit_context() -> dict:
    """The names formulas see at fit time: this module's (`np`) and `factor_levels`'s `C`."""
    return {**globals(), **FIT_CONTEXT}


def _leaf_specs(specs) -> list:
    return [specs] if isinstance(specs, formulaic.ModelSpec) else list(specs._flatten())


def _states_before_dropping(specs: list, given: pd.DataFrame, n_kept: int) -> dict:
    """{transform: state} of each stateful transform (`scale(x)`, `center(x)`, `poly(x, 2)`)
    evaluated on every row of `given` where its own variables are present: R's model.frame
    evaluates `scale(x)` on the data before na.omit drops rows missing the response or
    another variable (scale's mean then counts rows formulaic's, after the drop, did not:
    sleepstudy with 27 responses missing gave scale(Days)'s slope 29.19 where lme4 gives
    31.57). Transforms whose rows are the `n_kept` kept ones are left out."""
    names = {name for spec in specs for name in spec.transform_state}
    states = {}
    for name in sorted(names):
        variables = sorted(_formula_variables(name, given))
        if not variables:
            continue
        rows = given[variables].notna().all(axis=1).to_numpy()
        if rows.sum() == n_kept:  # its rows (a superset of the kept ones) are the kept ones
            continue
        single = formulaic.model_matrix(f"0 + {name}", given.loc[rows, variables], na_action="raise",
                                        output="numpy", context=fit_context())
        states[name] = single.model_spec.transform_state[name]
    return states


@lru_cache(maxsize=256)
def _structured_formula(parts: tuple[tuple[str, str], ...]) -> formulaic.Formula:
    """One formulaic formula with a part per (name, text), each parsed as `_formulaic` parses
    it alone (a part given as text would be parsed without the default intercept)."""
    return formulaic.Formula({name: _formulaic(text) for name, text in parts})


def lme4_term_order(level_counts: list[int]) -> list[int]:
    """The order of lme4's `mkReTrms`: where some term has more levels than the one before
    it, `rev(order(nl))`, decreasing numbers of levels with ties in reverse formula order
    (`(1 | a) + (1 | c) + (0 + x | c)` with a smaller than c: c's slope, c's intercept, a);
    otherwise the formula's order. Terms are named ("c", "c.1") in this order, as lme4's are."""
    n = len(level_counts)
    if not any(later > earlier for earlier, later in zip(level_counts, level_counts[1:])):
        return list(range(n))
    return sorted(range(n), key=lambda i: (-level_counts[i], -i))


def _random_terms(parsed: ParsedFormula, frame: pd.DataFrame, known: dict, matrices: list) -> list[RandomTerm]:
    """Build each random term, ordered as lme4 orders them (decreasing number of levels);
    a term with a known relationship matrix becomes one level (so it sorts last).
    `matrices`: each term's (matrix, spec) from `_model_matrices` (None: build it here)."""
    built = []
    for spec, matrix in zip(parsed.random, matrices):
        levels, codes = _grouping_codes(spec, frame)
        values, columns, model_spec = _term_matrix(spec, frame, matrix)
        structure = structure_for_term(spec.structure, columns, values, spec.source)
        built.append((spec, levels, codes, values, columns, structure, model_spec))
    built = [built[i] for i in lme4_term_order([len(item[1]) for item in built])]
    seen: dict[str, int] = {}
    terms = []
    for spec, levels, codes, values, columns, structure, model_spec in built:
        group = spec.group_name
        count = seen.get(group, 0)
        seen[group] = count + 1
        name = group if count == 0 else f"{group}.{count}"
        term = RandomTerm(name, group, spec, levels, codes, values, columns, structure, model_spec)
        terms.append(known_term(term, known[group]) if group in known else term)
    return sorted(terms, key=lambda t: -t.n_levels)


def _grouping_codes(spec: RandomTermSpec, frame: pd.DataFrame) -> tuple[tuple[str, ...], np.ndarray]:
    """Level labels ('a:A' for an interaction) and per-row integer codes of a grouping factor."""
    per_factor = [_factor_codes(frame[name]) for name in spec.factors]
    labels, codes = per_factor[0] if len(per_factor) == 1 else _combined_codes(per_factor)
    if len(labels) < 2:
        raise DataError(
            f"grouping factor {spec.group_name!r} in random term {spec.source!r} has only one level "
            f"({labels[0]!r}) in the data used; a random effect needs at least 2 levels")
    return tuple(labels), codes.astype(np.int32)


def _combined_codes(per_factor: list[tuple[list[str], np.ndarray]]) -> tuple[list[str], np.ndarray]:
    """Labels 'a:A' and codes of the interaction of factors given as (labels, codes), with
    only the level combinations that occur, in lexicographic order of the factors' codes."""
    combined = np.zeros(len(per_factor[0][1]), dtype=np.int64)
    for labels, codes in per_factor:
        combined = combined * len(labels) + codes
    codes, used = pd.factorize(combined, sort=True)
    labels = []
    for key in used:
        parts = []
        for labels_k, _ in reversed(per_factor):
            key, index = divmod(int(key), len(labels_k))
            parts.append(labels_k[index])
        labels.append(":".join(reversed(parts)))
    return labels, codes


def row_labels(frame: pd.DataFrame, factors: tuple[str, ...]) -> np.ndarray:
    """Per row, the label of its level of the grouping factor `a:b:...` (as in `RandomTerm.levels`)."""
    parts = [np.asarray([level_text(v) for v in _label_values(frame[name])], dtype=object) for name in factors]
    out = parts[0]
    for part in parts[1:]:
        out = out + ":" + part
    return out


NUMERIC_KINDS = ("integer", "floating", "mixed-integer-float", "boolean")  # pandas' infer_dtype


def level_text(value) -> str:
    """A level's label: a float as R's `as.character` writes it, to 15 significant digits
    ('15.45' for 15.450000000000001), anything else as `str`."""
    return format(value, ".15g") if isinstance(value, (float, np.floating)) else str(value)


def _label_values(column: pd.Series):
    """A grouping column's values as levels are read from them (`_values_and_kind`)."""
    return _values_and_kind(column)[0]


def _values_and_kind(column: pd.Series):
    """(values, pandas' `infer_dtype` of an object column that does not hold numbers, else
    None): numbers held as objects as a numeric array, whole floats as integers (their text
    '2', not '2.0'). The kind is inferred once (~0.4 ms for InstEval's 73,421 rows)."""
    values = column.to_numpy()
    kind = pd.api.types.infer_dtype(values, skipna=False) if values.dtype == object else None
    if kind in NUMERIC_KINDS:
        values, kind = np.asarray(values.tolist()), None
    if values.dtype.kind == "f" and np.all(values == np.round(values)):
        return values.astype(np.int64), kind
    return values, kind


def _factor_codes(column: pd.Series) -> tuple[list[str], np.ndarray]:
    """Sorted levels (category order for a Categorical, else sorted values: numbers as numbers,
    as R's `factor()` orders them, other values as text) and codes. Labels are `level_text`
    of the values `row_labels` reads (`_label_values`), categories included."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.cat.remove_unused_categories()
        categories = _label_values(pd.Series(column.cat.categories))
        return _merge_equal_labels([level_text(c) for c in categories], column.cat.codes.to_numpy())
    values, kind = _values_and_kind(column)
    # labels are the values' text; text values are read as they are (str() of each of
    # InstEval's 4 x 73,421 took ~80 ms)
    if values.dtype.kind not in "iubf" and kind != "string":
        values = np.asarray([str(v) for v in values], dtype=object)
    codes, uniques = pd.factorize(values, sort=True)  # hashing: ~5x np.unique's sort on strings
    labels = [level_text(u) for u in uniques]
    # distinct integers or texts have distinct labels; distinct floats may share one
    return _merge_equal_labels(labels, codes) if values.dtype.kind == "f" else (labels, codes)


def _merge_equal_labels(labels: list[str], codes: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Levels of one text as one level, the first's place kept: R's `factor()` matches values
    by their text (15.45 and 15.450000000000001 are one level), and `predict` finds a row's
    level by its label."""
    merged, unique = pd.factorize(np.asarray(labels, dtype=object))
    if len(unique) == len(labels):
        return labels, codes
    return list(unique), merged[codes]


def _term_matrix(spec: RandomTermSpec, frame: pd.DataFrame, built=None):
    """(values, column names, ModelSpec) of the term's expression; `built`: its (matrix,
    spec) from `_model_matrices` (None: materialise it here)."""
    if built is None:
        try:
            matrix = _materialise(_formulaic(spec.expr), frame)
        except Exception as error:
            raise FormulaError(f"cannot build the model matrix of {spec.expr!r} in random term "
                               f"{spec.source!r}: {error}") from None
        built = (matrix, matrix.model_spec)
    matrix, model_spec = built
    columns = tuple(_lme4_name(c) for c in matrix.model_spec.column_names)
    if not columns:
        raise FormulaError(f"random term {spec.source!r} has no columns (an empty left-hand side)")
    values = np.array(matrix, dtype=float)  # a copy: terms of one expression share `matrix`
    _check_finite(values, columns, f"random term {spec.source!r}")
    return values, columns, model_spec


def _fixed_part(parsed: ParsedFormula, frame: pd.DataFrame, built=None):
    """(y, X, column names, the rhs ModelSpec); `built`: the part's (lhs ModelMatrix, or None
    for a response read from its column (`_response_column`), rhs ModelMatrix, rhs spec)
    from `_model_matrices` (None: materialise it here)."""
    _check_factor_levels(parsed.fixed, frame)
    if built is None:
        try:
            matrices = _materialise(_formulaic(parsed.fixed), frame)
        except Exception as error:
            raise FormulaError(f"cannot build the fixed-effects model matrix of {parsed.fixed!r}: {error}") from None
        built = (matrices.lhs, matrices.rhs, matrices.rhs.model_spec)
    lhs, rhs, model_spec = built
    if lhs is not None and lhs.shape[1] != 1:
        raise FormulaError(f"the response {parsed.response!r} must be one numeric column, "
                           f"got {lhs.shape[1]} columns {list(lhs.model_spec.column_names)}")
    y = np.array(frame[parsed.response] if lhs is None else lhs[:, 0], dtype=float)  # a copy
    if not np.all(np.isfinite(y)):
        raise DataError(f"the response {parsed.response!r} has non-finite values (inf, or NaN after a transform)")
    X = np.asarray(rhs, dtype=float)
    names = [_lme4_name(c) for c in rhs.model_spec.column_names]
    _check_finite(X, names, f"fixed part {parsed.fixed!r}")
    return y, X, names, model_spec


def _check_factor_levels(fixed: str, frame: pd.DataFrame) -> None:
    """A text/categorical column used as a factor needs two levels (contrasts are undefined otherwise)."""
    for var in _formulaic(fixed).rhs.required_variables:
        if var not in frame.columns:  # a builtin formulaic reports (`_formula_variables`)
            continue
        column = frame[var]
        is_factor = column.dtype.kind in "OSUb" or isinstance(column.dtype, pd.CategoricalDtype) \
            or pd.api.types.is_string_dtype(column.dtype)
        if is_factor and column.nunique() < 2:
            raise DataError(f"factor {var!r} in the fixed part {fixed!r} has only one level "
                            f"({column.iloc[0]!r}) in the data used; drop it from the formula")


def _check_finite(matrix: np.ndarray, names, where: str) -> None:
    bad = ~np.all(np.isfinite(matrix), axis=0)
    if bad.any():
        cols = [name for name, b in zip(names, bad) if b]
        raise DataError(f"non-finite values (inf or NaN) in column(s) {cols} of the {where}")


def _lme4_name(column: str) -> str:
    return "(Intercept)" if column == "Intercept" else str(column)


def _drop_rank_deficient(X: np.ndarray, names: list[str]):
    """Keep columns left to right while they add rank (R's qr with tol 1e-7); warn naming the rest.

    Column j adds rank when its residual on the columns before it is longer than 1e-7 of its
    norm; that residual's length is |R_jj| of X's unpivoted QR, so a full-rank X (the usual
    case) is one QR (`_adds_rank_everywhere`) and only a deficient one takes the column loop."""
    if _adds_rank_everywhere(X):
        return X.copy(), list(names), []  # a copy, as X[:, kept] is: X may be formulaic's own array
    kept: list[int] = []
    basis = np.zeros((X.shape[0], 0))
    for j in range(X.shape[1]):
        column = X[:, j]
        norm = np.linalg.norm(column)
        residual = column - basis @ (basis.T @ column)
        if norm > 0 and np.linalg.norm(residual) > RANK_TOLERANCE * norm:
            basis = np.column_stack([basis, residual / np.linalg.norm(residual)])
            kept.append(j)
    dropped = [names[j] for j in range(X.shape[1]) if j not in kept]
    if dropped:
        n = len(dropped)
        warnings.warn(f"fixed-effect model matrix is rank deficient so dropping {n} "
                      f"column{'s' if n > 1 else ''} / coefficient{'s' if n > 1 else ''}: "
                      f"{', '.join(dropped)}", stacklevel=4)
    return X[:, kept], [names[j] for j in kept], dropped


def _adds_rank_everywhere(X: np.ndarray) -> bool:
    """Whether every column of X adds rank (`_drop_rank_deficient`): |R_jj| > 1e-7 ||X_j||."""
    if X.shape[1] == 0 or X.shape[1] > X.shape[0]:
        return X.shape[1] == 0
    norms = np.linalg.norm(X, axis=0)
    return bool(np.all(np.abs(np.diag(np.linalg.qr(X, mode="r"))) > RANK_TOLERANCE * norms) and np.all(norms > 0))


def _check_sizes(terms: list[RandomTerm], n: int, parsed: ParsedFormula) -> None:
    """lme4's checks: each factor needs fewer levels than rows, and fewer random effects than rows.

    Both guard the estimate of σ²; a model with a known residual scale skips them (in the
    Fay-Herriot model every area is its own level). The second applies to unstructured and
    diagonal terms only: a structured Σ (ar1, cs, ... with few parameters) beside the residual is
    identified with one observation per random effect, as in glmmTMB."""
    for term in terms:
        if term.loadings is not None:
            continue  # a known relationship matrix identifies one level per row
        if term.n_levels >= n:
            raise DataError(
                f"grouping factor {term.group!r} in {term.spec.source!r} has {term.n_levels} levels "
                f"for {n} observations; the random effects would be confounded with the residual")
        q = term.n_levels * term.dim
        if q >= n and isinstance(term.structure, (CholeskyFactor, Diagonal)):  # others are identified
            raise DataError(
                f"number of observations ({n}) <= number of random effects ({q}) for term "
                f"{term.spec.source!r} in {parsed.text!r}; the random-effects parameters and the "
                "residual variance are unidentifiable")
