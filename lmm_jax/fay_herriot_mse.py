"""EBLUPs of the Fay-Herriot model and their mean squared errors, in pure JAX.

With γ_i = Â/(Â + D_i) (the shrinkage) and B_i = 1 - γ_i = D_i/(Â + D_i):

    θ̂_i  = γ_i y_i + (1 - γ_i) x_i'β̂
    g1_i = γ_i D_i                          (variance of the BLUP with A and β known)
    g2_i = B_i² x_i'(X'V⁻¹X)⁻¹x_i           (estimating β)
    g3_i = B_i² var(Â)/(Â + D_i)            (estimating A)

`eblup_se` = √(g1 + g2), metafor's blup(); `mse` the second-order unbiased estimators
(Rao & Molina 2015, Small Area Estimation, sec. 6.2.1):

- REML, PM, HE, DL: Prasad-Rao g1 + g2 + 2 g3;
- ML (Datta & Lahiri 2000): g1 + g2 + 2 g3 - b_ML B_i², with the bias of Â_ML
  b_ML = -tr[(X'V⁻¹X)⁻¹X'V⁻²X] / Σ(Â + D_i)⁻².

Opt-in, `pm_bias_correction=True` (PM only; Datta, Rao & Smith 2005): Fay and Herriot's
estimator is biased to O(1/m) when the D_i differ, b_FH = 2[m Σ(Â + D_i)⁻² -
(Σ(Â + D_i)⁻¹)²] / (Σ(Â + D_i)⁻¹)³ ≥ 0, and their MSE estimator subtracts b_FH B_i² from
Prasad-Rao's (the same when all D_i are equal, where b_FH = 0).

var(Â) in g3 is the estimator's asymptotic variance: 2/Σ(Â + D_i)⁻² (REML, ML),
2 Σ(Â + D_i)²/m² (HE), 2m/(Σ(Â + D_i)⁻¹)² (PM), and for DL 2 tr(P₀VP₀V)/tr(P₀)².
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from .fay_herriot_estimators import FayHerriotParams, dl_projection, quadratic_form_variance


class Predictions(NamedTuple):
    """Per area: EBLUP, √(g1 + g2), the MSE estimate and the shrinkage γ."""

    eblup: jnp.ndarray
    eblup_se: jnp.ndarray
    mse: jnp.ndarray
    shrinkage: jnp.ndarray


def asymptotic_variance(method: str, area_variance, X, D):
    """var(Â) used in g3 (see the module docstring)."""
    m = D.shape[0]
    w = 1.0 / (area_variance + D)
    if method in ("REML", "ML"):
        return 2.0 / jnp.sum(w ** 2)
    if method == "HE":
        return 2.0 * jnp.sum((area_variance + D) ** 2) / m ** 2
    if method == "PM":
        return 2.0 * m / jnp.sum(w) ** 2
    P0 = dl_projection(X, D)
    return quadratic_form_variance(P0, area_variance, D) / jnp.trace(P0) ** 2


def estimator_bias(method: str, area_variance, X, D, cov_beta, pm_bias_correction: bool = False):
    """The O(1/m) bias of Â the MSE corrects for: b_ML, b_FH (PM with
    `pm_bias_correction` only), or 0 (see the module docstring)."""
    w = 1.0 / (area_variance + D)
    if method == "ML":
        xtv2x = X.T @ ((w ** 2)[:, None] * X)
        return -jnp.sum(cov_beta * xtv2x) / jnp.sum(w ** 2)
    if method == "PM" and pm_bias_correction:
        m = D.shape[0]
        return 2.0 * (m * jnp.sum(w ** 2) - jnp.sum(w) ** 2) / jnp.sum(w) ** 3
    return jnp.zeros_like(area_variance)


def predict(method: str, params: FayHerriotParams, y, X, D,
            pm_bias_correction: bool = False) -> Predictions:
    """EBLUPs, √(g1 + g2) and the MSE estimates at the fitted Â and β̂."""
    a = params.area_variance
    gamma = a / (a + D)
    shrink = 1.0 - gamma
    eblup = gamma * y + shrink * (X @ params.beta)
    g1 = gamma * D
    g2 = shrink ** 2 * jnp.sum((X @ params.cov_beta) * X, axis=1)
    g3 = shrink ** 2 * asymptotic_variance(method, a, X, D) / (a + D)
    bias = estimator_bias(method, a, X, D, params.cov_beta, pm_bias_correction)
    mse = g1 + g2 + 2.0 * g3 - bias * shrink ** 2
    return Predictions(eblup, jnp.sqrt(g1 + g2), mse, gamma)
