"""The standard-deviation / correlation scale of lme4's profiles, and the deviance on it.

lme4 profiles (`profile.merMod`, `devfun2`) a linear mixed model in the parameters

    ψ = (per term: sd₁, cor₂₁, ..., cor_p1, sd₂, cor₃₂, ..., sd_p;  σ;  β)

(each term's lower triangle of its SD/correlation matrix column by column, the diagonal
holding SDs: the order of lme4's θ), with Σ_k = D_k R_k D_k, D_k = diag(sd), R_k the
correlations, so the relative factor is Λ_k = D_k chol(R_k)/σ. On this scale the ML
deviance, with β kept as a parameter, is

    D(ψ) = log|V₀(θ)| + [r²(θ) + ‖L_X'β - c_X‖²]/σ² + n log(2πσ²)

where r²(θ) = min_β of the penalised residual sum of squares and L_X, c_X are the X block
and the response row of the blocked Cholesky factor (X'V₀⁻¹X = L_X L_X', β̂(θ) = L_X'⁻¹c_X),
so that r² + ‖L_X'β - c_X‖² is the penalised RSS at β. Minimising D over σ and β gives the
profiled ML deviance; with a known residual scale σ = 1 is not a parameter and
D(ψ) = log|V₀| + r² + ‖L_X'β - c_X‖² + n log 2π. SDs enter through |sd|, so D is even in
each SD and an optimiser cannot flip a correlation's sign by passing an SD through zero.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .arrays import ModelShape
from .blocked import CrossProducts, blocked_factor, rest_size
from .conditioning import Reparametrisation, conditioned_beta
from .small_linalg import small_cholesky
from .structures import CholeskyFactor


def check_structures(shape: ModelShape, what: str = "profiles") -> None:
    """The sd/cor scale is defined here for lme4's unstructured (Cholesky) terms only."""
    for s in shape.structures:
        if not isinstance(s, CholeskyFactor):
            raise NotImplementedError(f"{what}: defined for lme4's unstructured terms only, got "
                                      f"{type(s).__name__}; confint(method='wald') gives the fixed effects' "
                                      "intervals")


def n_variance(shape: ModelShape) -> int:
    """Number of sd/cor parameters plus σ (absent for a known residual scale)."""
    return shape.n_theta + (0 if shape.known_scale else 1)


def _term_sdcor_to_lambda(params: jnp.ndarray, structure: CholeskyFactor) -> jnp.ndarray:
    """Σ_k/σ² factor without the 1/σ: D chol(R) for one term's (sd, cor) vector."""
    rows, cols = structure._indices()
    diagonal = rows == cols
    sd = jnp.abs(params[np.flatnonzero(diagonal)])
    off = np.flatnonzero(~diagonal)
    corr = jnp.eye(structure.dim, dtype=params.dtype)
    corr = corr.at[rows[off], cols[off]].set(params[off]).at[cols[off], rows[off]].set(params[off])
    return sd[:, None] * small_cholesky(corr)


def sdcor_to_theta(psi: jnp.ndarray, shape: ModelShape) -> jnp.ndarray:
    """ψ's variance part (sd/cor per term, then σ unless the scale is known) -> lme4's θ."""
    sigma = 1.0 if shape.known_scale else jnp.abs(psi[shape.n_theta])
    parts = []
    for structure, sl in zip(shape.structures, shape.theta_slices()):
        lam = _term_sdcor_to_lambda(psi[sl], structure) / sigma
        rows, cols = structure._indices()
        parts.append(lam[rows, cols])
    return jnp.concatenate(parts)


def theta_to_sdcor(theta: jnp.ndarray, sigma, shape: ModelShape) -> jnp.ndarray:
    """lme4's θ and σ -> (sd/cor per term, σ): lme4's `Cv_to_Sv`. A correlation with a zero
    SD is undefined; it is set to 0 (lme4 reports NaN)."""
    parts = []
    for structure, sl in zip(shape.structures, shape.theta_slices()):
        lam = structure.relative_factor(theta[sl])
        cov = sigma ** 2 * lam @ lam.T
        sd = jnp.sqrt(jnp.diagonal(cov))
        denominator = sd[:, None] * sd[None, :]
        corr = jnp.where(denominator > 0, cov / jnp.where(denominator > 0, denominator, 1.0), 0.0)
        rows, cols = structure._indices()
        parts.append(jnp.where(rows == cols, sd[rows], corr[rows, cols]))
    if not shape.known_scale:
        parts.append(jnp.reshape(sigma, (1,)))
    return jnp.concatenate(parts)


def sdcor_deviance(psi: jnp.ndarray, cp: CrossProducts, rep: Reparametrisation, shape: ModelShape,
                   n: int) -> jnp.ndarray:
    """D(ψ), the ML deviance at ψ = (sd/cor, σ, β) (module docstring), from the conditioned
    cross-products (`conditioning.conditioned_cross_products`; β_c = R(β - b₀))."""
    k = n_variance(shape)
    theta = sdcor_to_theta(psi[:k], shape)
    beta = conditioned_beta(psi[k:], rep)
    factor = blocked_factor(theta, cp, shape)
    q2, r = rest_size(shape), cp.rtr.shape[0]
    logdet_v = 2.0 * (jnp.sum(jnp.log(jnp.diagonal(factor.l11, axis1=1, axis2=2)))
                      + jnp.sum(jnp.log(jnp.diag(factor.l22)[:q2]))) - cp.sum_log_weights
    l_x = factor.l22[q2:r - 1, q2:r - 1]
    c_x = factor.l22[-1, q2:r - 1]
    prss = factor.l22[-1, -1] ** 2 + jnp.sum((l_x.T @ beta - c_x) ** 2)
    if shape.known_scale:
        return logdet_v + prss + n * jnp.log(2.0 * jnp.pi)
    sigma2 = psi[shape.n_theta] ** 2
    return logdet_v + prss / sigma2 + n * jnp.log(2.0 * jnp.pi * sigma2)


def parameter_bounds(shape: ModelShape, n_fixed: int) -> tuple[np.ndarray, np.ndarray]:
    """lme4's profile bounds on ψ: SDs and σ in [0, ∞), correlations in [-1, 1], β free."""
    lower, upper = [], []
    for structure in shape.structures:
        rows, cols = structure._indices()
        lower.append(np.where(rows == cols, 0.0, -1.0))
        upper.append(np.where(rows == cols, np.inf, 1.0))
    if not shape.known_scale:
        lower.append(np.zeros(1))
        upper.append(np.full(1, np.inf))
    lower.append(np.full(n_fixed, -np.inf))
    upper.append(np.full(n_fixed, np.inf))
    return np.concatenate(lower), np.concatenate(upper)


def parameter_names(design, shape: ModelShape) -> list[str]:
    """lme4's `confint(m, oldNames = FALSE)` row names for ψ."""
    names = []
    for term in design.terms:
        rows, cols = term.structure._indices()
        cn = term.column_names
        for i, j in zip(rows, cols):
            names.append(f"sd_{cn[i]}|{term.group}" if i == j else f"cor_{cn[i]}.{cn[j]}|{term.group}")
    if not shape.known_scale:
        names.append("sigma")
    return names + list(design.fixed_names)
