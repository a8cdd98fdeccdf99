"""Cluster-robust (sandwich) covariances of β̂ and of the variance components φ̂.

Clusters c are the levels of the outermost grouping factor: every random term must be nested
in it, so that V = diag(V_c) is block-diagonal over clusters (checked on the host; crossed
designs are refused). With r = y - Xβ̂ and H = (X'V⁻¹X)⁻¹ = Var(β̂) (model-based):

    Var_rob(β̂) = H [Σ_c X_c'V_c⁻¹ r_c r_c' V_c⁻¹ X_c] H                  (Liang & Zeger 1986, CR0)
    Var_rob(φ̂) = J⁻¹ [Σ_c s_c s_c'] J⁻¹

with J the observed information of φ (`information.py`: the derivative of the estimating
equations, the standard empirical bread; the expected one is as valid asymptotically) and s_c
the cluster's share of the score, which sums to the score (0 at the optimum):

    REML: s_c,i = ½ [r_c'V_c⁻¹V_i,c V_c⁻¹r_c - tr(P_cc V_i,c)],  P_cc = V_c⁻¹ - V_c⁻¹X_c H X_c'V_c⁻¹
    ML:   s_c,i = ½ [r_c'V_c⁻¹V_i,c V_c⁻¹r_c - tr(V_c⁻¹V_i,c)]

computed by autodiff: s_c = -½ ∇_φ f_c(φ) with r_c and H held at their values and

    f_c(φ) = log|V_c| + r_c'V_c⁻¹r_c (+ tr(H X_c'V_c⁻¹X_c) for REML),

since ∂ tr(H X_c'V_c⁻¹X_c)/∂φ_i = -tr(H X_c'V_c⁻¹V_i V_c⁻¹X_c). V_c = Σ_k Z_k,c(I ⊗ Σ_k)Z_k,c' +
σ²W_c⁻¹ is formed densely per cluster (n_c x n_c; clusters are padded to the largest with
identity rows that contribute nothing) and is linear in φ, so a boundary term needs no care
here. No small-sample correction (CR0): with few clusters the sandwich is biased downwards.
The clusters run through `lax.map` one at a time (no batched LAPACK: small_linalg.py).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.linalg import cho_solve

from .arrays import ModelArrays, ModelShape
from .design import DataError
from .exported_programs import cached_call
from .blocked import blocked_xtvx_inverse, cross_products
from .conditioning import conditioned, conditioned_beta, user_xtvx_inverse
from .information import (free_mask, held_terms, information_matrices, variance_components,
                          variance_rows)
from .variance_scale import _vech_indices, variance_parameters


# ----- host side: the clusters ----------------------------------------------------------------
def _nested_in(inner: np.ndarray, outer: np.ndarray) -> bool:
    """Every level of `inner` (codes per row) falls within one level of `outer`."""
    pairs = np.unique(np.stack([inner, outer], axis=1), axis=0)
    return np.unique(pairs[:, 0]).size == pairs.shape[0]


def cluster_term(design) -> int:
    """Index of the term whose grouping factor nests every random term (fewest levels first)."""
    terms = design.terms
    for k in sorted(range(len(terms)), key=lambda k: terms[k].n_levels):
        if all(_nested_in(t.codes, terms[k].codes) for t in terms):
            return k
    groups = ", ".join(sorted({t.group for t in terms}))
    raise ValueError(f"cluster-robust covariances need independent clusters: one grouping factor "
                     f"in which every random term is nested, but the factors ({groups}) are "
                     "crossed, so V has no block-diagonal cluster structure")


class Clusters(NamedTuple):
    """Row indices of each cluster, padded to the largest (C, n_max), and the padding mask."""

    rows: jnp.ndarray
    mask: jnp.ndarray


def cluster_rows(codes: np.ndarray) -> Clusters:
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    n_max = int(counts.max())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(codes.size) - np.repeat(starts, counts)
    rows = np.zeros((counts.size, n_max), dtype=np.int32)
    mask = np.zeros((counts.size, n_max), dtype=bool)
    rows[codes[order], position] = order
    mask[codes[order], position] = True
    return Clusters(jnp.asarray(rows), jnp.asarray(mask))


# ----- pure functions of arrays ---------------------------------------------------------------
def _covariances(phi, shape: ModelShape) -> list:
    """Σ_k from φ (no Cholesky: linear in φ, valid on the boundary too)."""
    out, start = [], 0
    for dim in shape.dims:
        rows, cols = _vech_indices(dim)
        entries = phi[start:start + rows.size]
        start += rows.size
        out.append(jnp.zeros((dim, dim), phi.dtype).at[rows, cols].set(entries).at[cols, rows].set(entries))
    return out


def cluster_covariance(phi, rows, mask, arrays: ModelArrays, shape: ModelShape):
    """V_c (n_max x n_max): Σ_k [same level of k] ∘ U_k Σ_k U_k' + σ² W⁻¹, identity on padding."""
    sigma2 = 1.0 if shape.known_scale else phi[-1]
    v = jnp.diag(jnp.where(mask, sigma2 / arrays.weights[rows], 1.0))
    for codes, values, cov in zip(arrays.codes, arrays.values, _covariances(phi, shape)):
        u = values[rows] * mask[:, None]
        level = codes[rows]
        v = v + (level[:, None] == level[None, :]) * (u @ cov @ u.T)
    return v


def _cluster_parts(phi, beta, beta_cov, rows, mask, arrays: ModelArrays, shape: ModelShape):
    """(s_c, X_c'V_c⁻¹r_c) for one cluster (module docstring)."""
    x = arrays.X[rows] * mask[:, None]
    resid = jnp.where(mask, arrays.y[rows] - arrays.X[rows] @ beta, 0.0)

    def f(phi):
        chol = jnp.linalg.cholesky(cluster_covariance(phi, rows, mask, arrays, shape))
        out = 2.0 * jnp.sum(jnp.log(jnp.diag(chol))) + resid @ cho_solve((chol, True), resid)
        if shape.reml:
            out = out + jnp.sum(beta_cov * (x.T @ cho_solve((chol, True), x)))
        return out

    chol = jnp.linalg.cholesky(cluster_covariance(phi, rows, mask, arrays, shape))
    return -0.5 * jax.grad(f)(phi), x.T @ cho_solve((chol, True), resid)


@partial(jax.jit, static_argnames=("shape",))
def cluster_contributions(phi, beta, beta_cov, clusters: Clusters, arrays: ModelArrays,
                          shape: ModelShape):
    """Per cluster: the scores s_c (C, dim φ) and X_c'V_c⁻¹r_c (C, p), at φ with β, H given."""
    return jax.lax.map(
        lambda rm: _cluster_parts(phi, beta, beta_cov, rm[0], rm[1], arrays, shape),
        (clusters.rows, clusters.mask))


def sandwich(bread: jnp.ndarray, parts: jnp.ndarray) -> jnp.ndarray:
    """bread [Σ_c u_c u_c'] bread for per-cluster rows u_c."""
    return bread @ (parts.T @ parts) @ bread


def sandwiches(arrays: ModelArrays, shape: ModelShape, held: tuple[bool, ...], theta, sigma2, beta,
               clusters: Clusters):
    """(Var_rob(β̂), J⁻¹ [Σ_c s_c s_c'] J⁻¹, J⁻¹) at the estimates (θ̂, σ̂², β̂), the last two over
    the free entries of φ; pure, so it maps over many fits. The clusters' parts come from the
    conditioned arrays (`conditioning.py`: y_c = y - Xb₀, X_c = XR⁻¹, β_c = R(β - b₀)), where
    r_c and s_c are the same and X_c'V_c⁻¹r_c = R⁻ᵀX'V_c⁻¹r_c, H_c = RHR': the β̂ sandwich maps
    back as R⁻¹(H_c [Σ_c u_c u_c'] H_c)R⁻ᵀ."""
    phi = variance_parameters(theta, sigma2, shape)
    data, rep = conditioned(arrays)
    beta_cov = sigma2 * blocked_xtvx_inverse(theta, cross_products(data, shape), shape)
    scores, parts = cluster_contributions(phi, conditioned_beta(beta, rep), beta_cov, clusters, data, shape)
    free = np.flatnonzero(free_mask(held, shape))
    bread = jnp.linalg.inv(information_matrices(arrays, shape, held, theta, sigma2, beta).observed)
    return user_xtvx_inverse(sandwich(beta_cov, parts), rep), sandwich(bread, scores[:, free]), bread


def variance_sandwich(arrays: ModelArrays, shape: ModelShape, held: tuple[bool, ...], theta, sigma2,
                      beta, clusters: Clusters):
    """(J⁻¹ [Σ_c s_c s_c'] J⁻¹, J⁻¹) over the free entries of φ at the estimates (θ̂, σ̂², β̂):
    the sandwich and the model-based covariance of φ̂ (`sandwiches`)."""
    return sandwiches(arrays, shape, held, theta, sigma2, beta, clusters)[1:]


# ----- host side: the tables ------------------------------------------------------------------
def robust_vcov(result) -> dict:
    """Sandwich covariances clustered by the outermost grouping factor.

    Returns {"cluster": group name, "n_clusters": C, "beta": DataFrame (p x p),
    "variance": DataFrame over φ's parameter names (NaN for a boundary term's entries),
    "variance_components": `variance_components()` with a column `se_robust`}."""
    model, params = result.model, result.params
    k = cluster_term(model.design)
    clusters = cluster_rows(model.design.terms[k].codes)
    held = held_terms(params.theta, model.shape)
    free = free_mask(held, model.shape)
    theta, sigma2, beta = (jnp.asarray(a) for a in (params.theta, params.sigma2, params.beta))
    beta_rob, phi_rob, _ = jax.device_get(cached_call(
        _sandwiches, dict(arrays=model.arrays, theta=theta, sigma2=sigma2, beta=beta, clusters=clusters),
        dict(shape=model.shape, held=held)))
    full = np.full((free.size, free.size), np.nan)
    full[np.ix_(free, free)] = phi_rob
    names = list(result.design.fixed_names)
    labels = [r["name"] for r in variance_rows(model.design, model.shape)]
    components = variance_components(result)
    components["se_robust"] = np.sqrt(np.diag(full))
    return {"cluster": model.design.terms[k].group, "n_clusters": int(clusters.rows.shape[0]),
            "beta": pd.DataFrame(beta_rob, index=names, columns=names),
            "variance": pd.DataFrame(full, index=labels, columns=labels),
            "variance_components": components}


_sandwiches = jax.jit(sandwiches, static_argnames=("shape", "held"))
