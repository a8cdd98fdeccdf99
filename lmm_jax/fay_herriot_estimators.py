"""The Fay-Herriot area-level model and the estimators of its area variance A, in pure JAX.

    y_i = x_i'β + v_i + e_i,   v_i ~ N(0, A),   e_i ~ N(0, D_i),   D_i known,  i = 1..m,

so y ~ N(Xβ, V) with V = diag(A + D_i) and weights w_i = 1/(A + D_i). At a given A, β is
profiled by generalised least squares, β̂(A) = (X'WX)⁻¹X'Wy, and P = W - WX(X'WX)⁻¹X'W.

Estimators of A (every one is truncated at 0; `truncated` says when that happened):

- "ML", "REML": the root of the score of (`loglik`, `restricted_loglik`), found by bisection
  on a bracket [0, hi] (the score is positive at 0 unless Â = 0);
- "PM" (Fay & Herriot 1979; Paule & Mandel 1982): Σ w_i (y_i - x_i'β̂(A))² = m - p;
- "HE" (Prasad & Rao 1990, unweighted least squares): Â = (r'r - tr(M D))/(m - p) with
  r = My, M = I - X(X'X)⁻¹X' the ordinary least-squares residual maker;
- "DL" (DerSimonian & Laird 1986): Â = (y'P₀y - (m - p))/tr(P₀) with P₀ = P at A = 0.

The log-likelihoods are metafor's (rma.uni with REMLf = TRUE):

    ℓ(A)   = -½ [m log 2π + Σ log(A + D_i) + r'Wr]
    ℓ_R(A) = -½ [(m-p) log 2π - log|X'X| + Σ log(A + D_i) + log|X'WX| + r'Wr].
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

METHODS = ("REML", "ML", "PM", "HE", "DL")
BISECTION_STEPS = 100  # halves the bracket to below float64 resolution
MAX_DOUBLINGS = 60


class GLS(NamedTuple):
    """Generalised least squares at A: β̂, cov(β̂) = (X'WX)⁻¹, the weights w, residuals y - Xβ̂."""

    beta: jnp.ndarray
    cov_beta: jnp.ndarray
    weights: jnp.ndarray
    resid: jnp.ndarray
    logdet_xtwx: jnp.ndarray


def gls(area_variance, y, X, D) -> GLS:
    """β̂(A) = (X'WX)⁻¹X'Wy with W = diag(1/(A + D_i))."""
    w = 1.0 / (area_variance + D)
    chol = jnp.linalg.cholesky(X.T @ (w[:, None] * X))
    beta = cho_solve((chol, True), X.T @ (w * y))
    cov = cho_solve((chol, True), jnp.eye(X.shape[1], dtype=X.dtype))
    return GLS(beta, cov, w, y - X @ beta, 2.0 * jnp.sum(jnp.log(jnp.diag(chol))))


def projection_p(fit: GLS, X) -> jnp.ndarray:
    """P = W - WX(X'WX)⁻¹X'W (m x m)."""
    wx = fit.weights[:, None] * X
    return jnp.diag(fit.weights) - wx @ fit.cov_beta @ wx.T


def loglik(area_variance, y, X, D):
    """ℓ(A) with β profiled (see the module docstring)."""
    fit = gls(area_variance, y, X, D)
    m = y.shape[0]
    return -0.5 * (m * jnp.log(2.0 * jnp.pi) - jnp.sum(jnp.log(fit.weights))
                   + jnp.sum(fit.weights * fit.resid ** 2))


def restricted_loglik(area_variance, y, X, D):
    """ℓ_R(A), metafor's REML log-likelihood including +½ log|X'X|."""
    fit = gls(area_variance, y, X, D)
    m, p = X.shape
    logdet_xtx = jnp.linalg.slogdet(X.T @ X)[1]
    return -0.5 * ((m - p) * jnp.log(2.0 * jnp.pi) - logdet_xtx - jnp.sum(jnp.log(fit.weights))
                   + fit.logdet_xtwx + jnp.sum(fit.weights * fit.resid ** 2))


def root_on_half_line(f, upper):
    """The root of f on [0, ∞) for f positive below it and negative above it; 0 when f(0) ≤ 0.

    The bracket [0, upper] is doubled until f(upper) < 0, then bisected."""
    def too_low(hi):
        return f(hi) >= 0.0

    hi = jax.lax.while_loop(lambda s: too_low(s[0]) & (s[1] < MAX_DOUBLINGS),
                            lambda s: (2.0 * s[0], s[1] + 1), (upper, 0))[0]

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        positive = f(mid) > 0.0
        return jnp.where(positive, mid, lo), jnp.where(positive, hi, mid)

    lo, hi = jax.lax.fori_loop(0, BISECTION_STEPS, halve, (jnp.zeros_like(upper), hi))
    return jnp.where(f(jnp.zeros_like(upper)) > 0.0, 0.5 * (lo + hi), 0.0)


def dl_projection(X, D):
    """P₀ = P at A = 0: W₀ - W₀X(X'W₀X)⁻¹X'W₀ with W₀ = diag(1/D_i) (DerSimonian-Laird)."""
    return projection_p(gls(0.0, jnp.zeros_like(D), X, D), X)


def quadratic_form_variance(Q, area_variance, D):
    """var(y'Qy) = 2 tr(QVQV) for y ~ N(Xβ, V), V = diag(A + D_i), QX = 0."""
    QV = Q * (area_variance + D)[None, :]
    return 2.0 * jnp.sum(QV * QV.T)


def _ols_residual_maker(X):
    """M = I - X(X'X)⁻¹X'."""
    return jnp.eye(X.shape[0], dtype=X.dtype) - X @ jnp.linalg.solve(X.T @ X, X.T)


def _upper_start(y, X, D):
    """A above which Σ w r² < m - p (PM) and the scores are negative, up to doublings."""
    resid = _ols_residual_maker(X) @ y
    m, p = X.shape
    return resid @ resid / (m - p) + jnp.max(D)


def raw_estimate(method: str, y, X, D):
    """The estimate of A before truncation at 0 (ML/REML/PM: already ≥ 0 by construction)."""
    m, p = X.shape
    if method in ("ML", "REML"):
        objective = restricted_loglik if method == "REML" else loglik
        score = jax.grad(objective)
        return root_on_half_line(lambda a: score(a, y, X, D), _upper_start(y, X, D))
    if method == "PM":
        def excess(a):
            fit = gls(a, y, X, D)
            return jnp.sum(fit.weights * fit.resid ** 2) - (m - p)
        return root_on_half_line(excess, _upper_start(y, X, D))
    if method == "HE":
        M = _ols_residual_maker(X)
        resid = M @ y
        return (resid @ resid - jnp.sum(jnp.diag(M) * D)) / (m - p)
    if method == "DL":  # y'P₀y = r'P₀r for the OLS residuals r (P₀X = 0): a response of large
        # mean cancelled in y'P₀y (bcg's yi + 1e8: Â 15.1 where metafor gives 0.0633)
        P0, resid = dl_projection(X, D), _ols_residual_maker(X) @ y
        return (resid @ P0 @ resid - (m - p)) / jnp.trace(P0)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def area_variance_se(method: str, area_variance, y, X, D):
    """SE of Â as metafor's rma.uni reports it.

    REML: √(2/tr(PP)), ML: √(2/Σw²) (inverse expected information); PM: √(2m²/((m-p)(Σw)²));
    HE and DL, Â = (y'Qy - c)/t: √(2 tr(QVQV))/t with V = diag(Â + D) (Q = M, t = m - p for
    HE; Q = P₀, t = tr(P₀) for DL).
    """
    m, p = X.shape
    fit = gls(area_variance, y, X, D)
    if method == "REML":
        P = projection_p(fit, X)
        return jnp.sqrt(2.0 / jnp.sum(P * P))
    if method == "ML":
        return jnp.sqrt(2.0 / jnp.sum(fit.weights ** 2))
    if method == "PM":
        return jnp.sqrt(2.0 * m ** 2 / (m - p) / jnp.sum(fit.weights) ** 2)
    if method == "HE":
        Q, t = _ols_residual_maker(X), m - p
    else:
        Q = dl_projection(X, D)
        t = jnp.trace(Q)
    return jnp.sqrt(quadratic_form_variance(Q, area_variance, D)) / t


class FayHerriotParams(NamedTuple):
    """The fit as arrays (a pure function's output: jit/vmap-able)."""

    area_variance: jnp.ndarray
    raw_area_variance: jnp.ndarray
    truncated: jnp.ndarray
    area_variance_se: jnp.ndarray
    beta: jnp.ndarray
    cov_beta: jnp.ndarray
    loglik: jnp.ndarray  # ℓ_R(Â) for REML, else ℓ(Â) (ML, and metafor's logLik of DL, HE, PM fits)


@partial(jax.jit, static_argnames="method")
def fit_fay_herriot(y, X, D, method: str = "REML") -> FayHerriotParams:
    """Â by `method`, truncated at 0, and the GLS fixed effects at Â."""
    raw = raw_estimate(method, y, X, D)
    return params_at(method, jnp.maximum(raw, 0.0), y, X, D, raw)


def params_at(method: str, area_variance, y, X, D, raw=None) -> FayHerriotParams:
    """Everything `method` reports, evaluated at a given A ≥ 0 (`raw`: the untruncated Â)."""
    raw = area_variance if raw is None else raw
    fit = gls(area_variance, y, X, D)
    ll = restricted_loglik(area_variance, y, X, D) if method == "REML" else loglik(area_variance, y, X, D)
    return FayHerriotParams(area_variance, raw, raw <= 0.0,
                            area_variance_se(method, area_variance, y, X, D),
                            fit.beta, fit.cov_beta, ll)
