"""Residual (R-side) structures: within-group correlations and variance functions (nlme's).

Within a correlation group g the residual covariance is σ² R₀_g with

    R₀_g = S_g C_g(ρ) S_g,   S_g = diag(s_i),   s_i = a_i(δ) / √w_i

C_g a correlation matrix (`Correlation`), a_i the variance function's SD multiplier
(`VarianceFunction`), w_i the prior weights. Each structure is a small frozen (hashable)
object holding static configuration only; its parameters travel as an unconstrained array
`params` and `natural(params)` gives them as nlme reports them.

Correlations, evaluated on per-group coordinates `coords` (n_groups, size, d):

    NoCorrelation   C = I
    AR1             C_ij = φ^|k_i - k_j|, k integer positions        φ = tanh(a)         (corAR1)
    CAR1            C_ij = φ^|t_i - t_j|, t continuous                φ = 1/(1 + e^-a)    (corCAR1)
    CompoundSymmetry C_ij = ρ (i ≠ j)       ρ = (e^a - 1/(m-1)) / (e^a + 1), m the largest group (corCompSymm)
    General         C_ij = K[k_i, k_j], K = D^-½ L L' D^-½, L unit lower triangular (free
                    entries column by column), D = diag(L L')                          (corSymm)
    Exponential     C_ij = (1 - c) exp(-d_ij / r) (i ≠ j), d Euclidean distance,
                    r = e^a₀, nugget c = 1/(1 + e^-a₁) if `nugget`, else 0            (corExp)

Variance functions, evaluated per row on `codes` (int) and `covariate` (float):

    ConstantVariance a_i = 1
    IdentVariance   a_i = exp(δ_{f_i}), δ of the first (sorted) level fixed at 0      (varIdent)
    PowerVariance   a_i = |x_i|^δ                                                     (varPower)
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Correlation:
    """Base class: unconstrained params -> per-group correlation matrices."""

    @property
    def n_params(self) -> int:
        return 0

    def initial_params(self) -> np.ndarray:
        return np.zeros(self.n_params)

    def matrices(self, params: jnp.ndarray, coords: jnp.ndarray) -> jnp.ndarray:
        """C_g for every group: (n_groups, size, size) from coords (n_groups, size, d)."""
        raise NotImplementedError

    def natural(self, params: jnp.ndarray) -> jnp.ndarray:
        """The parameters as nlme reports them (`coef(..., unconstrained = FALSE)`)."""
        return params


def _identity_like(coords: jnp.ndarray) -> jnp.ndarray:
    size = coords.shape[1]
    return jnp.broadcast_to(jnp.eye(size, dtype=coords.dtype), (coords.shape[0], size, size))


def _lags(coords: jnp.ndarray) -> jnp.ndarray:
    """|k_i - k_j| within each group from the first coordinate: (n_groups, size, size)."""
    return jnp.abs(coords[:, :, None, 0] - coords[:, None, :, 0])


@dataclass(frozen=True)
class NoCorrelation(Correlation):
    """Independent residuals within groups."""

    def matrices(self, params, coords):
        return _identity_like(coords)


@dataclass(frozen=True)
class AR1(Correlation):
    """φ^|lag| over integer positions; `max_lag` (static) sizes the table of powers, so that
    the powers are products (finite derivatives at φ = 0, unlike jnp.power)."""

    max_lag: int

    @property
    def n_params(self) -> int:
        return 1

    def matrices(self, params, coords):
        phi = jnp.tanh(params[0])
        powers = jnp.cumprod(jnp.concatenate([jnp.ones(1), jnp.full(self.max_lag, phi)]))
        return powers[_lags(coords).astype(jnp.int32)]

    def natural(self, params):
        return jnp.tanh(params)


@dataclass(frozen=True)
class CAR1(Correlation):
    """φ^|Δt| over a continuous time t, 0 < φ < 1; nlme's initial φ = 0.2."""

    @property
    def n_params(self) -> int:
        return 1

    def initial_params(self):
        return np.array([np.log(0.2 / 0.8)])

    def matrices(self, params, coords):
        log_phi = -jnp.logaddexp(0.0, -params[0])  # log(1/(1 + e^-a))
        return jnp.exp(_lags(coords) * log_phi)

    def natural(self, params):
        return 1.0 / (1.0 + jnp.exp(-params))


@dataclass(frozen=True)
class CompoundSymmetry(Correlation):
    """ρ between any two residuals of a group; -1/(m-1) < ρ < 1 keeps every group's C
    positive definite (m the largest group size). Starts at ρ = 0."""

    max_size: int

    @property
    def n_params(self) -> int:
        return 1

    def _lower(self) -> float:
        return 1.0 / max(self.max_size - 1, 1)

    def initial_params(self):
        return np.array([np.log(self._lower())])

    def matrices(self, params, coords):
        rho = self.natural(params)[0]
        eye = _identity_like(coords)
        return eye + rho * (1.0 - eye)

    def natural(self, params):
        return (jnp.exp(params) - self._lower()) / (jnp.exp(params) + 1.0)


@dataclass(frozen=True)
class General(Correlation):
    """An unstructured correlation over `dim` positions (nlme's corSymm)."""

    dim: int

    @property
    def n_params(self) -> int:
        return self.dim * (self.dim - 1) // 2

    def _strict_lower(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the strict lower triangle, column by column."""
        rows, cols = zip(*[(i, j) for j in range(self.dim) for i in range(j + 1, self.dim)]) \
            if self.dim > 1 else ((), ())
        return np.array(rows, dtype=int), np.array(cols, dtype=int)

    def full_matrix(self, params: jnp.ndarray) -> jnp.ndarray:
        """K = D^-½ L L' D^-½ (dim x dim)."""
        rows, cols = self._strict_lower()
        lower = jnp.eye(self.dim, dtype=params.dtype).at[rows, cols].set(params)
        cov = lower @ lower.T
        scale = 1.0 / jnp.sqrt(jnp.diag(cov))
        return cov * scale[:, None] * scale[None, :]

    def matrices(self, params, coords):
        positions = coords[:, :, 0].astype(jnp.int32)
        return self.full_matrix(params)[positions[:, :, None], positions[:, None, :]]

    def natural(self, params):
        rows, cols = self._strict_lower()
        return self.full_matrix(params)[rows, cols]


@dataclass(frozen=True)
class Exponential(Correlation):
    """exp(-d/range), optionally times (1 - nugget) off the diagonal; starts at
    `initial_range` (a host-chosen typical distance) and nugget 0.1."""

    initial_range: float
    nugget: bool = False

    @property
    def n_params(self) -> int:
        return 2 if self.nugget else 1

    def initial_params(self):
        start = [np.log(self.initial_range)]
        return np.array(start + [np.log(0.1 / 0.9)] if self.nugget else start)

    def matrices(self, params, coords):
        diff = coords[:, :, None, :] - coords[:, None, :, :]
        d2 = jnp.sum(diff ** 2, axis=-1)
        positive = d2 > 0
        distance = jnp.where(positive, jnp.sqrt(jnp.where(positive, d2, 1.0)), 0.0)
        cor = jnp.exp(-distance * jnp.exp(-params[0]))
        eye = _identity_like(coords)
        if self.nugget:
            cor = cor / (1.0 + jnp.exp(params[1]))  # (1 - c) = 1/(1 + e^a₁)
        return eye + (1.0 - eye) * cor

    def natural(self, params):
        out = [jnp.exp(params[:1])]
        if self.nugget:
            out.append(1.0 / (1.0 + jnp.exp(-params[1:])))
        return jnp.concatenate(out)


@dataclass(frozen=True)
class VarianceFunction:
    """Base class: unconstrained params -> per-row SD multipliers a_i."""

    @property
    def n_params(self) -> int:
        return 0

    def initial_params(self) -> np.ndarray:
        return np.zeros(self.n_params)

    def sd_multipliers(self, params, codes, covariate) -> jnp.ndarray:
        raise NotImplementedError

    def labels(self) -> tuple[str, ...]:
        """Names of the reported parameters (`natural`)."""
        return ()

    def natural(self, params: jnp.ndarray) -> jnp.ndarray:
        return params


@dataclass(frozen=True)
class ConstantVariance(VarianceFunction):
    def sd_multipliers(self, params, codes, covariate):
        return jnp.ones_like(covariate)


@dataclass(frozen=True)
class IdentVariance(VarianceFunction):
    """One SD per level; params are log SD ratios to the first level (`levels` in the order
    of their first row, nlme's varIdent: `residual_design.build_variance`)."""

    levels: tuple[str, ...]

    @property
    def n_params(self) -> int:
        return len(self.levels) - 1

    def sd_multipliers(self, params, codes, covariate):
        return jnp.exp(jnp.concatenate([jnp.zeros(1), params])[codes])

    def natural(self, params):
        return jnp.exp(jnp.concatenate([jnp.zeros(1), params]))

    def labels(self):
        return self.levels


@dataclass(frozen=True)
class PowerVariance(VarianceFunction):
    """SD ∝ |x|^δ (x ≠ 0, checked on the host); params = (δ,)."""

    @property
    def n_params(self) -> int:
        return 1

    def sd_multipliers(self, params, codes, covariate):
        return jnp.exp(params[0] * jnp.log(jnp.abs(covariate)))

    def labels(self):
        return ("power",)
