"""Grouping factors: level labels and per-row codes, as R's `factor()` reads a column.

Levels are sorted as R sorts them (numbers as numbers, a Categorical's own order), labelled
as R's `as.character` writes them (`level_text`), and the interaction `a:b` of several
factors keeps only the combinations that occur. A level is identified by its key, the
tuple of its factors' labels, never by the joined text: the cells (a = 'p:q', b = 'r') and
(a = 'p', b = 'q:r') are two levels, whose labels are then quoted ('`p:q`:r', 'p:`q:r`').
`row_keys` gives each row's key, by which `predict` finds a new row's level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError
from .formula import RandomTermSpec


def grouping_codes(spec: RandomTermSpec, frame: pd.DataFrame) -> tuple[tuple[str, ...], np.ndarray, tuple]:
    """Level labels ('a:A' for an interaction, unique: `interaction_labels`), per-row integer
    codes, and each level's key (the tuple of its factors' labels) of a grouping factor."""
    per_factor = [factor_codes(frame[name]) for name in spec.factors]
    if len(per_factor) == 1:
        labels, codes = per_factor[0]
        keys = [(label,) for label in labels]
    else:
        keys, codes = _combined_codes(per_factor)
        labels = interaction_labels(keys)
    if len(labels) < 2:
        raise DataError(
            f"grouping factor {spec.group_name!r} in random term {spec.source!r} has only one level "
            f"({labels[0]!r}) in the data used; a random effect needs at least 2 levels")
    return tuple(labels), codes.astype(np.int32), tuple(keys)


def _combined_codes(per_factor: list[tuple[list[str], np.ndarray]]) -> tuple[list[tuple], np.ndarray]:
    """Keys (a's label, b's label, ...) and codes of the interaction of factors given as
    (labels, codes), with only the level combinations that occur, in lexicographic order of
    the factors' codes."""
    combined = np.zeros(len(per_factor[0][1]), dtype=np.int64)
    for labels, codes in per_factor:
        combined = combined * len(labels) + codes
    codes, used = pd.factorize(combined, sort=True)
    keys = []
    for key in used:
        parts = []
        for labels_k, _ in reversed(per_factor):
            key, index = divmod(int(key), len(labels_k))
            parts.append(labels_k[index])
        keys.append(tuple(reversed(parts)))
    return keys, codes


def interaction_labels(keys: list[tuple[str, ...]]) -> list[str]:
    """Labels of interaction levels: the factors' labels joined by ':' as R's `interaction`
    writes them ('p:q:r'), unless two levels would share a label; then every part holding
    ':' or '`' is quoted in backticks (a backtick doubled inside), which no two keys share."""
    joined = [":".join(key) for key in keys]
    if len(set(joined)) == len(joined):
        return joined
    return [":".join(_quoted(part) for part in key) for key in keys]


def _quoted(part: str) -> str:
    return "`" + part.replace("`", "``") + "`" if ":" in part or "`" in part else part


def row_keys(frame: pd.DataFrame, factors: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Per row, the key of its level of the grouping factor `a:b:...` (as in `RandomTerm.level_keys`)."""
    parts = [[level_text(v) for v in _label_values(frame[name])] for name in factors]
    return list(zip(*parts))


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


def factor_codes(column: pd.Series) -> tuple[list[str], np.ndarray]:
    """Sorted levels (category order for a Categorical, else sorted values: numbers as numbers,
    as R's `factor()` orders them, other values as text) and codes. Labels are `level_text`
    of the values `row_keys` reads (`_label_values`), categories included."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.cat.remove_unused_categories()
        categories = _label_values(pd.Series(column.cat.categories))
        if categories.dtype == object:
            _check_distinct_texts(column.name, categories)
        return _merge_equal_labels([level_text(c) for c in categories], column.cat.codes.to_numpy())
    values, kind = _values_and_kind(column)
    # labels are the values' text; text values are read as they are (str() of each of
    # InstEval's 4 x 73,421 took ~80 ms)
    if values.dtype.kind not in "iubf" and kind != "string":
        _check_distinct_texts(column.name, values)
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


def _check_distinct_texts(name, values: np.ndarray) -> None:
    """A clear error for a column of mixed types where distinct values share one text (the
    int 1 and the string '1'): as levels they would be one (R's factor() reads both as "1")
    or two of one label; which was meant cannot be known."""
    first_of_text: dict[str, object] = {}
    for value in pd.unique(values):
        first = first_of_text.setdefault(str(value), value)
        if first is not value:
            raise DataError(f"column {name!r} mixes types: the values {first!r} ({type(first).__name__}) "
                            f"and {value!r} ({type(value).__name__}) have the same text; convert the "
                            "column to one type (all text or all numbers)")
