"""`fay_herriot`: the area-level small-area model with known sampling variances.

    fit = fay_herriot("yi ~ ablat", bcg, sampling_variance="vi", method="REML")
    fit.to_dict()["eblup"]

y_i = x_i'β + v_i + e_i with v_i ~ N(0, A) and e_i ~ N(0, D_i), D_i known (the column
`sampling_variance`). Methods: "REML", "ML", "PM" (Fay and Herriot's moment estimator,
the Paule-Mandel equation), "HE" (Prasad-Rao unweighted least squares), "DL"
(DerSimonian-Laird); see `fay_herriot_estimators`. A negative estimate of A is set to 0
and flagged (`truncated`). EBLUPs and MSEs (Prasad-Rao; Datta-Lahiri for ML; optionally
Datta-Rao-Smith for PM): `fay_herriot_mse`. The numbers follow
metafor's rma()/blup() (fixed-effect SEs √diag((X'V⁻¹X)⁻¹), no Knapp-Hartung).
"""

from __future__ import annotations

from dataclasses import dataclass

import formulaic
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import _config  # noqa: F401  (float64)
from .errors import DataError, plain_message
from .fay_herriot_estimators import METHODS, fit_fay_herriot
from .fay_herriot_mse import predict
from .input_checks import float_values
from .model_matrices import lme4_column_names


@dataclass(frozen=True)
class FayHerriotResult:
    """A fitted Fay-Herriot model: estimates, EBLUPs and their uncertainty (numpy arrays)."""

    method: str
    fixed_names: tuple[str, ...]
    beta: np.ndarray
    beta_se: np.ndarray
    area_variance: float
    raw_area_variance: float
    truncated: bool
    area_variance_se: float
    loglik: float  # ℓ_R(Â) for REML, else ℓ(Â) (metafor's logLik, DL/HE/PM included)
    eblup: np.ndarray
    eblup_se: np.ndarray
    mse: np.ndarray
    shrinkage: np.ndarray
    direct: np.ndarray
    sampling_variance: np.ndarray

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "fixed": {"names": list(self.fixed_names), "estimate": self.beta.tolist(),
                      "se": self.beta_se.tolist()},
            "area_variance": self.area_variance,
            "raw_area_variance": self.raw_area_variance,
            "truncated": self.truncated,
            "area_variance_se": self.area_variance_se,
            "loglik": self.loglik,
            "eblup": self.eblup.tolist(),
            "eblup_se": self.eblup_se.tolist(),
            "mse": self.mse.tolist(),
            "shrinkage": self.shrinkage.tolist(),
        }

    def __str__(self) -> str:
        lines = [f"Fay-Herriot model ({self.method}), {self.eblup.size} areas",
                 f"area variance A = {self.area_variance:.6g} (SE {self.area_variance_se:.4g})"
                 + ("  [estimate below 0 set to 0]" if self.truncated else "")]
        kind = "restricted log-likelihood" if self.method == "REML" else "log-likelihood"
        lines.append(f"{kind} at the estimate of A = {self.loglik:.6g}")
        lines += [f"  {name:<20}{b:>12.6g}{se:>12.4g}"
                  for name, b, se in zip(self.fixed_names, self.beta, self.beta_se)]
        return "\n".join(lines)


def fay_herriot(formula: str, data, sampling_variance: str = "vi", method: str = "REML",
                pm_bias_correction: bool = False) -> FayHerriotResult:
    """Fit the Fay-Herriot model `formula` (response ~ area covariates) to one row per area.

    `pm_bias_correction=True` (method "PM" only): Datta, Rao & Smith's (2005) MSE, which
    also corrects for the bias of the moment estimator of A (see `fay_herriot_mse`); by
    default the PM MSE is Prasad-Rao's g1 + g2 + 2 g3.
    """
    method = _check_method(method)
    if pm_bias_correction and method != "PM":
        raise ValueError(f"pm_bias_correction applies to method='PM' only, got method={method!r}")
    y, X, names, D = _area_arrays(formula, data, sampling_variance)
    params = fit_fay_herriot(y, X, D, method)
    pred = predict(method, params, y, X, D, bool(pm_bias_correction))
    params, pred = jax.device_get((params, pred))
    loglik = float(params.loglik)
    return FayHerriotResult(
        method, names, np.asarray(params.beta), np.sqrt(np.diag(params.cov_beta)),
        float(params.area_variance), float(params.raw_area_variance), bool(params.truncated),
        float(params.area_variance_se), loglik, np.asarray(pred.eblup), np.asarray(pred.eblup_se),
        np.asarray(pred.mse), np.asarray(pred.shrinkage), np.asarray(y), np.asarray(D))


def _check_method(method) -> str:
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method.upper()


def _area_arrays(formula: str, data, sampling_variance: str):
    """y, X (formulaic; intercept named "(Intercept)"), names and D, with the checks."""
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    if not isinstance(formula, str) or "~" not in formula:
        raise ValueError(f"formula must be a string 'response ~ covariates', got {formula!r}")
    try:
        needed = sorted(formulaic.Formula(formula).required_variables)
    except Exception as error:
        raise ValueError(f"cannot parse formula {formula!r}: {plain_message(error)}") from None
    _check_columns(frame, needed + [sampling_variance], sampling_variance)
    _check_response_numeric(frame, formula)
    D = float_values(frame[sampling_variance], f"sampling-variance column {sampling_variance!r}")
    bad = ~np.isfinite(D) | (D <= 0)
    if bad.any():
        raise ValueError(f"sampling variances {sampling_variance!r} must be positive and finite: "
                         f"{int(bad.sum())} area(s) have non-positive or non-finite values "
                         f"(rows {list(frame.index[bad][:5])})")
    matrices = formulaic.model_matrix(formula, frame, na_action="raise")
    y = _response(matrices, formula)
    X = np.asarray(matrices.rhs, dtype=float)
    names = tuple(lme4_column_names(matrices.rhs.model_spec))
    bad = [name for name, column in zip(names, X.T) if not np.all(np.isfinite(column))]
    if bad:
        raise ValueError(f"covariate column(s) {bad} of {formula!r} have infinite values")
    _check_sizes(X, names)
    return jnp.asarray(y), jnp.asarray(X), names, jnp.asarray(D)


def _response(matrices, formula: str) -> np.ndarray:
    """The direct estimates y: one finite numeric column. formulaic codes a text response as
    level indicators and keeps every column of `y1 + y2 ~ x`; the first column was taken
    (a 0/1 indicator fitted silently), and an infinite y gave Â = 0 and β̂ = NaN."""
    if isinstance(matrices, formulaic.ModelMatrix):  # a right-hand side alone
        raise ValueError(f"formula {formula!r} has no response: write 'direct_estimate ~ covariates'")
    lhs = matrices.lhs
    if lhs.shape[1] != 1:
        columns = [str(c) for c in lhs.columns]
        more = " ... (a text column is coded as one column per value)" if len(columns) > 4 else ""
        raise ValueError(f"the response of {formula!r} must be one numeric column (the direct "
                         f"estimates), got {len(columns)} columns {columns[:4]}{more}")
    y = np.asarray(lhs, dtype=float)[:, 0]
    if not np.all(np.isfinite(y)):
        raise ValueError(f"the response of {formula!r} has infinite values")
    return y


def _check_response_numeric(frame: pd.DataFrame, formula: str) -> None:
    """A response read from a column of text (or categories) is an error naming it: formulaic
    codes it as one indicator per value, and a column of one text value as one 0/1 column
    that was fitted silently."""
    response = formula.split("~")[0].strip()
    dtype = frame[response].dtype if response in frame.columns else None
    if dtype is not None and not pd.api.types.is_numeric_dtype(dtype):
        kind = "text" if dtype == object or pd.api.types.is_string_dtype(dtype) else "non-numeric"
        raise DataError(f"the response of {formula!r} must be one numeric column (the direct estimates): "
                        f"{response!r} is a {kind} column ({dtype} dtype); convert it to numbers")


def _check_columns(frame: pd.DataFrame, needed: list[str], sampling_variance: str) -> None:
    for column in needed:
        if column not in frame.columns:
            role = "sampling variance" if column == sampling_variance else "formula"
            raise ValueError(f"column {column!r} ({role}) is not in the data; columns are: "
                             f"{', '.join(map(str, frame.columns))}")
    missing = {column: int(n) for column, n in frame[needed].isna().sum().items() if n}
    if missing:
        detail = ", ".join(f"{column!r} ({n})" for column, n in missing.items())
        raise ValueError(f"missing values in {detail}: every area needs its direct estimate, "
                         "covariates and sampling variance")


def _check_sizes(X: np.ndarray, names) -> None:
    m, p = X.shape
    if m <= p:
        raise ValueError(f"the Fay-Herriot model needs more areas than coefficients: {m} areas "
                         f"for {p} coefficients ({', '.join(names)})")
    if np.linalg.matrix_rank(X) < p:
        raise ValueError(f"the area covariates are collinear (rank {np.linalg.matrix_rank(X)} "
                         f"< {p} columns: {', '.join(names)})")
