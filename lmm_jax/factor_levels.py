"""Factors keep only the levels their rows use, as R's model.frame(drop.unused.levels = TRUE),
which lmer calls.

A level declared but not used by the fitting rows (a pandas Categorical's unused category,
often left by filtering a frame; `C(x, levels=[...])` naming a value absent from the data;
a level whose rows were all dropped for missing values) would otherwise give formulaic's
coding an all-zero column: in the fixed part a coefficient dropped as rank-deficient, whose
level `predict` then silently treated as the reference level (lme4 refuses it), and in a
random term a covariance parameter of no data (6 θ where lme4 fits 3, AIC off by 6).
"""

from __future__ import annotations

import pandas as pd
from formulaic.transforms import TRANSFORMS

_FORMULAIC_C = TRANSFORMS["C"]


def drop_unused_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each categorical column's unused categories removed (a new frame when
    there are any; the columns are the caller's otherwise, and never modified)."""
    unused = [name for name, column in frame.items()
              if isinstance(column.dtype, pd.CategoricalDtype)
              and len(column.cat.categories) > column.nunique(dropna=True)]
    if not unused:
        return frame
    return frame.assign(**{name: frame[name].cat.remove_unused_categories() for name in unused})


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


FIT_CONTEXT = {"C": C_of_used_levels}
PREDICT_CONTEXT = {"C": C_of_fitted_levels}
