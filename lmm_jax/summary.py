"""The text of lme4's `summary(merMod)`, for `FitResult.summary()`."""

from __future__ import annotations

import numpy as np
import pandas as pd


def format_summary(result) -> str:
    parts = [_header(result), _criterion(result), _scaled_residuals(result), _random_effects(result),
             _counts(result), _fixed_effects(result), _fixed_correlation(result), _notes(result)]
    return "\n".join(part.rstrip("\n") + "\n" for part in parts if part)


def _header(result) -> str:
    how = "REML" if result.method == "REML" else "maximum likelihood "
    lines = [f"{_model_kind(result)} fit by {how} ['lmm_jax']",
             f"Formula: {result.design.formula.text}"]
    if result.model.data_name:
        lines.append(f"   Data: {result.model.data_name}")
    return "\n".join(lines) + "\n"


def _model_kind(result) -> str:
    """lme4's / nlme's name of the model: random terms make a mixed model; without them a
    residual structure makes it generalised least squares, and nothing a linear model."""
    if result.design.terms:
        return "Linear mixed model"
    if getattr(result, "correlation_parameters", None) is not None or \
            getattr(result, "variance_function", None) is not None:
        return "Generalized least squares"
    return "Linear model"


def _criterion(result) -> str:
    if result.method == "REML":
        return f"REML criterion at convergence: {result.objective:.1f}\n"
    table = pd.DataFrame([[result.aic, result.bic, result.loglik, result.objective,
                           result.nobs - result.df_model]],
                         columns=["AIC", "BIC", "logLik", "deviance", "df.resid"])
    return table.to_string(index=False, float_format=lambda v: f"{v:.1f}") + "\n"


def _scaled_residuals(result) -> str:
    scaled = result.residuals * np.sqrt(result.design.weights) / result.sigma
    quantiles = np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0])
    table = pd.DataFrame([quantiles], columns=["Min", "1Q", "Median", "3Q", "Max"])
    return "Scaled residuals:\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}") + "\n"


def _random_effects(result) -> str:
    rows = []
    for term, rel in zip(result.report_terms, result._rel_cov):
        cov = result.sigma ** 2 * rel
        sd = np.sqrt(np.diag(cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd)
        for i, name in enumerate(term.column_names):
            corrs = " ".join(f"{corr[i, j]:5.2f}" for j in range(i))
            rows.append([term.name if i == 0 else "", name, f"{cov[i, i]:.4g}", f"{sd[i]:.4g}", corrs])
    residual = "Residual (known)" if result.model.shape.known_scale else "Residual"
    rows.append([residual, "", f"{result.sigma ** 2:.4g}", f"{result.sigma:.4g}", ""])
    header = ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    if not any(r[4] for r in rows):
        header, rows = header[:4], [r[:4] for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = [" " + " ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in [header] + rows]
    from .structure_report import summary_lines

    return "Random effects:\n" + "\n".join(lines) + "\n" + summary_lines(result)


def _counts(result) -> str:
    groups = "; ".join(f"{g}, {n}" for g, n in result.ngroups.items())
    if not groups:
        return f"Number of obs: {result.nobs}\n"
    return f"Number of obs: {result.nobs}, groups:  {groups}\n"


def _fixed_effects(result) -> str:
    table = pd.DataFrame({"Estimate": result.fixef, "Std. Error": result.se,
                          "t value": result.fixef / result.se})
    digits = max(0, 4 - int(np.floor(np.log10(max(np.min(np.abs(result.se)), 1e-300)))) - 1)
    digits = min(digits, 6)
    columns = {"Estimate": digits, "Std. Error": digits, "t value": 3}
    formatters = {name: (lambda d: lambda v: f"{v:.{d}f}")(d) for name, d in columns.items()}
    return "Fixed effects:\n" + table.to_string(formatters=formatters) + "\n"


def _fixed_correlation(result) -> str:
    if len(result.fixef) < 2:
        return ""
    vcov = result.vcov.to_numpy()
    sd = np.sqrt(np.diag(vcov))
    corr = vcov / np.outer(sd, sd)
    short = [abbreviate(name) for name in result.fixef.index]
    rows = [[f"{corr[i, j]:.3f}" if j < i else "" for j in range(len(short) - 1)]
            for i in range(len(short))]
    table = pd.DataFrame(rows[1:], index=list(result.fixef.index)[1:], columns=short[:-1])
    return "Correlation of Fixed Effects:\n" + table.to_string() + "\n"


def _notes(result) -> str:
    notes = []
    if result.singular:
        notes.append("boundary (singular) fit: see help('isSingular')")
    if not result.converged:
        notes.append(f"convergence: {result.convergence_message}")
    if result.design.n_dropped:
        notes.append(f"{result.design.n_dropped} rows with missing values were dropped")
    if result.design.dropped_columns:
        notes.append("fixed-effect model matrix is rank deficient; dropped: "
                     + ", ".join(result.design.dropped_columns))
    return "\n".join(notes)


def abbreviate(name: str, length: int = 6) -> str:
    """R's `abbreviate(name, 6)` as lme4 uses it for the correlation table: drop lower-case
    vowels from the right, then lower-case letters, then truncate ('(Intercept)' -> '(Intr)')."""
    chars = list(name)
    for removable in ("aeiou", "abcdefghijklmnopqrstuvwxyz"):
        i = len(chars) - 1
        while len(chars) > length and i > 0:
            if chars[i] in removable:
                del chars[i]
            i -= 1
    return "".join(chars[:max(length, 0)]) if len(chars) > length else "".join(chars)
