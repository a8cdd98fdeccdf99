"""The text of lme4's `summary(merMod)`, for `FitResult.summary()`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .r_format import abbreviate_unique, format_numbers, r_coefficient_name, round_half_even, zapsmall

DIGITS = 4  # lme4's print.summary.merMod: max(3, getOption("digits") - 3)


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
    if result.design.weights_name is not None and not result.model.shape.known_scale:
        lines.append(f"Weights: {result.design.weights_name}")  # as lme4 prints the weights argument
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
    """lme4's `.prt.resids`: the quantiles zapped to 5 digits, printed with 4."""
    scaled = result.residuals * np.sqrt(result.design.weights) / result.sigma
    quantiles = zapsmall(np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0]), DIGITS + 1)
    return "Scaled residuals:\n" + _named_row(["Min", "1Q", "Median", "3Q", "Max"],
                                             format_numbers(quantiles, DIGITS)) + "\n"


def _named_row(names: list[str], texts: list[str]) -> str:
    """R's print of a named vector: names over values, each right-aligned to the wider."""
    widths = [max(len(n), len(t)) for n, t in zip(names, texts)]
    return "\n".join(" ".join(x.rjust(w) for x, w in zip(line, widths)) for line in (names, texts))


def _random_effects(result) -> str:
    """lme4's `formatVC`: Variance and Std.Dev. columns each printed as R prints a vector
    with 4 digits, correlations rounded to 2 decimals."""
    names, variances, corr_texts = [], [], []
    for term, rel in zip(result.report_terms, result._rel_cov):
        cov = result.sigma ** 2 * rel
        sd = np.sqrt(np.diag(cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd)
        width = max(len(_correlation(c, 0)) for c in corr.ravel())  # R formats the term's matrix at once
        for i, name in enumerate(term.column_names):
            names.append([term.name if i == 0 else "", name])
            variances.append(cov[i, i])
            corr_texts.append(" ".join(_correlation(corr[i, j], width) for j in range(i)))
    names.append(["Residual (known)" if result.model.shape.known_scale else "Residual", ""])
    variances.append(result.sigma ** 2)
    corr_texts.append("")
    variance_texts = format_numbers(variances, DIGITS)
    sd_texts = format_numbers(np.sqrt(variances), DIGITS)
    rows = [[*n, v, s, c] for n, v, s, c in zip(names, variance_texts, sd_texts, corr_texts)]
    header = ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    if not any(r[4] for r in rows):
        header, rows = header[:4], [r[:4] for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = [" " + " ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in [header] + rows]
    from .structure_report import summary_lines

    return "Random effects:\n" + "\n".join(lines) + "\n" + summary_lines(result)


def _correlation(value: float, width: int) -> str:
    """A correlation rounded to 2 decimals (R prints -0.0004 as 0.00), NaN where undefined."""
    return f"{round_half_even(value, 2):{width}.2f}" if np.isfinite(value) else "NaN".rjust(width)


def _counts(result) -> str:
    groups = "; ".join(f"{g}, {n}" for g, n in result.ngroups.items())
    if not groups:
        return f"Number of obs: {result.nobs}\n"
    return f"Number of obs: {result.nobs}, groups:  {groups}\n"


def _fixed_effects(result) -> str:
    """R's `printCoefmat` with lme4's 4 digits: estimates and SEs rounded to the decimals
    that show 4 digits of the smallest of them (at least 1) and printed together as R
    prints a vector (fixed or scientific notation: 1.047e-05, not 0.000010); t values
    rounded to 3 decimals; an entry printed as 0 that is not 0 printed again on its own."""
    estimates, se = result.fixef.to_numpy(), result.se.to_numpy()
    both = np.concatenate([estimates, se])
    finite = np.abs(both[np.isfinite(both) & (both != 0)])
    smallest = 1 + np.floor(np.log10(finite.min())) if finite.size else 1
    rounded = round_half_even(both, int(max(1, DIGITS - smallest)))
    texts = _nonzero_kept(format_numbers(rounded, DIGITS), both)
    t_texts = format_numbers(round_half_even(estimates / se, max(1, min(5, DIGITS - 1))), DIGITS)
    p = len(estimates)
    columns = {"Estimate": texts[:p], "Std. Error": texts[p:], "t value": t_texts}
    names = list(result.fixef.index)
    name_width = max(len(n) for n in names)
    widths = {c: max(len(c), len(v[0])) for c, v in columns.items()}
    lines = [" " * name_width + " " + " ".join(c.rjust(widths[c]) for c in columns)]
    for i, name in enumerate(names):
        lines.append(name.ljust(name_width) + " " + " ".join(v[i].rjust(widths[c]) for c, v in columns.items()))
    return "Fixed effects:\n" + "\n".join(lines) + "\n"


def _nonzero_kept(texts: list[str], values: np.ndarray) -> list[str]:
    """printCoefmat's last step: an entry that prints as zero but is not zero is printed
    on its own with 3 significant digits (R: `digits - 1`)."""
    out = list(texts)
    for i, (text, value) in enumerate(zip(texts, values)):
        if value != 0 and np.isfinite(value) and float(text) == 0:
            out[i] = format_numbers([value], max(1, DIGITS - 1))[0].rjust(len(text))
    return out


MAX_CORRELATION_TABLE = 12  # lme4 prints the fixed effects' correlations for p <= 12 only


def _fixed_correlation(result) -> str:
    """lme4's table: `format(round(corr, 3), nsmall = 3)` (one width for all), rows named by
    R's abbreviate(names, 11), columns by abbreviate(names, 6) (lengthened until distinct)
    of R's coefficient names (`r_coefficient_name`), printed as R prints a character matrix
    (left-aligned, blanks kept); for more than 12 coefficients only lme4's note."""
    p = len(result.fixef)
    if p < 2:
        return ""
    if p > MAX_CORRELATION_TABLE:
        return (f"Correlation matrix not shown by default, as p = {p} > {MAX_CORRELATION_TABLE}.\n"
                "Use result.vcov (and its correlations) if you need it\n")
    vcov = result.vcov.to_numpy()
    sd = np.sqrt(np.diag(vcov))
    texts = [f"{v:.3f}" for v in round_half_even(vcov / np.outer(sd, sd), 3).ravel()]
    width = max(len(t) for t in texts)
    cells = [[texts[i * p + j].rjust(width) if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    names = [r_coefficient_name(n) for n in result.fixef.index]
    rows, columns = abbreviate_unique(names, 11), abbreviate_unique(names, 6)
    widths = [max(len(columns[j]), width) for j in range(p - 1)]
    row_width = max(len(r) for r in rows[1:])
    lines = [" " * row_width + " " + " ".join(c.ljust(w) for c, w in zip(columns[:-1], widths))]
    for name, row in zip(rows[1:], cells):
        lines.append(name.ljust(row_width) + " " + " ".join(c.ljust(w) for c, w in zip(row, widths)))
    return "Correlation of Fixed Effects:\n" + "\n".join(lines) + "\n"


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
