"""Kenward-Roger's adjusted Var(β̂) and denominator df (pbkrtest's vcovAdj and KRmodcomp).

On the variance scale φ (`variance_scale.py`: V = Σ_i φ_i V_i, linear in φ), with
M(φ) = X'V⁻¹X and Φ = M(φ̂)⁻¹ (REML fits only, as pbkrtest and lmerTest):

    P_i = ∂M/∂φ_i = -X'V⁻¹V_iV⁻¹X
    Σ_ij W_ij Q_ij = ½ Σ_ij W_ij ∂²M/∂φ_i∂φ_j       (Q_ij = X'V⁻¹V_iV⁻¹V_jV⁻¹X; R_ij = 0, V linear)
    W = I⁻¹,  I_ij = ½ tr(P V_i P V_j) = -½ ∂²(log|V| + log|M|)/∂φ_i∂φ_j   (expected information)
    Λ̃ = Φ {Σ_ij W_ij (Q_ij - P_i Φ P_j)} Φ,    Φ_A = Φ + 2Λ̃

For a hypothesis Lβ = 0 of rank q (Kenward & Roger 1997), with Θ = L'(LΦL')⁻¹L:

    A₁ = Σ_ij W_ij tr(ΘΦP_iΦ) tr(ΘΦP_jΦ),   A₂ = Σ_ij W_ij tr(ΘΦP_iΦΘΦP_jΦ)
    B = (A₁ + 6A₂)/(2q),   g = ((q+1)A₁ - (q+4)A₂)/((q+2)A₂)
    c₁ = g/(3q + 2(1-g)),  c₂ = (q-g)/(3q + 2(1-g)),  c₃ = (q+2-g)/(3q + 2(1-g))
    ρ = (1/q) ((1 - A₂/q)/(1 - c₂B))² (1 + c₁B)/(1 - c₃B)
    m = 4 + (q+2)/(qρ - 1),   λ = m (1 - A₂/q)/(m - 2)
    F = λ (Lβ̂)'(LΦ_AL')⁻¹(Lβ̂)/q  ~  F(q, m)

pbkrtest's guards are kept: λ = 1 when |m - 2| < 0.01; 1 + c₁B is taken as 0 below 1e-10,
and (1 - A₂/q)/(1 - c₂B) as 1 when both are below 1e-14. For one contrast l (lmerTest's
KR t test) t = l'β̂/√(l'Φ_A l) on m df.

At a boundary the derivatives are taken as `scale_derivatives.py` says.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .scale_derivatives import ScaleDerivatives


class KenwardRogerTerms(NamedTuple):
    """Φ (p, p), ΦP_iΦ (k, p, p), W (k, k) and the adjusted Φ_A (p, p): all but W are
    covariances of β̂ (or their derivatives), mapped to another parametrisation of β alike."""

    vcov: jnp.ndarray
    phi_p_phi: jnp.ndarray
    W: jnp.ndarray
    vcov_adjusted: jnp.ndarray


def kenward_roger_terms(derivatives: ScaleDerivatives, interior_information=None) -> KenwardRogerTerms:
    """Φ, P_i, W and Φ_A from the φ-scale derivatives of a REML fit (module docstring).

    W is `expected_information_inverse`; `interior_information`: the expected information
    at an interior point, given for a fit at a boundary (see there)."""
    w = expected_information_inverse(-0.5 * derivatives.logdet_hessian, interior_information)
    vcov = jnp.linalg.inv(derivatives.m)
    p_mats = derivatives.d_m
    q_sum = 0.5 * jnp.einsum("ij,abij->ab", w, derivatives.d2_m)
    pp_sum = jnp.einsum("ij,iab,bc,jcd->ad", w, p_mats, vcov, p_mats)
    vcov_adjusted = vcov + 2.0 * vcov @ (q_sum - pp_sum) @ vcov
    phi_p_phi = jnp.einsum("ab,kbc,cd->kad", vcov, p_mats, vcov)
    return KenwardRogerTerms(vcov, phi_p_phi, w, vcov_adjusted)


GINV_SWITCH = 1e-10  # pbkrtest: a generalised inverse when min |eigenvalue of 2I| is at most this
GINV_RTOL = float(np.sqrt(np.finfo(np.float64).eps))  # MASS::ginv's tolerance, relative to the largest


def expected_information_inverse(information: jnp.ndarray, interior_information=None) -> jnp.ndarray:
    """W = I⁻¹, or as pbkrtest's vcovAdj where 2I has an eigenvalue of modulus ≤ 1e-10 the
    generalised inverse (MASS::ginv: singular values below √eps of the largest dropped). An
    over-parameterised covariance, e.g. (g2 || a) = (1 | a) + (0 + g2 | a) with a two-level
    factor g2, makes I singular; its direct inverse gave a negative KR F (-157 against
    pbkrtest's 382).

    Such a null space is the design's: I_ij = ½ tr(PV_iPV_j) and c'Ic = 0 iff K'(Σ c_iV_i)K = 0
    for error contrasts K (K'X = 0), whatever V, so I has the same null space at every φ. At
    a boundary the derivatives are taken at floored θ (`scale_derivatives.py`) and are
    accurate to ~1e-9 of I's scale only: the null eigenvalue came out ~2e-7, above the 1e-10
    switch, and the direct inverse gave F = 34.6 where pbkrtest gives 14.69. There the null
    space is read from `interior_information` (I at an interior point, exact to rounding:
    eigenvalues below √eps of its largest) and projected out of I before the switch."""
    if interior_information is not None:
        information = _without_null_space(information, interior_information)
    singular = jnp.min(jnp.abs(jnp.linalg.eigvalsh(2.0 * information))) <= GINV_SWITCH
    return jnp.where(singular, jnp.linalg.pinv(information, rtol=GINV_RTOL, hermitian=True),
                     jnp.linalg.inv(information))


def _without_null_space(information: jnp.ndarray, interior_information: jnp.ndarray) -> jnp.ndarray:
    """ΠIΠ, Π the projector on the range of `interior_information` (eigenvectors of
    eigenvalues above √eps of the largest, MASS::ginv's rule)."""
    values, vectors = jnp.linalg.eigh(interior_information)
    kept = jnp.abs(values) > GINV_RTOL * jnp.max(jnp.abs(values))
    projector = (vectors * kept) @ vectors.T
    return projector @ information @ projector


def _div_zero(x: float, y: float, tol: float = 1e-14) -> float:
    return 1.0 if abs(x) < tol and abs(y) < tol else x / y


def kenward_roger_adjust(L: np.ndarray, terms: KenwardRogerTerms) -> tuple[float, float, int]:
    """(m, λ, q): the denominator df and F scaling of Lβ = 0 (pbkrtest's .KR_adjust)."""
    phi = np.asarray(terms.vcov)
    q = int(np.linalg.matrix_rank(L))
    big_theta = L.T @ np.linalg.solve(L @ phi @ L.T, L)
    u = np.einsum("ab,kbc->kac", big_theta, terms.phi_p_phi)
    traces = np.einsum("kaa->k", u)
    a1 = float(traces @ terms.W @ traces)
    a2 = float(np.einsum("ij,iab,jba->", terms.W, u, u))
    b = (a1 + 6.0 * a2) / (2.0 * q)
    g = ((q + 1) * a1 - (q + 4) * a2) / ((q + 2) * a2)
    denom = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / denom, (q - g) / denom, (q + 2 - g) / denom
    v0 = 1 + c1 * b
    v0 = 0.0 if abs(v0) < 1e-10 else v0
    rho = _div_zero(1 - a2 / q, 1 - c2 * b) ** 2 * v0 / (q * (1 - c3 * b))
    df = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(df - 2) < 0.01 else df * (1 - a2 / q) / (df - 2)
    return float(df), float(scaling), q


def kenward_roger_f_test(L: np.ndarray, beta: np.ndarray, terms: KenwardRogerTerms) -> dict:
    """KR's F test of Lβ = 0: F = λ (Lβ̂)'(LΦ_AL')⁻¹(Lβ̂)/q on (q, m) df."""
    df, scaling, q = kenward_roger_adjust(L, terms)
    estimate = L @ beta
    wald = float(estimate @ np.linalg.solve(L @ np.asarray(terms.vcov_adjusted) @ L.T, estimate))
    return {"F": scaling * wald / q, "num_df": q, "den_df": df, "F_scaling": scaling}
