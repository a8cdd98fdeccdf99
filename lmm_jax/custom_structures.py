"""User-defined covariance structures and the registry of formula keywords.

A structure is reachable from a formula through its keyword: ``ar1(0 + f | g)`` looks up
"ar1" here and calls its factory with the term's number of columns. Register your own:

    def matern32(params, dim):                      # Σ/σ² for a term with dim columns
        s, log_range = params[0], params[1]
        lag = jnp.abs(times[:, None] - times[None, :]) / jnp.exp(log_range)
        return s ** 2 * (1 + jnp.sqrt(3) * lag) * jnp.exp(-jnp.sqrt(3) * lag)

    lmm_jax.register_structure("matern", lmm_jax.structure_from_function(
        matern32, n_params=2, names=("sd_ratio", "log_range"), initial=(1.0, 0.0),
        scale_parameters=(0,)))
    lmm_jax.fit("y ~ t + matern(0 + C(t) | subject)", data)

A factory is anything called as ``factory(dim)`` that returns a `CovarianceStructure`: a
subclass of it (the class itself) or the result of `structure_from_function`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax.numpy as jnp
import numpy as np

from .covariance_structures import (AutoRegressive, CompoundSymmetry, Diagonal,
                                    HomogeneousCompoundSymmetry, Toeplitz)
from .small_linalg import small_cholesky
from .structures import CholeskyFactor, CovarianceStructure

OUTPUTS = ("covariance", "factor")


@dataclass(frozen=True)
class FunctionStructure(CovarianceStructure):
    """A structure from a plain JAX function `function(params, dim)` returning Σ_k/σ²
    (`output="covariance"`, factored by the unrolled Cholesky: it must be positive
    definite at every θ the optimiser visits) or a factor Λ_k (`output="factor"`).

    `scale_parameters`: indices of entries that enter Σ only through their square (signed
    scales); they are made non-negative after the fit and carry lme4's lower bound 0.
    Hashable (the function by identity), so it is a valid static argument of `jax.jit`.
    """

    function: Callable = None
    n: int = 0
    names: tuple[str, ...] = ()
    initial: tuple[float, ...] = ()
    output: str = "covariance"
    scale_parameters: tuple[int, ...] = ()
    label: str = "custom"

    @property
    def keyword(self) -> str:  # type: ignore[override]
        return self.label

    @property
    def n_params(self) -> int:
        return self.n

    def relative_factor(self, params: jnp.ndarray) -> jnp.ndarray:
        matrix = jnp.asarray(self.function(params, self.dim))
        return small_cholesky(matrix) if self.output == "covariance" else matrix

    def initial_params(self) -> np.ndarray:
        return np.asarray(self.initial, dtype=float)

    def canonicalize(self, params: jnp.ndarray) -> jnp.ndarray:
        index = np.asarray(self.scale_parameters, dtype=int)
        return params.at[index].set(jnp.abs(params[index])) if index.size else params

    def lower_bounded(self) -> np.ndarray:
        return np.isin(np.arange(self.n), self.scale_parameters)

    def parameter_names(self, columns=None) -> tuple[str, ...]:
        return self.names


@dataclass(frozen=True)
class FunctionStructureFactory:
    """dim -> `FunctionStructure`: what `structure_from_function` returns (hashable)."""

    function: Callable
    n_params: int
    names: tuple[str, ...]
    initial: tuple[float, ...]
    output: str
    scale_parameters: tuple[int, ...]
    label: str

    def __call__(self, dim: int) -> FunctionStructure:
        return FunctionStructure(dim, self.function, self.n_params, self.names, self.initial,
                                 self.output, self.scale_parameters, self.label)


def structure_from_function(function: Callable, n_params: int, names=None, initial=None,
                            output: str = "covariance", scale_parameters=(),
                            label: str = "custom") -> FunctionStructureFactory:
    """Wrap `function(params, dim) -> Σ_k/σ²` (or -> Λ_k with `output="factor"`) as a
    structure factory for `register_structure` (or call it with `dim` for a structure).

    `n_params`: length of θ_k; `names`: their names (default theta[1], ...); `initial`:
    starting values (default: ones; choose values where Σ_k is positive definite).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if not callable(function):
        raise TypeError(f"function must be callable (params, dim) -> matrix, got {type(function).__name__}")
    n_params = int(n_params)
    names = tuple(names) if names is not None else tuple(f"theta[{i + 1}]" for i in range(n_params))
    initial = tuple(float(v) for v in (np.ones(n_params) if initial is None else np.ravel(initial)))
    for what, length in (("names", len(names)), ("initial", len(initial))):
        if length != n_params:
            raise ValueError(f"{what} has {length} entries for n_params = {n_params}")
    scale_parameters = tuple(int(i) for i in scale_parameters)
    if any(not 0 <= i < n_params for i in scale_parameters):
        raise ValueError(f"scale_parameters {scale_parameters} must index 0..{n_params - 1}")
    return FunctionStructureFactory(function, n_params, names, initial, output, scale_parameters, label)


_BUILT_IN: dict[str, Callable[[int], CovarianceStructure]] = {
    "us": CholeskyFactor, "diag": Diagonal, "cs": CompoundSymmetry,
    "homcs": HomogeneousCompoundSymmetry, "ar1": AutoRegressive, "toep": Toeplitz,
}
_REGISTRY: dict[str, Callable[[int], CovarianceStructure]] = dict(_BUILT_IN)
RESERVED = ("known",)  # the keyword reports use for a known relationship matrix


def register_structure(keyword: str, factory: Callable[[int], CovarianceStructure]) -> None:
    """Make `keyword(expr | g)` usable in formulas: `factory(dim)` builds the term's structure.

    Re-registering a keyword replaces it (built-in keywords cannot be replaced)."""
    if not isinstance(keyword, str) or not keyword.isidentifier():
        raise ValueError(f"keyword must be a Python-identifier-like name, got {keyword!r}")
    if keyword in _BUILT_IN or keyword in RESERVED:
        raise ValueError(f"{keyword!r} is a built-in structure keyword and cannot be replaced")
    if not callable(factory):
        raise TypeError("factory must be callable as factory(dim) -> CovarianceStructure")
    _REGISTRY[keyword] = factory


def structure_keywords() -> tuple[str, ...]:
    """The formula keywords currently known (built-in first, then registered ones)."""
    return tuple(_REGISTRY)


def make_structure(keyword: str, dim: int, source: str) -> CovarianceStructure:
    """The structure of a term `keyword(...)` with `dim` columns; a clear error when the
    keyword is unknown, the factory fails or returns something else."""
    from .formula import FormulaError

    if keyword not in _REGISTRY:
        raise FormulaError(f"random term {source!r}: unknown covariance structure {keyword!r} "
                           f"(supported: {', '.join(structure_keywords())})")
    structure = _REGISTRY[keyword](dim)
    if not isinstance(structure, CovarianceStructure):
        raise TypeError(f"the factory of structure {keyword!r} returned {type(structure).__name__}, "
                        "not a CovarianceStructure")
    if structure.dim != dim:
        raise ValueError(f"the factory of structure {keyword!r} built dim {structure.dim} for a "
                         f"term with {dim} columns ({source!r})")
    return structure


def structure_for_term(keyword: str, columns: tuple[str, ...], values: np.ndarray,
                       source: str) -> CovarianceStructure:
    """The structure of a random term, checked against its model-matrix columns: at least
    `min_dim` columns, and for `needs_factor` structures (ar1, toep) indicator columns of
    one factor's levels (each row has exactly one 1), as `0 + f` gives."""
    from .design import DataError

    structure = make_structure(keyword, len(columns), source)
    if len(columns) < structure.min_dim:
        raise DataError(f"random term {source!r}: structure {keyword!r} needs at least "
                        f"{structure.min_dim} columns, the term has {len(columns)} ({list(columns)})")
    if structure.needs_factor:
        indicator = np.all((values == 0) | (values == 1)) and np.all(values.sum(axis=1) == 1)
        if not indicator:
            raise DataError(
                f"random term {source!r}: {keyword} is a structure over the ordered levels of a "
                f"factor and needs one indicator column per level, as in {keyword}(0 + f | g) with f "
                f"a factor (or C(x)); got columns {list(columns)}")
    return structure
