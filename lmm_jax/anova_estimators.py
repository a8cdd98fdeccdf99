"""ANOVA (method-of-moments) estimators of variance components: Henderson's methods I and III.

    est = anova_estimates("Yield ~ 1 + (1 | Batch)", dyestuff)
    est.to_dict()["variances"]      # {"Batch": 1764.05, "Residual": 2451.25}

For scalar random terms (``(1 | g)``, nested ``(1 | a/b)``, crossed ``(1 | a) + (1 | b)``)
the sums of squares Q_r of an ANOVA table have expectations linear in the variances,

    E(Q_r) = Σ_j c_rj σ_j² + df_r σ_e²,

and the estimators solve E(Q) = Q (`anova_forms.solve_moments`). The terms are taken in
increasing number of levels (outer factors of a nesting first).

- method III ("henderson3", fitting constants): Q_k = R(Z_k | X, Z_1..Z_{k-1}), the
  reduction in the residual sum of squares of ordinary least squares when term k is
  added, and Q_e = y'y - R(X, Z_1..Z_K). Any fixed part.
- method I ("henderson1"): quadratic forms of the raw group sums, T_k = Σ_l y_{l.}²/n_l,
  T_μ = y_{..}²/N, T_0 = y'y. Defined for an intercept-only fixed part. Nested terms give
  the nested ANOVA table (Q_k = T_k - T_{k-1}, Q_e = T_0 - T_K, equal to method III);
  otherwise Q_k = T_k - T_μ and Q_e = T_0 - Σ_k T_k + (K-1) T_μ (Searle's crossed form).

One-way layout (m groups, N observations): σ̂_e² = MSE, σ̂_a² = (MSA - MSE)/n₀ with
n₀ = (N - Σ n_i²/N)/(m - 1) (k for balanced data). On balanced data with an interior REML
solution the estimates equal REML. Negative estimates are returned as they are and
listed in `negative`; `truncate=True` sets them to 0 (the others are not re-estimated).

References: Henderson (1953) Biometrics 9:226-252; Searle, Casella & McCulloch (1992)
Variance Components, ch. 5.

`anova_start(model)` turns the method III estimates into a starting θ₀ for the likelihood
fit of a `Model` with scalar terms: `model.fit_params(theta0=anova_start(model))`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .anova_forms import block_matrix, projection_forms, solve_moments
from .arrays import to_device
from .design import Design, build_design

METHODS = ("henderson1", "henderson3")
RESIDUAL = "Residual"


@dataclass(frozen=True)
class AnovaRow:
    """One line of the table: E(ms) = Σ_j expected_ms[name_j] σ_j² (Residual: σ_e²)."""

    source: str
    ss: float
    df: float
    ms: float
    expected_ms: dict

    def to_dict(self) -> dict:
        return {"source": self.source, "ss": self.ss, "df": self.df, "ms": self.ms,
                "expected_ms": dict(self.expected_ms)}


@dataclass(frozen=True)
class AnovaEstimates:
    """Variance components from E(Q) = Q, with the table that was solved."""

    method: str
    variances: dict
    table: tuple[AnovaRow, ...]
    negative: tuple[str, ...]
    truncated: bool

    def to_dict(self) -> dict:
        return {"method": self.method, "variances": dict(self.variances),
                "table": [row.to_dict() for row in self.table],
                "negative": list(self.negative), "truncated": self.truncated}

    def __str__(self) -> str:
        lines = [f"ANOVA estimates ({self.method})",
                 f"{'source':<16}{'df':>10}{'SS':>16}{'MS':>16}"]
        lines += [f"{r.source:<16}{r.df:>10.4g}{r.ss:>16.6g}{r.ms:>16.6g}" for r in self.table]
        lines.append("variances: " + ", ".join(f"{k} = {v:.6g}" for k, v in self.variances.items()))
        if self.negative:
            note = "set to 0" if self.truncated else "returned as they are"
            lines.append(f"negative estimates ({note}): {', '.join(self.negative)}")
        return "\n".join(lines)


def anova_estimates(formula: str, data, method: str = "henderson3",
                    truncate: bool = False) -> AnovaEstimates:
    """ANOVA estimates of the variances of the scalar random terms of `formula` (lme4 syntax)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return design_estimates(build_design(formula, data), method, truncate)


def design_estimates(design: Design, method: str = "henderson3",
                     truncate: bool = False) -> AnovaEstimates:
    """`anova_estimates` on an already built design (its prior weights are not used)."""
    terms = _scalar_terms(design)
    if method == "henderson1":
        _check_intercept_only(design)
    column_sets, term_columns = _column_sets(design, terms, method)
    contrasts = _contrasts(terms, method)
    W = block_matrix(to_device(design.X), tuple(to_device(t.codes) for t in terms),
                     tuple(t.n_levels for t in terms))
    # every sum of squares is a difference of forms whose projections all contain X's span
    # (method III: X ⊂ S; method I: 1 ⊂ span Z_k), so the residuals give y's; y itself lost
    # them for a response of large mean (one-way data + 1e8: σ̂²_e 2.6e-16, exactly 3.26)
    residuals = design.least_squares_residuals(design.y[None, :])[0][0]
    forms = projection_forms(W, to_device(residuals), column_sets, term_columns)
    sources = [t.name for t in terms] + [RESIDUAL]
    _check_df(np.asarray(contrasts @ forms.trace), sources)
    table = solve_moments(forms, contrasts)
    return _result(method, table, sources, truncate)


def _scalar_terms(design: Design) -> list:
    """The random terms, checked to be scalar intercepts, in increasing number of levels."""
    for term in design.terms:
        if term.dim != 1 or not np.all(term.values == 1.0):
            raise ValueError(
                f"random term {term.spec.source!r} is not a scalar intercept term (columns "
                f"{list(term.column_names)}); ANOVA estimators need terms of the form (1 | g)")
    return sorted(design.terms, key=lambda t: t.n_levels)


def _check_intercept_only(design: Design) -> None:
    if design.X.shape[1] != 1 or not np.all(design.X[:, 0] == 1.0):
        raise ValueError(
            f"henderson1 is defined for an intercept-only fixed part, got {list(design.fixed_names)}; "
            "use method='henderson3' (fitting constants) for other fixed effects")


def _column_sets(design: Design, terms: list, method: str):
    """Column indices of W for each projection (method III: nested X ⊂ X,Z_1 ⊂ ...; method I:
    1, Z_1, ..., Z_K), then () for the identity; and each term's columns."""
    p = design.X.shape[1]
    fixed = tuple(range(p))
    term_columns, start = [], p
    for term in terms:
        term_columns.append(tuple(range(start, start + term.n_levels)))
        start += term.n_levels
    if method == "henderson3":
        sets = [fixed + sum(term_columns[:k], ()) for k in range(len(terms) + 1)]
    else:
        sets = [fixed] + term_columns
    return tuple(sets) + ((),), tuple(term_columns)


def _contrasts(terms: list, method: str) -> jnp.ndarray:
    """Rows of L over the forms (P_0, P_1, ..., P_K, I): one per term, then the residual.

    Method III and nested chains: successive differences. Method I otherwise (Searle): a
    term's row is T_k - T_μ less the rows of the terms whose factors are a subset of its own
    (a:b: T_ab - T_a - T_b + T_μ), the residual T_0 - T_μ less all rows. The crossed form
    T_k - T_μ for every term gave a:b and Residual rows that were not Searle's (a Residual SS
    of -1.92) though the same estimates."""
    K = len(terms)
    L = np.zeros((K + 1, K + 2))
    if method == "henderson3" or _is_nested_chain(terms):
        for r in range(K + 1):
            L[r, r + 1], L[r, r] = 1.0, -1.0
        return jnp.asarray(L)
    factors = [frozenset(t.spec.factors) for t in terms]
    for k in sorted(range(K), key=lambda k: len(factors[k])):
        L[k, k + 1], L[k, 0] = 1.0, -1.0
        L[k] -= sum((L[j] for j in range(K) if factors[j] < factors[k]), np.zeros(K + 2))
    L[K, K + 1], L[K, 0] = 1.0, -1.0
    L[K] -= L[:K].sum(axis=0)
    return jnp.asarray(L)


def _is_nested_chain(terms: list) -> bool:
    """True when every term's levels lie within single levels of the term before it."""
    for outer, inner in zip(terms[:-1], terms[1:]):
        pairs = np.unique(np.stack([inner.codes, outer.codes]), axis=1)
        if pairs.shape[1] != inner.n_levels:
            return False
    return True


def _check_df(df: np.ndarray, sources: list[str]) -> None:
    for source, d in zip(sources, df):
        if d < 0.5:
            raise ValueError(
                f"the sum of squares for {source!r} has no degrees of freedom (the term is "
                "confounded with the fixed effects or the terms before it); its variance is not "
                "estimable by ANOVA")


def _result(method: str, table, sources: list[str], truncate: bool) -> AnovaEstimates:
    ss, df, coef, variances = (np.asarray(a, dtype=float) for a in table)
    rows = []
    for r, source in enumerate(sources):
        expected = {name: float(coef[r, j] / df[r]) for j, name in enumerate(sources[:-1])}
        expected[RESIDUAL] = 1.0
        rows.append(AnovaRow(source, float(ss[r]), float(df[r]), float(ss[r] / df[r]), expected))
    negative = tuple(name for name, v in zip(sources, variances) if v < 0)
    if truncate:
        variances = np.maximum(variances, 0.0)
    return AnovaEstimates(method, {name: float(v) for name, v in zip(sources, variances)},
                          tuple(rows), negative, bool(truncate))


MIN_START = 0.1  # θ₀ for a term whose ANOVA estimate is negative or zero (lme4's default is 1)


def anova_start(model) -> np.ndarray:
    """θ₀ from Henderson III estimates for a `Model` whose random terms are all (1 | g).

    θ₀_k = √(σ̂²_k / σ̂²_e), lme4's relative standard deviation, in the model's term order.
    A negative or zero σ̂²_k gives MIN_START instead: θ = 0 is a stationary point of the
    profiled deviance in every direction θ_k (it is even in θ_k), where a Newton fit could
    not move. The estimates are unweighted even when the model has prior weights (they are
    only a start), and a model with a known residual scale is refused (σ²_e is not free).
    The default start of `Model.fit` stays lme4's θ₀ = 1.
    """
    if model.shape.known_scale:
        raise ValueError("anova_start needs an estimated residual variance; this model has a "
                         "known residual scale (known_scale=True)")
    est = design_estimates(model.design, "henderson3")
    residual = est.variances[RESIDUAL]
    if not residual > 0:
        raise ValueError(f"the ANOVA residual variance is {residual:.4g}; no relative start exists")
    ratios = [est.variances[term.name] / residual for term in model.design.terms]
    return np.asarray([np.sqrt(r) if r > MIN_START ** 2 else MIN_START for r in ratios])
