"""The exact restricted likelihood-ratio test of one variance component (RLRsim's exactRLRT).

H0: σ_k² = 0 for one scalar random term k of a REML fit. The statistic is

    RLRT = 2 (ℓ_R(full) - ℓ_R(model without term k)),   both REML, same fixed effects,

and its null distribution is the Crainiceanu-Ruppert (2004) finite-sample law
(`rlrt_null.simulate_null`), simulated in JAX; the p-value is the share of draws above
the observed statistic, as RLRsim reports it.

- One random term (y = Xβ + Zb + ε): the model without it is the linear model, whose
  REML criterion (lme4's, no log|X'X| correction) is our REML criterion at θ = 0:
  -2ℓ_R = log|X'X| + (n-p)(1 + log(2π RSS/(n-p))). The null law is exact.
- Several terms: as RLRsim's exactRLRT(m, mA, m0) does, the statistic compares the full
  fit with the refit without term k, and the null law is that of the model holding only
  term k (m: X and Z_k), ignoring the other random terms. That law is exact only when
  the other terms are absent; Greven et al. (2008) found it a good approximation.
Terms with more than one column (a vector of correlated effects) are refused: the law
above is for one variance (a ratio λ), and RLRsim refuses them too.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .model import Model
from .rlrt_null import simulate_null
from .term_select import dense_z, find_term, term_label


def _check_supported(result, index: int) -> None:
    if hasattr(getattr(result, "model", result), "residual_shape"):  # a fit, or a Model
        raise NotImplementedError("rlrt with residual structures (correlation= or a weights= variance "
                                  "function) is not implemented: its null law assumes ε ~ N(0, σ²I)")
    if result.method != "REML":
        raise ValueError("rlrt needs a REML fit (the restricted likelihood ratio); refit with "
                         "method='REML'")
    term = result.design.terms[index]
    if term.dim != 1:
        raise NotImplementedError(
            f"term {term_label(term)} has {term.dim} columns: the exact RLRT tests one variance "
            "(a scalar random term); write uncorrelated terms, e.g. (1 | g) + (0 + x | g), and "
            "test one of them")
    if result.model.shape.known_scale or not np.all(result.design.weights == 1.0):
        raise NotImplementedError("rlrt supports unweighted models with an estimated residual "
                                  "variance only (the null law assumes ε ~ N(0, σ²I))")


def null_criterion(result, index: int) -> float:
    """-2ℓ_R of the fit without term `index` (same fixed effects, REML)."""
    design = result.design
    if len(design.terms) == 1:
        theta0 = np.zeros_like(result.theta)
        return float(result.model.deviance(theta0))
    others = tuple(t for i, t in enumerate(design.terms) if i != index)
    reduced = Model(dataclasses.replace(design, terms=others), "REML").fit()
    return reduced.objective


def rlrt_eigenvalues(X: np.ndarray, z: np.ndarray) -> np.ndarray:
    """μ: squared singular values of (I - X(X'X)⁻¹X') Z (the eigenvalues of Z'P₀Z), K = min(n, q)."""
    q, _ = np.linalg.qr(X)
    residual = z - q @ (q.T @ z)
    mu = np.linalg.svd(residual, compute_uv=False) ** 2
    return mu[: min(z.shape)]


def rlrt(result, term: str | None = None, nsim: int = 10000, seed: int = 0) -> dict:
    """Exact restricted likelihood-ratio test of H0: the variance of `term` is zero.

    >>> import lmm_jax
    >>> fit = lmm_jax.fit("Yield ~ 1 + (1 | Batch)", lmm_jax.datasets.load("dyestuff"))
    >>> out = lmm_jax.rlrt(fit, nsim=10000)
    >>> round(out["statistic"], 4), out["p_value"] < 0.01
    (6.369, True)

    `result`: a REML `FitResult`; `term`: the tested scalar term (None when the model has
    one); `nsim` simulated draws of the null law; `seed` for `jax.random`. Returns a dict:
    `statistic`, `p_value` (share of draws greater than the statistic, as RLRsim's
    p.value), `p_value_text` (the p-value as text; "< 1/nsim", e.g. "< 1e-04" for 10,000
    draws, where no draw exceeded the statistic), `nsim`, `term`, `null_law` ("exact" for a single-term model,
    "approximate (other terms ignored)" otherwise). A statistic of 0 gives p = 1 without
    simulating (nsim = 0), as RLRsim does.
    """
    if not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    design = result.design
    index = find_term(design, term)
    _check_supported(result, index)
    statistic = max(0.0, null_criterion(result, index) - result.objective)
    law = "exact" if len(design.terms) == 1 else "approximate (other random terms ignored)"
    out = {"term": term_label(design.terms[index]), "statistic": statistic, "null_law": law}
    if statistic == 0.0:
        return {**out, "p_value": 1.0, "p_value_text": p_value_text(1.0, 0), "nsim": 0}
    mu = rlrt_eigenvalues(design.X, dense_z(design.terms[index]))
    draws = simulate_null(mu, design.nobs, design.n_fixed, int(nsim), seed)
    p_value = float(np.mean(statistic < draws))
    return {**out, "p_value": p_value, "p_value_text": p_value_text(p_value, int(nsim)), "nsim": int(nsim)}


def p_value_text(p_value: float, nsim: int) -> str:
    """A simulated p-value as text: "< 1/nsim" ("< 1e-04" for nsim = 10,000) when no draw
    exceeded the statistic (p_value 0: the true p-value is not 0, only below the resolution
    of nsim draws; RLRsim prints format.pval's "< 2.2e-16" there), else 4 significant digits."""
    return f"< {1 / nsim:.0e}" if p_value == 0.0 else f"{p_value:.4g}"
