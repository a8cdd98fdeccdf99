"""Predictions for new data: Xβ̂ + Σ_k Z_k b̂_k, with b̂ = 0 for levels not seen in the fit."""

from __future__ import annotations

import ast
import copy
import warnings

import numpy as np
import pandas as pd
from formulaic.errors import DataMismatchWarning

from .design import DataError
from .errors import plain_message
from .formula_columns import categorical_call_column
from .grouping_factors import row_keys
from .factor_levels import PREDICT_CONTEXT, as_factors
from .model_matrices import lme4_column_names


def predict(result, newdata=None, random_effects: bool = True) -> np.ndarray:
    """See `FitResult.predict`."""
    design = result.design
    if newdata is None:
        return result.fitted.copy() if random_effects else design.X @ result.fixef.to_numpy()
    if not isinstance(newdata, (pd.DataFrame, dict)):
        raise DataError("newdata must be a pandas DataFrame or a dict of columns, "
                        f"got {type(newdata).__name__}")
    frame = as_factors(newdata if isinstance(newdata, pd.DataFrame) else pd.DataFrame(dict(newdata)))
    complete = _complete_rows(result, frame, random_effects)
    if not complete.all():  # lme4's predict (na.action = na.pass): NA where a covariate is missing
        out = np.full(len(frame), np.nan)
        out[complete] = predict(result, frame.loc[complete], random_effects) if complete.any() else []
        return out
    X = _matrix(design.fixed_spec, frame, "fixed part")
    names = lme4_column_names(X.model_spec)
    keep = [names.index(n) for n in design.fixed_names]
    out = np.asarray(X, dtype=float)[:, keep] @ result.fixef.to_numpy()
    if not random_effects:
        return out
    for term, modes in zip(result.report_terms, result._modes):
        missing = [f for f in term.spec.factors if f not in frame.columns]
        if missing:
            raise DataError(f"newdata lacks grouping column(s) {missing} of random term {term.spec.source!r}; "
                            "pass random_effects=False for population predictions")
        values = np.asarray(_matrix(term.model_spec, frame, f"random term {term.spec.source!r}"), dtype=float)
        position = {key: i for i, key in enumerate(term.level_keys)}
        index = np.array([position.get(key, -1) for key in row_keys(frame, term.spec.factors)], dtype=int)
        effects = np.where((index >= 0)[:, None], modes[np.maximum(index, 0)], 0.0)
        out = out + np.sum(values * effects, axis=1)
    return out


def _complete_rows(result, frame: pd.DataFrame, random_effects: bool) -> np.ndarray:
    """Rows of newdata with every covariate the fixed part (and, with `random_effects`, the
    random terms' expressions) reads present. A missing grouping value is no missing
    covariate: as in lme4, its row gets the population prediction (an unseen level)."""
    specs = [result.design.fixed_spec] + ([t.model_spec for t in result.report_terms] if random_effects else [])
    variables = sorted({v for spec in specs for v in spec.required_variables if v in frame.columns}, key=str)
    return ~frame[variables].isna().any(axis=1).to_numpy() if variables else np.ones(len(frame), bool)


def _matrix(model_spec, frame: pd.DataFrame, where: str):
    """The spec's matrix on newdata. A categorical value the fit did not have (a new level,
    or a value outside `C(x, levels=[...])`) is an error: formulaic would code it as the
    reference level, a silently wrong prediction (lme4 stops on a new level of a fixed
    factor too; missing values already raise). formulaic writes the state of a factor it
    codes into the spec's encoder state, so it gets a copy: the fit's spec is never changed
    (a text column given for a numeric one made every later prediction fail)."""
    _check_known_levels(model_spec, frame, where)
    _check_numeric_factors(model_spec, frame, where)
    own_copy = model_spec.update(encoder_state=copy.deepcopy(dict(model_spec.encoder_state)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataMismatchWarning)
            return own_copy.get_model_matrix(frame, na_action="raise", context=PREDICT_CONTEXT)
    except Exception as error:
        raise DataError(f"cannot build the {where} for newdata: {plain_message(error)}") from None


def _check_numeric_factors(model_spec, frame: pd.DataFrame, where: str) -> None:
    """Raise naming the column when a column that was numeric in the fit is not numeric in
    newdata (text, categories): formulaic would code it as a factor."""
    for factor, (kind, _) in model_spec.encoder_state.items():
        if getattr(kind, "value", kind) == "numerical" and factor in frame.columns \
                and not pd.api.types.is_numeric_dtype(frame[factor].dtype):
            raise DataError(f"newdata's column {factor!r} is {frame[factor].dtype} dtype, but it was "
                            f"numeric in the fit ({where}); convert it to numbers")


def _check_known_levels(model_spec, frame: pd.DataFrame, where: str) -> None:
    """Raise naming the column when a categorical factor of the spec's own terms (a column, or
    `C(column, ...)`) has values in newdata outside the levels it was fitted with (the spec's
    encoder state holds every part's factors: `model_matrices.formula_matrices`)."""
    own_factors = {str(factor) for term in model_spec.terms for factor in term.factors}
    for factor, (kind, state) in model_spec.encoder_state.items():
        column = _factor_column(factor, frame) if factor in own_factors else None
        if getattr(kind, "value", kind) != "categorical" or column is None or "categories" not in state:
            continue
        levels = list(state["categories"])
        present = pd.unique(frame[column].dropna())
        new = [value for value in present if value not in levels]
        if new:
            raise DataError(f"newdata's column {column!r} has value(s) {sorted(map(str, new))} that are not "
                            f"levels of {factor!r} in the fit ({[str(v) for v in levels]}), in the {where}; "
                            "the model has no coefficient for them")


def _factor_column(factor: str, frame: pd.DataFrame) -> str | None:
    """The data column a factor reads: the factor itself, or x in `C(x, ...)` or `factor(x)`."""
    if factor in frame.columns:
        return factor
    try:
        return categorical_call_column(ast.parse(factor, mode="eval").body, frame)
    except SyntaxError:
        return None
