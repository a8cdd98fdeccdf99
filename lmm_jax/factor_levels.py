"""Factors keep only the levels their rows use, as R's model.frame(drop.unused.levels = TRUE),
which lmer calls.

Columns are coded as R codes them (`as_factors`). A level declared but not used by the
fitting rows (a pandas Categorical's unused category, often left by filtering a frame;
`C(x, levels=[...])` naming a value absent from the data; a level whose rows were all
dropped for missing values) would otherwise give formulaic's coding an all-zero column: in
the fixed part a coefficient dropped as rank-deficient, whose level `predict` then silently
treated as the reference level (lme4 refuses it), and in a random term a covariance
parameter of no data (6 θ where lme4 fits 3, AIC off by 6).
"""

from __future__ import annotations

import pandas as pd
from formulaic.transforms import TRANSFORMS

_FORMULAIC_C = TRANSFORMS["C"]


def as_factors(frame: pd.DataFrame, keep: str | None = None) -> pd.DataFrame:
    """`frame` with its columns coded as R codes them and unused levels dropped (a new frame
    when anything changes; the caller's columns are never modified). Column `keep` (the
    response) is left as it is.

    - booleans are a factor (R's logicals: FALSE, TRUE), not formulaic's 0/1 number, which in
      `0 + b`, `(0 + b | g)` or `b:f` is another model (one column where lme4 has two);
    - pandas' nullable "string" dtype is text, as `object` and `str` columns are (formulaic
      took its values as numbers, '3' -> 3.0, or failed converting 'Male' to a float);
    - categorical columns keep only their used categories (`drop.unused.levels`)."""
    recoded = {name: _as_factor(column) for name, column in frame.items() if name != keep}
    recoded = {name: column for name, column in recoded.items() if column is not None}
    return frame.assign(**recoded) if recoded else frame


def _as_factor(column: pd.Series) -> pd.Series | None:
    """The column recoded (module docstring), or None when it is coded as it should be."""
    if column.dtype == bool:
        return column.astype(pd.CategoricalDtype([False, True])).cat.remove_unused_categories()
    if isinstance(column.dtype, pd.StringDtype):
        return column.astype(object).where(column.notna(), None)
    if isinstance(column.dtype, pd.CategoricalDtype) and len(column.cat.categories) > column.nunique():
        return column.cat.remove_unused_categories()
    return None


def C_of_used_levels(data, contrasts=None, *, levels=None, **options):
    """formulaic's `C`, with `levels=` cut to the levels `data` has (in their given order):
    R's factor(x, levels = L) followed by drop.unused.levels. The fit's coding, and so the
    encoder state that `predict` reads, holds the used levels alone."""
    if levels is not None:
        present = set(pd.unique(pd.Series(data).dropna()))
        levels = [level for level in levels if level in present]
    return _FORMULAIC_C(data, contrasts, levels=levels, **options)


def C_of_fitted_levels(data, contrasts=None, *, levels=None, **options):
    """formulaic's `C` for new data: the levels the fit used (the encoder state that
    `C_of_used_levels` left), not the formula's `levels=` list, so that new data are coded
    with the fit's columns."""
    return _FORMULAIC_C(data, contrasts, **options)


# R's factor(x) is formulaic's C(x)
FIT_CONTEXT = {"C": C_of_used_levels, "factor": C_of_used_levels}
PREDICT_CONTEXT = {"C": C_of_fitted_levels, "factor": C_of_fitted_levels}
FACTOR_CALLS = frozenset(FIT_CONTEXT)  # the calls that make a column a factor: C(x), factor(x)
