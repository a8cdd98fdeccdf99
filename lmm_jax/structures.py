"""Covariance structures of random-effect terms.

A random term with p columns has covariance Σ = σ² Λ Λ' for its p random effects
within each level of its grouping factor; Λ is the *relative covariance factor*.
A structure maps its parameter vector θ_k to Λ_k. Structures are small frozen
(hashable) objects holding only static configuration, so they can be static
arguments of jitted functions; parameter values always travel separately as arrays.

Λ_k need not be triangular: the likelihood sees it only through Λ_k'Z'ZΛ_k and ΛΛ', so
any square factor of Σ_k/σ² serves (a closed-form symmetric square root, say). σ² is
profiled out, so the parameters set the *relative* covariance Σ_k/σ².

Built-in structures and their formula keywords (glmmTMB's names):

    us(x | g)      CholeskyFactor               unstructured, lme4's θ (the default)
    diag(x | g)    Diagonal                     independent effects, one variance each
    cs(x | g)      CompoundSymmetry             one correlation ρ, a variance per column
    homcs(x | g)   HomogeneousCompoundSymmetry  one correlation ρ, one variance
    ar1(0+f | g)   AutoRegressive               s² ρ^|i-j| over the ordered levels of f
    toep(0+f | g)  Toeplitz                     s_i s_j r_|i-j|, a variance per level

(`covariance_structures.py`), and for a known relationship matrix K, `ScaledIdentity`
(`known_covariance.py`).

Your own structure, in one of two ways (`custom_structures.py`):

1. subclass `CovarianceStructure` (a frozen dataclass) and implement `n_params` and
   `relative_factor` (θ_k -> Λ_k, any p x p matrix with Σ_k/σ² = Λ_kΛ_k'); optionally
   `initial_params`, `canonicalize`, `lower_bounded`, `parameter_names` and
   `derived_parameters` (interpretable values such as ρ, reported by `FitResult`);
2. or write a plain JAX function `f(params, dim) -> Σ_k/σ²` (or -> Λ_k) and wrap it:
   `lmm_jax.structure_from_function(f, n_params=2, names=("sd_ratio", "log_range"))`.

Then `lmm_jax.register_structure("name", factory)` (factory: dim -> structure, e.g. the
class itself or the wrapper above) makes `name(expr | g)` usable in every formula. Nothing
else changes: the evaluators, the Newton fit and the reports use Λ_k only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class CovarianceStructure:
    """Base class: the map θ_k -> Λ_k for a term with `dim` columns.

    Class attributes: `keyword` (the formula keyword, for reports), `min_dim` (fewest
    columns it is defined for) and `needs_factor` (True when the columns must be the
    indicator columns of one factor's levels, as in `ar1(0 + f | g)`).
    """

    dim: int
    keyword: ClassVar[str] = "custom"
    min_dim: ClassVar[int] = 1
    needs_factor: ClassVar[bool] = False

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

    def parameter_names(self, columns: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """Names of the entries of θ_k (`columns`: the term's column names, for labels)."""
        return tuple(f"theta[{i + 1}]" for i in range(self.n_params))

    def derived_parameters(self, params) -> dict[str, float]:
        """Interpretable parameters beyond the variances (e.g. {'rho': ...}); none by default."""
        return {}


@dataclass(frozen=True)
class CholeskyFactor(CovarianceStructure):
    """lme4's unstructured term: θ_k is the column-wise lower triangle of a triangular Λ_k.

    For dim = 2, θ = (Λ11, Λ21, Λ22) and Σ/σ² = [[Λ11², Λ11Λ21], [Λ11Λ21, Λ21² + Λ22²]].
    The diagonal entries have lower bound 0 in lme4; the likelihood depends on Λ only through
    ΛΛ', which is unchanged by flipping the sign of a column, so the optimiser works without
    bounds and `canonicalize` flips columns to non-negative diagonals afterwards.
    """

    keyword: ClassVar[str] = "us"

    @property
    def n_params(self) -> int:
        return self.dim * (self.dim + 1) // 2

    def parameter_names(self, columns=None) -> tuple[str, ...]:
        """lme4's names of θ's entries (`getME(m, "theta")` without the group): a diagonal
        entry is named after its column, entry (i, j) below it "column_i.column_j";
        without `columns`, "lambda[i,j]"."""
        rows, cols = self._indices()
        if columns is None:
            return tuple(f"lambda[{i + 1},{j + 1}]" for i, j in zip(rows, cols))
        return tuple(columns[i] if i == j else f"{columns[i]}.{columns[j]}" for i, j in zip(rows, cols))

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
