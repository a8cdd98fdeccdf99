"""Host side of residual structures: parse nlme-like strings and build per-group tables.

    correlation = "ar1(~ 1 | g)" | "ar1(~ k | g)" | "car1(~ t | g)" | "cs(~ 1 | g)"
                | "un(~ 1 | g)" | "un(~ k | g)" | "exp(~ x + y | g)" | "exp(~ x + y | g, nugget=True)"
    weights     = "ident(~ 1 | f)" | "power(~ x)"

Without `| g` the whole data set is one group. Rows of a group keep the data's order; the
groups become a padded (n_groups, size) table of row indices with a mask, and per slot the
coordinates the correlation needs (positions, times or locations), so that everything
on the device has static shapes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .design import DataError, Design
from .grouping_factors import factor_codes
from .formula import FormulaError
from . import residual_structures as rs

CORRELATIONS = ("ar1", "car1", "cs", "un", "exp")
VARIANCES = ("ident", "power")
_CALL = re.compile(r"^\s*([A-Za-z0-9_]+)\s*\(\s*~(.*)\)\s*$", re.S)


@dataclass(frozen=True)
class StructureSpec:
    """A parsed structure string: its keyword, covariates, grouping factors and options."""

    kind: str
    covariates: tuple[str, ...]
    groups: tuple[str, ...]
    options: tuple[tuple[str, str], ...]
    text: str


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ResidualArrays:
    """Per group: row indices (n_groups, size) (padding: 0), mask, coordinates
    (n_groups, size, d); per row: variance-function level codes and covariate."""

    index: jnp.ndarray
    mask: jnp.ndarray
    coords: jnp.ndarray
    var_codes: jnp.ndarray
    var_covariate: jnp.ndarray


def looks_like_structure(text) -> bool:
    """True for a string such as 'ident(~ 1 | f)' (a column name never has a '~')."""
    return isinstance(text, str) and _CALL.match(text) is not None


def parse_structure(text: str, allowed: tuple[str, ...], what: str) -> StructureSpec:
    """'exp(~ x + y | g, nugget=True)' -> StructureSpec('exp', ('x', 'y'), ('g',), (('nugget', 'True'),))."""
    match = _CALL.match(text) if isinstance(text, str) else None
    if match is None or match.group(1) not in allowed:
        raise FormulaError(f"{what} {text!r} is not one of: "
                           + ", ".join(f"{k}(~ ... | group)" for k in allowed))
    kind, inner = match.group(1), match.group(2)
    form, *rest = [part.strip() for part in inner.split(",")]
    lhs, _, group = form.partition("|")
    covariates = tuple(v.strip() for v in lhs.split("+") if v.strip() not in ("", "1"))
    groups = tuple(g.strip() for g in group.split(":") if g.strip()) if group else ()
    options = []
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq:
            raise FormulaError(f"option {item!r} in {what} {text!r} must be written key=value")
        options.append((key.strip(), value.strip()))
    return StructureSpec(kind, covariates, groups, tuple(options), text)


def used_rows(data, design: Design) -> pd.DataFrame:
    """The rows of `data` the design kept (same order), by position: `.loc` of the labels
    took every row of a repeated label (a frame of 352 rows for 176, then a broadcasting
    error deep inside the fit)."""
    from .design import _as_frame

    return _as_frame(data).iloc[design.row_positions]


def _column(frame: pd.DataFrame, name: str, spec: StructureSpec) -> pd.Series:
    if name not in frame.columns:
        raise DataError(f"column {name!r} (used in {spec.text!r}) is not in the data")
    column = frame[name]
    if column.isna().any():
        raise DataError(f"column {name!r} (used in {spec.text!r}) has missing values in the rows used")
    return column


def _numeric(frame, name, spec) -> np.ndarray:
    column = _column(frame, name, spec)
    try:
        values = column.to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"column {name!r} in {spec.text!r} must be numeric") from None
    if not np.all(np.isfinite(values)):
        raise DataError(f"column {name!r} in {spec.text!r} has non-finite values")
    return values


def group_codes(frame: pd.DataFrame, spec: StructureSpec) -> np.ndarray:
    """Per row the code of its correlation group (all 0 without a grouping factor)."""
    combined = np.zeros(len(frame), dtype=np.int64)
    for name in spec.groups:
        labels, codes = factor_codes(_column(frame, name, spec))
        combined = combined * len(labels) + codes
    return np.unique(combined, return_inverse=True)[1].reshape(-1)


def group_table(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_groups, size) row indices in data order within each group (padding 0) and mask."""
    n_groups = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=n_groups)
    order = np.argsort(codes, kind="stable")
    slot = np.arange(len(codes)) - np.repeat(np.cumsum(counts) - counts, counts)
    index = np.zeros((n_groups, counts.max()), dtype=np.int32)
    mask = np.zeros((n_groups, counts.max()), dtype=bool)
    index[codes[order], slot] = order
    mask[codes[order], slot] = True
    return index, mask


def _positions(frame, spec, index, mask, integer: bool) -> np.ndarray:
    """Per slot: the row's order within its group, or its covariate (checked integer and
    unique within the group when `integer`)."""
    if not spec.covariates:
        return np.broadcast_to(np.arange(index.shape[1], dtype=float), index.shape).copy()
    if len(spec.covariates) != 1:
        raise FormulaError(f"{spec.text!r}: a time or position covariate is one variable")
    values = _numeric(frame, spec.covariates[0], spec)[index]
    if integer and not np.all(values[mask] == np.round(values[mask])):
        raise DataError(f"{spec.text!r}: covariate {spec.covariates[0]!r} must hold integers")
    for row, m in zip(values, mask):
        if len(np.unique(row[m])) < m.sum():
            raise DataError(f"{spec.text!r}: covariate {spec.covariates[0]!r} must have unique "
                            "values within each group")
    return np.where(mask, values, 0.0)


def _flag(spec: StructureSpec, key: str) -> bool:
    options = dict(spec.options)
    unknown = set(options) - {key}
    if unknown:
        raise FormulaError(f"unknown option(s) {sorted(unknown)} in {spec.text!r}")
    value = options.get(key, "False")
    if value not in ("True", "False", "TRUE", "FALSE"):
        raise FormulaError(f"option {key}={value!r} in {spec.text!r} must be True or False")
    return value.upper() == "TRUE"


def build_correlation(frame: pd.DataFrame, spec: StructureSpec | None):
    """-> (Correlation, index, mask, coords (n_groups, size, d))."""
    if spec is None:
        n = len(frame)
        return rs.NoCorrelation(), np.arange(n, dtype=np.int32)[:, None], np.ones((n, 1), bool), \
            np.zeros((n, 1, 1))
    if spec.kind != "exp" and spec.options:
        raise FormulaError(f"unknown option(s) {[k for k, _ in spec.options]} in {spec.text!r}")
    index, mask = group_table(group_codes(frame, spec))
    if spec.kind == "exp":
        if not spec.covariates:
            raise FormulaError(f"{spec.text!r}: the exponential correlation needs coordinates (~ x + y | g)")
        coords = np.stack([_numeric(frame, c, spec)[index] for c in spec.covariates], axis=-1)
        coords = np.where(mask[:, :, None], coords, 0.0)
        return rs.Exponential(_typical_distance(coords, mask, spec), _flag(spec, "nugget")), index, mask, coords
    if spec.kind == "cs":
        if spec.covariates:
            raise FormulaError(f"{spec.text!r}: compound symmetry takes no covariate (~ 1 | g)")
        return rs.CompoundSymmetry(index.shape[1]), index, mask, np.zeros(index.shape + (1,))
    positions = _positions(frame, spec, index, mask, integer=spec.kind in ("ar1", "un"))
    if spec.kind == "un":
        ranks = np.unique(positions[mask], return_inverse=True)[1].reshape(-1)
        positions = np.zeros(index.shape)
        positions[mask] = ranks
        structure = rs.General(int(positions[mask].max()) + 1)
    elif spec.kind == "ar1":
        lags = np.abs(positions[:, :, None] - positions[:, None, :]) * (mask[:, :, None] & mask[:, None, :])
        structure = rs.AR1(int(lags.max()))
    else:
        structure = rs.CAR1()
    return structure, index, mask, positions[:, :, None]


def _typical_distance(coords: np.ndarray, mask: np.ndarray, spec: StructureSpec) -> float:
    """The median within-group distance (the exponential range's starting value). Two rows
    of a group at one location are an error, as in nlme ("cannot have zero distances in
    corSpatial"): the correlation matrix would be singular (without a nugget the fit came
    back all NaN, silently)."""
    d = np.sqrt(((coords[:, :, None, :] - coords[:, None, :, :]) ** 2).sum(-1))
    pairs = mask[:, :, None] & mask[:, None, :] & ~np.eye(mask.shape[1], dtype=bool)
    if np.any(pairs & (d == 0)):
        group = int(np.flatnonzero(np.any(pairs & (d == 0), axis=(1, 2)))[0])
        raise DataError(f"{spec.text!r}: two rows of correlation group {group + 1} have the same location "
                        "(zero distance); the exponential correlation needs distinct locations within a group")
    positive = d[pairs]
    if positive.size == 0:
        raise DataError("the exponential correlation needs two distinct locations within a group")
    return float(np.median(positive))


def build_variance(frame: pd.DataFrame, spec: StructureSpec | None, row_order: np.ndarray | None = None):
    """-> (VarianceFunction, codes (n,), covariate (n,)). `row_order`: the order in which
    nlme meets the rows (`nlme_row_order`), which decides varIdent's reference level."""
    n = len(frame)
    codes, covariate = np.zeros(n, dtype=np.int32), np.ones(n)
    if spec is None:
        return rs.ConstantVariance(), codes, covariate
    if spec.options:
        raise FormulaError(f"unknown option(s) in {spec.text!r}")
    if spec.kind == "ident":
        if spec.covariates or len(spec.groups) != 1:
            raise FormulaError(f"{spec.text!r}: write varIdent as ident(~ 1 | factor)")
        labels, codes = _in_order_of_appearance(*factor_codes(_column(frame, spec.groups[0], spec)), row_order)
        if len(labels) < 2:
            raise DataError(f"{spec.text!r}: factor {spec.groups[0]!r} has only one level")
        return rs.IdentVariance(tuple(labels)), np.asarray(codes, dtype=np.int32), covariate
    if len(spec.covariates) != 1 or spec.groups:
        raise FormulaError(f"{spec.text!r}: write varPower as power(~ x) with one covariate")
    covariate = _numeric(frame, spec.covariates[0], spec)
    if np.any(covariate == 0):
        raise DataError(f"{spec.text!r}: covariate {spec.covariates[0]!r} has zeros (|x|^δ)")
    return rs.PowerVariance(), codes, covariate


def nlme_row_order(design: Design, frame: pd.DataFrame, correlation: StructureSpec | None) -> np.ndarray | None:
    """The order of the rows as nlme holds them, None for the data's own: lme sorts the rows
    by its grouping factors, outermost first (`order(grps)`), gls by the correlation's
    grouping factor when it has one; both keep the data's order within a group. Levels sort
    as the terms' codes do (R's factor levels)."""
    if design.terms:
        outer_first = sorted(design.terms, key=lambda term: term.n_levels)
        return np.lexsort([term.codes for term in reversed(outer_first)])  # lexsort: last key first
    if correlation is not None and correlation.groups:
        return np.argsort(group_codes(frame, correlation), kind="stable")
    return None


def _in_order_of_appearance(labels: list[str], codes: np.ndarray,
                            row_order: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    """Levels ordered by their first row in `row_order` (`nlme_row_order`), as nlme's varIdent
    orders its strata (`unique(strata)`), so its first stratum, the reference of the SD
    ratios, is the level of the first row nlme meets. gls of Orthodont: Male first (nlme
    3.1-162: sigma 2.488, Female/Male 1.049), where the sorted levels gave Female (sigma
    2.609, Male 0.954); lme with (1 | Subject): the rows sorted by Subject, F01 first, so
    Female."""
    appearance = pd.unique(codes if row_order is None else codes[row_order])
    rank = np.empty(len(labels), dtype=np.int64)
    rank[appearance] = np.arange(len(appearance))
    return [labels[i] for i in appearance], rank[codes]


def inherit_grouping(spec: StructureSpec, design: Design) -> StructureSpec:
    """A correlation without a grouping factor (`ar1(~ 1)`) in a model with random terms
    takes the grouping of the innermost one (the term with the most levels), as nlme's lme
    does: lme(weight ~ Time * Diet, random = ~ 1 | Rat, correlation = corAR1(form = ~ 1))
    equals corAR1(form = ~ 1 | Rat) (nlme 3.1-162: logLik -568.1238772 both). Without
    random terms (gls) the whole data set stays one group."""
    if spec.groups or not design.terms:
        return spec
    innermost = max(design.terms, key=lambda term: term.n_levels)
    return dataclasses.replace(spec, groups=tuple(innermost.spec.factors))


def check_nested(design: Design, index: np.ndarray, mask: np.ndarray, spec) -> None:
    """Every random term's grouping factor must be constant within each correlation group
    (nlme: the correlation's groups are nested in the random effects' groups)."""
    for term in design.terms:
        codes = term.codes[index]
        if np.any(mask & (codes != codes[:, :1])):
            raise DataError(f"correlation groups of {spec.text!r} are not nested in the grouping "
                            f"factor {term.group!r} of random term {term.spec.source!r}")
