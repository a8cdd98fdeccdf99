"""Information matrices and standard errors of the variance components, on the variance scale φ.

φ = (variances and covariances of Σ_1, ..., Σ_K in varcorr order, σ²) (`variance_scale.py`),
ψ = (β', φ')'. At the estimates:

    expected:  I_φ = ½ tr(P V_i P V_j) (REML) or ½ tr(V⁻¹V_i V⁻¹V_j) (ML)
                   = -½ ∂²/∂φ_i∂φ_j [log|V| (+ log|X'V⁻¹X|)]        (V linear in φ)
    observed:  J_φ = ½ ∂²/∂φ_i∂φ_j (-2ℓ_R(φ) or -2ℓ(φ)), σ² not profiled

and SE(φ̂_i) = √[(I_φ)⁻¹]_ii (`se_expected`) or √[(J_φ)⁻¹]_ii (`se_observed`). For ML, profiling β
out of -2ℓ(β, φ) leaves the φ block of the inverse observed information unchanged (a Schur
complement), so J_φ from the β-profiled deviance gives the right SEs.

On ψ (`fisher_information`): the expected information is block-diag(X'V⁻¹X, I_φ) (the β-φ
block vanishes). The observed one is, for ML, the exact Hessian of -ℓ(β, φ) with

    -2ℓ(β, φ) = log|V₀| + n log(2πσ²) + [r²(θ) + (β - β̂(θ))'X'V₀⁻¹X(β - β̂(θ))]/σ²

(from the blocked Cholesky factor, no n x n matrix); its β-φ block vanishes at the estimates
only in expectation. REML's likelihood is that of error contrasts and has no β: its observed
"information" on ψ is block-diag(X'V⁻¹X, J_φ), the usual convention (e.g. lmerTest's
vcov of β̂ beside the REML Hessian of the variance parameters).

Parameter names (lme4-like, with the group as in `varcorr()`): the fixed-effect names, then
per term `var_<column>|<group>` for Σ_k[i, i] and `cov_<column i>.<column j>|<group>` for
Σ_k[i, j] (i > j, lme4's θ naming order), and `sigma2` for the residual variance (absent with
a known scale, e.g. Fay-Herriot).

Boundary (singular fits): a term whose Σ_k is not positive definite (a factor diagonal of Λ_k
below lme4's isSingular tolerance) lies on the boundary of the parameter space. The
likelihood is not differentiable there in the directions leaving the cone of
positive-semidefinite matrices and the usual asymptotics (SE = √ of an inverse information)
do not hold for its entries: they get NaN SEs and NaN information rows. The other entries'
information is computed with that term's Σ_k held fixed at its estimate (Λ_k = L̂_k/σ, L̂_k
the estimate's factor of Σ_k), i.e. inference conditional on the boundary term.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.linalg

from .arrays import ModelArrays, ModelShape
from .conditioning import conditioned_cross_products, user_xtvx_factor
from .exported_programs import cached_call
from .model import SINGULAR_TOLERANCE
from .structures import CholeskyFactor
from .term_centring import centred_arrays, centred_theta, centring_maps, variance_scale_map
from .scale_derivatives import factor_summary
from .variance_scale import (_vech_indices, deviance_at, engine_parameters, log_determinants_at,
                             profile_at, variance_parameters)


# ----- host side: the layout of φ -------------------------------------------------------------
def variance_rows(design, shape: ModelShape) -> list[dict]:
    """One dict per entry of φ: group, var1, var2 (as `varcorr()`), and its parameter name."""
    rows = []
    for term in design.terms:
        names = term.column_names
        for i, j in zip(*_vech_indices(term.dim)):
            if i == j:
                rows.append(dict(group=term.name, var1=names[i], var2=None,
                                 name=f"var_{names[i]}|{term.name}"))
            else:
                rows.append(dict(group=term.name, var1=names[j], var2=names[i],
                                 name=f"cov_{names[i]}.{names[j]}|{term.name}"))
    if not shape.known_scale:
        rows.append(dict(group="Residual", var1=None, var2=None, name="sigma2"))
    return rows


def held_terms(theta, shape: ModelShape) -> tuple[bool, ...]:
    """Per term: True when Σ_k is on the boundary (a diagonal of Λ_k below the singular tolerance)."""
    out = []
    for structure, sl in zip(shape.structures, shape.theta_slices()):
        if type(structure) is not CholeskyFactor:
            raise NotImplementedError(
                f"information on the variance scale needs unstructured terms; a "
                f"{type(structure).__name__} term has its own parameters")
        diagonal = np.asarray(theta)[sl][structure.diagonal_mask()]
        out.append(bool(np.any(np.abs(diagonal) < SINGULAR_TOLERANCE)))
    return tuple(out)


def free_mask(held: tuple[bool, ...], shape: ModelShape) -> np.ndarray:
    """Per entry of φ: False for the entries of held (boundary) terms."""
    parts = [np.full(d * (d + 1) // 2, not h) for d, h in zip(shape.dims, held)]
    if not shape.known_scale:
        parts.append(np.array([True]))
    return np.concatenate(parts)


# ----- pure functions of arrays ---------------------------------------------------------------
def engine_map(theta_hat, sigma2_hat, held: tuple[bool, ...], shape: ModelShape):
    """φ_free -> (θ, σ²): free entries through `engine_parameters`, held terms' Σ_k fixed at the
    estimate (θ_k = θ̂_k σ̂/σ); φ_free is φ without the held terms' entries."""
    free = np.flatnonzero(free_mask(held, shape))
    phi_hat = variance_parameters(theta_hat, sigma2_hat, shape)
    # held entries -> an identity Σ_k: a differentiable placeholder, overwritten below
    placeholder = variance_parameters(jnp.asarray(shape.initial_theta()), 1.0, shape)

    def to_engine(phi_free):
        phi = jnp.where(jnp.asarray(free_mask(held, shape)), phi_hat, placeholder)
        phi = phi.at[free].set(phi_free)
        theta, sigma2 = engine_parameters(phi, shape)
        scale = jnp.sqrt(sigma2_hat / sigma2)
        for sl, h in zip(shape.theta_slices(), held):
            if h:
                theta = theta.at[sl].set(theta_hat[sl] * scale)
        return theta, sigma2

    return to_engine, phi_hat[free]


def ml_deviance_with_beta(beta, theta, sigma2, arrays: ModelArrays, shape: ModelShape):
    """-2ℓ(β, φ) = log|V₀| + n log(2πσ²) + [r² + (β - β̂)'X'V₀⁻¹X(β - β̂)]/σ² (β not profiled)."""
    profiled = profile_at(theta, arrays, shape)
    shift = _xtvx_factor(theta, arrays, shape).T @ (beta - profiled.beta)
    n = arrays.X.shape[0]
    return (profiled.logdet_v + n * jnp.log(2.0 * jnp.pi * sigma2)
            + (profiled.rss + shift @ shift) / sigma2)


class Information(NamedTuple):
    """At the estimates, over the free entries of φ (and ψ = (β, φ_free)):
    `expected` I_φ, `observed` J_φ, `xtvx` = X'V⁻¹X, `observed_psi` (ML: the exact Hessian of
    -ℓ(β, φ); REML: block-diag(X'V⁻¹X, J_φ))."""

    expected: jnp.ndarray
    observed: jnp.ndarray
    xtvx: jnp.ndarray
    observed_psi: jnp.ndarray


@partial(jax.jit, static_argnames=("shape", "held"))
def information_matrices(arrays: ModelArrays, shape: ModelShape, held: tuple[bool, ...],
                         theta, sigma2, beta) -> Information:
    """All information matrices at the estimates (θ̂, σ̂², β̂), held terms fixed."""
    to_engine, phi_free = engine_map(theta, sigma2, held, shape)
    expected = -0.5 * jax.hessian(lambda f: log_determinants_at(*to_engine(f), arrays, shape))(phi_free)
    observed = 0.5 * jax.hessian(lambda f: deviance_at(*to_engine(f), arrays, shape))(phi_free)
    xtvx = xtvx_at(theta, sigma2, arrays, shape)
    if shape.reml:
        observed_psi = jax.scipy.linalg.block_diag(xtvx, observed)
    else:
        p = beta.shape[0]
        psi = jnp.concatenate([beta, phi_free])
        observed_psi = 0.5 * jax.hessian(
            lambda v: ml_deviance_with_beta(v[:p], *to_engine(v[p:]), arrays, shape))(psi)
    return Information(expected, observed, xtvx, observed_psi)


def xtvx_at(theta, sigma2, arrays: ModelArrays, shape: ModelShape) -> jnp.ndarray:
    """X'V⁻¹X = L_XX L_XX' / σ² from the blocked factor."""
    l_xx = _xtvx_factor(theta, arrays, shape)
    return l_xx @ l_xx.T / sigma2


def _xtvx_factor(theta, arrays: ModelArrays, shape: ModelShape) -> jnp.ndarray:
    """L_XX (X'V₀⁻¹X = L_XX L_XX') of the user's X, from the conditioned cross-products."""
    cp, rep = conditioned_cross_products(arrays, shape)
    return user_xtvx_factor(factor_summary(theta, cp, shape).l_xx, rep)


# ----- host side: the tables ------------------------------------------------------------------
def information_at(model, theta, sigma2, beta, held: tuple[bool, ...]) -> Information:
    """`information_matrices` of `model` called from the host (`cached_call`: compiled once per
    model shape for every caller)."""
    values = dict(theta=jnp.asarray(theta), sigma2=jnp.asarray(sigma2), beta=jnp.asarray(beta))
    return cached_call(information_matrices, dict(arrays=model.arrays, **values), dict(shape=model.shape, held=held))


def fit_information(result) -> tuple[Information, np.ndarray, list[dict], np.ndarray]:
    """(`Information` as numpy, free mask of φ, rows of φ, T over the free entries) for a
    `FitResult`: the information is computed where the fit optimised (the terms' centred
    columns at θ̂_c, `term_centring.py`; a covariate of mean 1e4 put a diagonal of lme4's θ
    below the boundary tolerance), on φ_c, with φ = Tφ_c (`user_information` maps it)."""
    model, params = result.model, result.params
    maps = centring_maps(model.arrays, model.shape)
    theta_c = centred_theta(jnp.asarray(params.theta), maps, model.shape)
    held = held_terms(theta_c, model.shape)
    values = dict(theta=theta_c, sigma2=jnp.asarray(params.sigma2), beta=jnp.asarray(params.beta))
    info = cached_call(information_matrices, dict(arrays=centred_arrays(model.arrays, maps), **values),
                       dict(shape=model.shape, held=held))
    info = Information(*(np.asarray(m) for m in jax.device_get(info)))
    free = free_mask(held, model.shape)
    t = variance_scale_map(maps, model.shape)[np.ix_(free, free)]
    return info, free, variance_rows(model.design, model.shape), t


def user_information(matrix: np.ndarray, t: np.ndarray) -> np.ndarray:
    """An information matrix on φ_c (or on (β, φ_c), β first) as one on φ = Tφ_c: T⁻ᵀ I T⁻¹."""
    t_inv = scipy.linalg.block_diag(np.eye(matrix.shape[0] - t.shape[0]), np.linalg.inv(t))
    return t_inv.T @ matrix @ t_inv


def mapped_inverse_diagonal(matrix: np.ndarray, t: np.ndarray, free: np.ndarray) -> np.ndarray:
    """diag of T I⁻¹ T' (the inverse of the information on φ = Tφ_c, without inverting that
    ill-conditioned matrix), put back on all entries (NaN where held)."""
    out = np.full(free.size, np.nan)
    if matrix.size:
        out[free] = np.diag(t @ np.linalg.inv(matrix) @ t.T)
    return out


def estimates_on_variance_scale(result) -> np.ndarray:
    params, shape = result.params, result.model.shape
    return np.asarray(variance_parameters(jnp.asarray(params.theta), jnp.asarray(params.sigma2), shape))


def variance_components(result) -> pd.DataFrame:
    """One row per variance/covariance (varcorr order, residual last): group, var1, var2,
    estimate, se_expected, se_observed (NaN for the entries of a boundary term)."""
    info, free, rows, t = fit_information(result)
    frame = pd.DataFrame(rows)
    frame["estimate"] = estimates_on_variance_scale(result)
    frame["se_expected"] = np.sqrt(mapped_inverse_diagonal(info.expected, t, free))
    frame["se_observed"] = np.sqrt(mapped_inverse_diagonal(info.observed, t, free))
    return frame.set_index("name").rename_axis("parameter")


def fisher_information(result, kind: str = "expected") -> pd.DataFrame:
    """The information matrix of ψ = (β, φ) named by parameter (module docstring); rows and
    columns of a boundary term's entries are NaN."""
    if kind not in ("expected", "observed"):
        raise ValueError(f"kind must be 'expected' or 'observed', got {kind!r}")
    info, free, rows, t = fit_information(result)
    names = list(result.design.fixed_names) + [r["name"] for r in rows]
    p = len(result.design.fixed_names)
    if kind == "expected":
        matrix = scipy.linalg.block_diag(info.xtvx, user_information(info.expected, t))
    else:
        matrix = user_information(info.observed_psi, t)
    keep = np.concatenate([np.ones(p, dtype=bool), free])
    full = np.full((keep.size, keep.size), np.nan)
    full[np.ix_(keep, keep)] = np.asarray(matrix)
    return pd.DataFrame(full, index=names, columns=names)
