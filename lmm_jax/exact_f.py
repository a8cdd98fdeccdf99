"""Wald's exact F test that one variance component is zero (Seely & El-Bassiouni 1983).

For y = Xβ + Σ_j Z_j α_j + ε, test H0: G_k = 0 (the k-th term's covariance) by treating
all random effects as fixed. With A = [X, Z_{-k}] (the other terms) and B = [X, Z]:

    q1 = y' (P_B - P_A) y = RSS_A - RSS_B,      r1 = rank(B) - rank(A)
    q2 = y' (I - P_B) y   = RSS_B,              r2 = n - rank(B)
    F  = (q1 / r1) / (q2 / r2)  ~  F(r1, r2) under H0, exactly (normal errors).

F is the comparison of two ordinary least-squares fits, R's anova(lm(y ~ A), lm(y ~ B)):
for Dyestuff, lm(Yield ~ 1) against lm(Yield ~ Batch). The test is exact whatever the
other variances are, but it is not the likelihood-ratio test and is less powerful when
the design is unbalanced. Prior weights w enter as rows scaled by √w. Host-side numpy.
"""

from __future__ import annotations

import numpy as np

from .design import build_design
from .term_select import dense_z, find_term, term_label

RANK_TOLERANCE = 1e-9  # relative to the largest singular value


def _rank_and_rss(matrix: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """rank(M) and min_b |y - M b|² through an SVD (rank-deficient M allowed)."""
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    rank = int(np.sum(s > RANK_TOLERANCE * s[0])) if s.size else 0
    fitted = u[:, :rank] @ (u[:, :rank].T @ y)
    return rank, float(np.sum((y - fitted) ** 2))


def exact_f_test(formula: str, data, term: str | None = None, weights=None) -> dict:
    """Wald's exact F test of H0: the variance of random term `term` is zero.

    >>> import lmm_jax
    >>> out = lmm_jax.exact_f_test("Yield ~ 1 + (1 | Batch)", lmm_jax.datasets.load("dyestuff"))
    >>> round(out["F"], 4), out["df1"], out["df2"]
    (4.5983, 5, 24)

    `term` names one random term of `formula` ("(1 | plate)", its group, or lme4's name);
    None picks the only one. Returns a dict: `F`, `df1` (r1), `df2` (r2), `p_value`
    (P(F(r1, r2) > F)), `term` (the tested term), `q1`, `q2` (the two quadratic forms).
    """
    from scipy import stats  # scipy.stats takes 0.3 s to import: only when needed
    design = build_design(formula, data, weights)
    index = find_term(design, term)
    root_w = np.sqrt(design.weights)[:, None]
    y = design.y * root_w[:, 0]
    blocks = [dense_z(t) * root_w for t in design.terms]
    others = np.column_stack([design.X * root_w] + blocks[:index] + blocks[index + 1:])
    everything = np.column_stack([others, blocks[index]])
    rank_a, rss_a = _rank_and_rss(others, y)
    rank_b, rss_b = _rank_and_rss(everything, y)
    r1, r2 = rank_b - rank_a, design.nobs - rank_b
    label = term_label(design.terms[index])
    if r1 == 0:
        raise ValueError(f"term {label} adds no columns beyond the fixed effects and the other "
                         "random terms (it is confounded with them): its variance cannot be tested")
    if r2 == 0:
        raise ValueError(f"no residual degrees of freedom are left after fitting all effects of "
                         f"{formula!r} as fixed: the exact F test of {label} is undefined")
    q1, q2 = rss_a - rss_b, rss_b
    f_value = (q1 / r1) / (q2 / r2)
    return {"term": label, "F": float(f_value), "df1": int(r1), "df2": int(r2),
            "p_value": float(stats.f.sf(f_value, r1, r2)), "q1": float(q1), "q2": float(q2)}
