"""Tests of linear hypotheses Lβ = 0 on small-sample df: `FitResult.test` and `FitResult.anova`.

    F = (Lβ̂)'(LCL')⁻¹(Lβ̂)/q on (q, ν) df

with ν from Satterthwaite (`satterthwaite.py`, lmerTest's contestMD) or Kenward-Roger
(`kenward_roger.py`, pbkrtest's KRmodcomp: F scaled by λ, Φ_A in place of C). `anova` tests
each fixed-effect term with lmerTest's type I, II or III contrasts (`anova_types.py`); its `Sum Sq` is
lmerTest's F σ̂² q (unscaled F for Kenward-Roger) and `Mean Sq` = F σ̂².
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .kenward_roger import kenward_roger_f_test
from .satterthwaite import satterthwaite_f_test
from .small_sample import on_variance_scale

METHODS = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger", "kr": "Kenward-Roger"}


def contrast_matrix(L, names) -> np.ndarray:
    """L as a (q, p) float array: an array (q, p), one vector (p,), or a dict/Series/DataFrame
    keyed by fixed-effect names (missing names are 0). Checks shape, values and row rank."""
    names = list(names)
    if isinstance(L, dict):
        L = pd.Series(L, dtype=float)
    if isinstance(L, (pd.Series, pd.DataFrame)):
        labels = L.index if isinstance(L, pd.Series) else L.columns
        unknown = [k for k in labels if k not in names]
        if unknown:
            raise ValueError(f"unknown fixed effects in the contrast: {unknown}; the fixed effects are {names}")
        L = (L.reindex(names, fill_value=0.0) if isinstance(L, pd.Series)
             else L.reindex(columns=names, fill_value=0.0)).to_numpy(dtype=float)
    try:
        L = np.array(L, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("the contrast L must be numeric: an array (q, p), a vector (p,), or a dict "
                         "of fixed-effect names to coefficients") from None
    if L.ndim == 1:
        L = L[None, :]
    if L.ndim != 2 or L.shape[1] != len(names) or L.shape[0] == 0:
        raise ValueError(f"the contrast L must have shape (q, {len(names)}) (one column per fixed "
                         f"effect {names}), got shape {L.shape}")
    if not np.all(np.isfinite(L)):
        raise ValueError("the contrast L has non-finite entries")
    rank = np.linalg.matrix_rank(L)
    if rank < L.shape[0]:
        raise ValueError(f"the contrast L has {L.shape[0]} rows but rank {rank}: drop the "
                         "linearly dependent rows")
    return L


def check_method(ddf, shape) -> str:
    """The method's canonical name; Kenward-Roger needs a REML fit on the variance scale."""
    key = ddf.lower() if isinstance(ddf, str) else None
    if key not in METHODS:
        raise ValueError(f"ddf must be 'Satterthwaite' or 'Kenward-Roger', got {ddf!r}")
    if METHODS[key] == "Kenward-Roger" and not (shape.reml and on_variance_scale(shape)):
        raise ValueError("Kenward-Roger's df need a REML fit with unstructured random terms "
                         "(as pbkrtest and lmerTest); use ddf='Satterthwaite'")
    return METHODS[key]


def f_test(L: np.ndarray, beta: np.ndarray, terms, method: str) -> dict:
    """F, num_df, den_df, p_value of Lβ = 0 for a checked L and method."""
    from scipy import stats  # scipy.stats takes 0.3 s to import: only when needed
    if method == "Kenward-Roger":
        out = kenward_roger_f_test(L, beta, terms.kenward_roger)
    else:
        out = satterthwaite_f_test(L, beta, terms.satterthwaite)
    out["p_value"] = float(stats.f.sf(out["F"], out["num_df"], out["den_df"]))
    out["method"] = method
    return out


def contrast_test(result, L, ddf: str = "Satterthwaite") -> pd.Series:
    """`FitResult.test`: the F test of Lβ = 0 with `ddf` denominator df."""
    method = check_method(ddf, result.model.shape)
    matrix = contrast_matrix(L, result.fixef.index)
    out = f_test(matrix, result.fixef.to_numpy(), result.small_sample_terms(), method)
    # floats in a float Series named after the method: an object Series (the method's
    # name beside the numbers) printed p = 1.99e-09 as 0.0
    return pd.Series({k: v for k, v in out.items() if k != "method"}, dtype=float, name=out["method"])


def anova_table(result, ddf: str = "Satterthwaite", type=3) -> pd.DataFrame:
    """lmerTest's `anova(m, type)`: per fixed-effect term its type I, II or III F test
    (`anova_types.py`)."""
    from .anova_types import anova_type, term_contrasts

    contrast_type = anova_type(type)
    method = check_method(ddf, result.model.shape)
    beta, terms = result.fixef.to_numpy(), result.small_sample_terms()
    rows = {}
    for name, L in term_contrasts(result.design, contrast_type).items():
        if L.shape[0] == 0:  # nothing left to test (lmerTest: an empty row)
            rows[name] = dict.fromkeys(["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"], np.nan)
            continue
        out = f_test(L, beta, terms, method)
        unscaled = out["F"] / out.get("F_scaling", 1.0)
        mean_sq = unscaled * result.sigma ** 2
        rows[name] = {"Sum Sq": mean_sq * out["num_df"], "Mean Sq": mean_sq, "NumDF": out["num_df"],
                      "DenDF": out["den_df"], "F value": out["F"], "Pr(>F)": out["p_value"]}
    return pd.DataFrame.from_dict(rows, orient="index")
