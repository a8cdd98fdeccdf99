"""Fit an unstructured random term that has an intercept on its centred columns, and map θ̂
back to the user's columns once.

A term (1 + x | g) with x of large mean (x + 1e4) has nearly collinear columns: lme4's θ of
the optimum then lies in a narrow valley (a correlation near -1, a factor diagonal near 0)
and its Z'Z loses digits, so the optimiser stopped far from the optimum (deviance 494.96 for
480.47). The unstructured model is invariant under an invertible map of a term's columns.
With u a row of the term's values, i₀ its column of ones and m the other columns' means (0
at i₀):

    u = u_c B,   B = I + e_{i₀} m',   u_c = u B⁻¹ = u - u_{i₀} m'   (the centred columns)

so Z b = Z_c (B b): the centred model has b_c = B b, Σ_c = B Σ B' and Λ_cΛ_c' = BΛΛ'B'. The
fit optimises θ_c on the centred values; β̂, σ̂² and the likelihood are the same, and

    Λ = the lower-triangular factor of B⁻¹Λ_c with a non-negative diagonal (lme4's θ):
        (B⁻¹Λ_c)' = QR  =>  B⁻¹Λ_c (B⁻¹Λ_c)' = R'R,  Λ = R' with its columns' signs flipped.

Only `CholeskyFactor` terms of dim > 1: a diagonal or structured covariance is not invariant
under B (its model would change), so those terms are fitted as they are. A term without a
column of ones gets m = 0, B = I, and its values and θ pass through unchanged. B carries no
derivative (as `conditioning.py`'s R): the identities hold for every fixed B.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .arrays import ModelArrays, ModelShape
from .blocked import RandomEffects
from .structures import CholeskyFactor


def centring_maps(arrays: ModelArrays, shape: ModelShape) -> tuple:
    """Per term: B (module docstring) for an unstructured term of dim > 1, else None. The
    column of ones and the means are read from the rows of positive weight (padding rows
    of a ragged batch have weight 0)."""
    used = jax.lax.stop_gradient(arrays.weights) > 0
    maps = []
    for structure, values in zip(shape.structures, arrays.values):
        if type(structure) is not CholeskyFactor or structure.dim < 2:
            maps.append(None)
            continue
        values = jax.lax.stop_gradient(values)
        ones = jnp.all((values == 1.0) | ~used[:, None], axis=0) & jnp.any(used)
        intercept = jax.nn.one_hot(jnp.argmax(ones), structure.dim, dtype=values.dtype) * jnp.any(ones)
        means = jnp.sum(jnp.where(used[:, None], values, 0.0), axis=0) / jnp.maximum(jnp.sum(used), 1)
        means = jnp.where(intercept > 0, 0.0, means) * jnp.any(ones)
        maps.append(jnp.eye(structure.dim, dtype=values.dtype) + jnp.outer(intercept, means))
    return tuple(maps)


def _inverse(b: jnp.ndarray) -> jnp.ndarray:
    """B⁻¹ = I - e_{i₀}m' = 2I - B ((e_{i₀}m')² = 0 since m_{i₀} = 0)."""
    return 2.0 * jnp.eye(b.shape[0], dtype=b.dtype) - b


def centred_arrays(arrays: ModelArrays, maps: tuple) -> ModelArrays:
    """The arrays with each mapped term's values u_c = u B⁻¹."""
    values = tuple(v if b is None else v @ _inverse(b) for v, b in zip(arrays.values, maps))
    return dataclasses.replace(arrays, values=values)


def _lower_factor(m: jnp.ndarray) -> jnp.ndarray:
    """L lower triangular with a non-negative diagonal and LL' = MM' (module docstring)."""
    _, r = jnp.linalg.qr(m.T)
    lower = r.T
    return lower * jnp.where(jnp.diagonal(lower) < 0, -1.0, 1.0).astype(m.dtype)[None, :]


def _mapped_theta(theta: jnp.ndarray, maps: tuple, shape: ModelShape, inverse: bool) -> jnp.ndarray:
    parts = []
    for structure, sl, b in zip(shape.structures, shape.theta_slices(), maps):
        if b is None:
            parts.append(theta[sl])
            continue
        factor = (_inverse(b) if inverse else b) @ structure.relative_factor(theta[sl])
        rows, cols = structure._indices()
        parts.append(_lower_factor(factor)[rows, cols])
    return jnp.concatenate(parts) if parts else theta


def user_theta(theta_c: jnp.ndarray, maps: tuple, shape: ModelShape) -> jnp.ndarray:
    """θ of the user's columns from θ_c of the centred ones: Λ = factor of B⁻¹Λ_c."""
    return _mapped_theta(theta_c, maps, shape, inverse=True)


def centred_theta(theta: jnp.ndarray, maps: tuple, shape: ModelShape) -> jnp.ndarray:
    """θ_c of the centred columns from the user's θ: Λ_c = factor of BΛ."""
    return _mapped_theta(theta, maps, shape, inverse=False)


def user_random_effects(effects: RandomEffects, maps: tuple) -> RandomEffects:
    """The centred terms' conditional modes and covariances on the user's columns:
    b = B⁻¹b_c per level, Var(b | y) = B⁻¹ Var(b_c | y) B⁻ᵀ."""
    modes, covs = [], []
    for mode, cov, b in zip(effects.modes, effects.cond_cov, maps):
        inverse = None if b is None else _inverse(b)
        modes.append(mode if b is None else mode @ inverse.T)
        covs.append(cov if b is None else jnp.einsum("ij,ljk,hk->lih", inverse, cov, inverse))
    return RandomEffects(modes, covs)


def variance_scale_map(maps: tuple, shape: ModelShape) -> np.ndarray:
    """T with φ = T φ_c (host side): each mapped term's Σ = B⁻¹Σ_cB⁻ᵀ in `variance_scale.py`'s
    vech order (linear in Σ_c), the other entries (σ² included) unchanged."""
    from .variance_scale import _vech_indices, n_variance_parameters

    out = np.eye(n_variance_parameters(shape))
    start = 0
    for dim, b in zip(shape.dims, maps):
        rows, cols = _vech_indices(dim)
        if b is not None:
            inverse = np.asarray(_inverse(b))
            block = np.zeros((rows.size, rows.size))
            for k, (i, j) in enumerate(zip(rows, cols)):
                unit = np.zeros((dim, dim))
                unit[i, j] = unit[j, i] = 1.0
                block[:, k] = (inverse @ unit @ inverse.T)[rows, cols]
            out[start:start + rows.size, start:start + rows.size] = block
        start += rows.size
    return out
