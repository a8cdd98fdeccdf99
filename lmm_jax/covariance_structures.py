"""Built-in structured covariances of a random term: glmmTMB's diag, cs, homcs, ar1, toep.

Each is Σ/σ² = D C C' D with D = diag(s) a diagonal of *scale ratios* (the SDs of the
term's effects relative to the residual σ) and C a square factor of a correlation matrix
R (R = CC', unit diagonal), so Λ = D C. The parameters are

    s   scale ratios entering as |s|, so Σ is even in each of them: as lme4's factor
        diagonals they run unbounded inside the optimiser, are made non-negative
        afterwards (`canonicalize`) and carry lme4's lower bound 0 (`lower_bounded`:
        a zero scale is a singular fit, found by the fit's boundary step);
    a   unconstrained reals mapped to correlations that keep R positive definite,
        so Newton's method never leaves the parameter space.

Heterogeneous structures have one scale per column (`dim` of them), homogeneous ones a
single scale shared by all columns (Σ = σ² s² R). Every correlation factor below is in
closed form or from the unrolled small Cholesky (no batched LAPACK: safe under vmap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from .small_linalg import small_cholesky
from .structures import CovarianceStructure


@dataclass(frozen=True)
class ScaledCorrelation(CovarianceStructure):
    """Σ/σ² = D(s) R(a) D(s): the scale ratios s first in θ, then the correlation parameters a.

    Subclasses set `heterogeneous` and implement `n_correlation`, `correlation_factor(a)`
    (a C with CC' = R(a)) and `derived_parameters`.
    """

    heterogeneous: ClassVar[bool] = True

    @property
    def n_scales(self) -> int:
        return self.dim if self.heterogeneous else 1

    @property
    def n_correlation(self) -> int:
        return 0

    @property
    def n_params(self) -> int:
        return self.n_scales + self.n_correlation

    def correlation_factor(self, a: jnp.ndarray) -> jnp.ndarray:
        return jnp.eye(self.dim, dtype=a.dtype)

    def relative_factor(self, params: jnp.ndarray) -> jnp.ndarray:
        scales = jnp.abs(params[:self.n_scales])
        factor = self.correlation_factor(params[self.n_scales:])
        return (jnp.broadcast_to(scales, (self.dim,)))[:, None] * factor

    def initial_params(self) -> np.ndarray:
        return np.concatenate([np.ones(self.n_scales), np.zeros(self.n_correlation)])

    def canonicalize(self, params: jnp.ndarray) -> jnp.ndarray:
        return params.at[:self.n_scales].set(jnp.abs(params[:self.n_scales]))

    def lower_bounded(self) -> np.ndarray:
        return np.arange(self.n_params) < self.n_scales

    def parameter_names(self, columns=None) -> tuple[str, ...]:
        if not self.heterogeneous:
            scales = ("sd_ratio",)
        else:
            labels = columns if columns is not None else [str(i + 1) for i in range(self.dim)]
            scales = tuple(f"sd_ratio[{label}]" for label in labels)
        return scales + self.correlation_names()

    def correlation_names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class Diagonal(ScaledCorrelation):
    """diag(x | g): independent effects, Σ = σ² diag(s₁², ..., s_p²); θ = s (p entries)."""

    keyword: ClassVar[str] = "diag"


def _equicorrelation(a: jnp.ndarray, p: int) -> jnp.ndarray:
    """ρ(a) = (eᵃ - 1)/(eᵃ + p - 1): monotone from -1/(p-1) (a → -∞) to 1 (a → ∞), ρ(0) = 0.

    R = (1-ρ)I + ρJ has eigenvalues 1 - ρ (p-1 times) and 1 + (p-1)ρ, whose log ratio is a;
    R is positive definite exactly for ρ in (-1/(p-1), 1). Written through
    1 - ρ = p / (eᵃ + p - 1) = exp(log p - logaddexp(a, log(p-1))) to avoid overflow.
    """
    return 1.0 - jnp.exp(jnp.log(p) - jnp.logaddexp(a, jnp.log(p - 1.0)))


@dataclass(frozen=True)
class CompoundSymmetry(ScaledCorrelation):
    """cs(x | g): Σ_ij = σ² s_i s_j (ρ + (1-ρ)δ_ij), one correlation ρ, a variance per column.

    θ = (s₁, ..., s_p, a) with ρ = (eᵃ - 1)/(eᵃ + p - 1) ∈ (-1/(p-1), 1) (`_equicorrelation`).
    C is R's symmetric square root, in closed form from R's two eigenspaces:
    C = √(1-ρ) (I - J/p) + √(1+(p-1)ρ) J/p.
    """

    keyword: ClassVar[str] = "cs"
    min_dim: ClassVar[int] = 2

    @property
    def n_correlation(self) -> int:
        return 1

    def correlation_factor(self, a: jnp.ndarray) -> jnp.ndarray:
        p = self.dim
        rho = _equicorrelation(a[0], p)
        mean = jnp.full((p, p), 1.0 / p)
        return jnp.sqrt(1.0 - rho) * (jnp.eye(p) - mean) + jnp.sqrt(1.0 + (p - 1) * rho) * mean

    def correlation_names(self) -> tuple[str, ...]:
        return ("rho.logit",)

    def derived_parameters(self, params) -> dict[str, float]:
        return {"rho": float(_equicorrelation(jnp.asarray(params)[-1], self.dim))}


@dataclass(frozen=True)
class HomogeneousCompoundSymmetry(CompoundSymmetry):
    """homcs(x | g): Σ = σ² s² ((1-ρ)I + ρJ), one variance and one correlation; θ = (s, a),
    ρ as in `CompoundSymmetry`. nlme's pdCompSymm."""

    keyword: ClassVar[str] = "homcs"
    heterogeneous: ClassVar[bool] = False


def _ar1_cholesky(rho: jnp.ndarray, sqrt_innovation: jnp.ndarray, p: int) -> jnp.ndarray:
    """Lower Cholesky factor of R_ij = ρ^|i-j| in closed form: the AR(1) recursion
    x₀ = e₀, x_i = ρ x_{i-1} + √(1-ρ²) e_i gives C_ij = ρ^(i-j) (j = 0) or ρ^(i-j) √(1-ρ²)."""
    powers = [jnp.ones_like(rho)]
    for _ in range(p - 1):
        powers.append(powers[-1] * rho)
    powers = jnp.stack(powers)
    i, j = np.tril_indices(p)
    column_scale = jnp.where(j == 0, 1.0, sqrt_innovation)
    return jnp.zeros((p, p)).at[i, j].set(powers[i - j] * column_scale)


@dataclass(frozen=True)
class AutoRegressive(ScaledCorrelation):
    """ar1(0 + f | g): Σ_ij = σ² s² ρ^|i-j| over the ordered levels of the factor f (glmmTMB's
    ar1: one variance). θ = (s, a) with ρ = tanh(a); the factor is R's closed-form Cholesky
    (√(1-ρ²) = 1/cosh(a), exact for large |a|)."""

    keyword: ClassVar[str] = "ar1"
    heterogeneous: ClassVar[bool] = False
    min_dim: ClassVar[int] = 2
    needs_factor: ClassVar[bool] = True

    @property
    def n_correlation(self) -> int:
        return 1

    def correlation_factor(self, a: jnp.ndarray) -> jnp.ndarray:
        return _ar1_cholesky(jnp.tanh(a[0]), 1.0 / jnp.cosh(a[0]), self.dim)

    def correlation_names(self) -> tuple[str, ...]:
        return ("rho.atanh",)

    def derived_parameters(self, params) -> dict[str, float]:
        return {"rho": float(jnp.tanh(jnp.asarray(params)[-1]))}


def toeplitz_correlations(partial: jnp.ndarray) -> jnp.ndarray:
    """Lag correlations (r₁, ..., r_{p-1}) from partial autocorrelations π_k ∈ (-1, 1)
    (Durbin-Levinson, run backwards): with φ_{k-1} the order-(k-1) prediction coefficients
    and v_{k-1} = Π_{j<k} (1 - π_j²) the prediction variance,

        r_k = Σ_{j<k} φ_{k-1,j} r_{k-j} + π_k v_{k-1},   φ_{k,k} = π_k,
        φ_{k,j} = φ_{k-1,j} - π_k φ_{k-1,k-j}.

    Any π in (-1, 1)^(p-1) gives a positive-definite Toeplitz R and every such R arises once.
    """
    n = partial.shape[0]
    r = [jnp.ones(())]
    phi: list = []
    variance = jnp.ones(())
    for k in range(n):
        pi = partial[k]
        r.append(sum((phi[j] * r[k - j] for j in range(k)), jnp.zeros(())) + pi * variance)
        phi = [phi[j] - pi * phi[k - 1 - j] for j in range(k)] + [pi]
        variance = variance * (1.0 - pi ** 2)
    return jnp.stack(r[1:]) if n else jnp.zeros(0)


@dataclass(frozen=True)
class Toeplitz(ScaledCorrelation):
    """toep(0 + f | g): Σ_ij = σ² s_i s_j r_|i-j| over the ordered levels of f, a variance per
    level and a correlation per lag (glmmTMB's toep). θ = (s₁, ..., s_p, a₁, ..., a_{p-1})
    with partial autocorrelations π_k = tanh(a_k) mapped to r by `toeplitz_correlations`;
    C = chol(R) by the unrolled small Cholesky."""

    keyword: ClassVar[str] = "toep"
    min_dim: ClassVar[int] = 2
    needs_factor: ClassVar[bool] = True

    @property
    def n_correlation(self) -> int:
        return self.dim - 1

    def correlation_matrix(self, a: jnp.ndarray) -> jnp.ndarray:
        r = jnp.concatenate([jnp.ones(1), toeplitz_correlations(jnp.tanh(a))])
        lag = np.abs(np.arange(self.dim)[:, None] - np.arange(self.dim)[None, :])
        return r[lag]

    def correlation_factor(self, a: jnp.ndarray) -> jnp.ndarray:
        return small_cholesky(self.correlation_matrix(a))

    def correlation_names(self) -> tuple[str, ...]:
        return tuple(f"pacf[{k + 1}].atanh" for k in range(self.dim - 1))

    def derived_parameters(self, params) -> dict[str, float]:
        r = toeplitz_correlations(jnp.tanh(jnp.asarray(params)[self.dim:]))
        return {f"rho[lag {k + 1}]": float(v) for k, v in enumerate(r)}


@dataclass(frozen=True)
class ScaledIdentity(ScaledCorrelation):
    """Σ = σ² s² I: one variance shared by independent effects; θ = (s,). Used for a term with
    a known relationship matrix (`known_covariance.py`), whose columns are K's factor."""

    keyword: ClassVar[str] = "known"
    heterogeneous: ClassVar[bool] = False
