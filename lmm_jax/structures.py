"""Covariance structures of random-effect terms.

A random term with p columns has covariance Σ = σ² Λ Λ' for its p random effects
within each level of its grouping factor; Λ is the *relative covariance factor*.
A structure maps its parameter vector θ_k to Λ_k. Structures are small frozen
(hashable) objects holding only static configuration, so they can be static
arguments of jitted functions; parameter values always travel separately as arrays.

To write your own structure, subclass `CovarianceStructure` and implement
`relative_factor` (θ_k -> Λ_k, any p x p matrix) plus `n_params`; optionally
`initial_params`, `canonicalize` and `lower_bounded`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class CovarianceStructure:
    """Base class: the map θ_k -> Λ_k for a term with `dim` columns."""

    dim: int

    @property
    def n_params(self) -> int:
        raise NotImplementedError

    def relative_factor(self, params: jnp.ndarray) -> jnp.ndarray:
        """Λ_k (dim x dim) with Σ_k = σ² Λ_k Λ_k'."""
        raise NotImplementedError

    def initial_params(self) -> np.ndarray:
        raise NotImplementedError

    def canonicalize(self, params: jnp.ndarray) -> jnp.ndarray:
        """A parameter vector giving the same Σ_k, in the structure's canonical form."""
        return params

    def lower_bounded(self) -> np.ndarray:
        """Per parameter: True where the parameter has a lower bound of 0 (lme4's `lower`)."""
        return np.zeros(self.n_params, dtype=bool)


@dataclass(frozen=True)
class CholeskyFactor(CovarianceStructure):
    """lme4's unstructured term: θ_k is the column-wise lower triangle of a triangular Λ_k.

    For dim = 2, θ = (Λ11, Λ21, Λ22) and Σ/σ² = [[Λ11², Λ11Λ21], [Λ11Λ21, Λ21² + Λ22²]].
    The diagonal entries have lower bound 0 in lme4; the likelihood depends on Λ only through
    ΛΛ', which is unchanged by flipping the sign of a column, so the optimiser works without
    bounds and `canonicalize` flips columns to non-negative diagonals afterwards.
    """

    @property
    def n_params(self) -> int:
        return self.dim * (self.dim + 1) // 2

    def _indices(self) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = [], []
        for j in range(self.dim):
            for i in range(j, self.dim):
                rows.append(i)
                cols.append(j)
        return np.array(rows), np.array(cols)

    def relative_factor(self, params: jnp.ndarray) -> jnp.ndarray:
        rows, cols = self._indices()
        return jnp.zeros((self.dim, self.dim), params.dtype).at[rows, cols].set(params)

    def initial_params(self) -> np.ndarray:
        rows, cols = self._indices()
        return (rows == cols).astype(float)

    def diagonal_mask(self) -> np.ndarray:
        rows, cols = self._indices()
        return rows == cols

    def canonicalize(self, params: jnp.ndarray) -> jnp.ndarray:
        rows, cols = self._indices()
        diagonal = params[np.flatnonzero(rows == cols)]
        column_sign = jnp.where(diagonal < 0, -1.0, 1.0)
        return params * column_sign[cols]

    def lower_bounded(self) -> np.ndarray:
        return self.diagonal_mask()
