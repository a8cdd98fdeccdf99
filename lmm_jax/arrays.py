"""The model's arrays as a JAX pytree, with the static shape information kept apart.

`ModelArrays` holds what a fit reads (y, X, prior weights, and per random term the
level code and model-matrix row of every observation). `ModelShape` holds what a
compiled program is specialised on (numbers of levels, term dimensions, structures,
REML or ML, and whether the residual scale is known); it is hashable so that it can be a static argument of `jax.jit`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .structures import CovarianceStructure


def to_device(host_arrays):
    """A host array, or a pytree of them, copied to the default device as it is.
    `jnp.asarray` would compile a conversion program per shape (~10-20 ms each in a cold
    process such as the CLI's), and a plain `jax.device_put` may alias the host buffer on a
    CPU (seen for int32 codes), so a later change to that buffer (a user's frame column)
    would change the model's arrays. One call for a whole pytree: a sleepstudy model's
    nine arrays in 0.20 ms instead of 0.33 ms one by one."""
    return jax.device_put(host_arrays, may_alias=False)


def to_host(device_arrays):
    """A device array, or a pytree of them, as numpy arrays (`jax.device_get`'s result).
    On a CPU each leaf is read directly: `jax.device_get` first starts an asynchronous
    copy of every leaf, which pays where copies overlap (a GPU) but on a CPU costs ~20 µs a
    leaf (a sleepstudy fit's 14 result leaves: 0.30 -> 0.07 ms)."""
    if jax.default_backend() != "cpu":
        return jax.device_get(device_arrays)
    return jax.tree_util.tree_map(np.asarray, device_arrays)


@dataclass(frozen=True)
class ModelShape:
    """Static description of a model: term sizes, their structures and the criterion.

    `known_scale`: the residual variances are known, Var(ε_i) = 1/w_i, so σ² = 1 is fixed
    instead of profiled (`likelihood.known_scale_deviance`). `padded`: the arrays carry
    padding rows of prior weight 0 and levels without rows (`ragged.py`), so n is counted.
    """

    n_levels: tuple[int, ...]
    structures: tuple[CovarianceStructure, ...]
    reml: bool
    known_scale: bool = False
    padded: bool = False

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(s.dim for s in self.structures)

    @property
    def n_theta(self) -> int:
        return sum(s.n_params for s in self.structures)

    def theta_slices(self) -> list[slice]:
        out, start = [], 0
        for s in self.structures:
            out.append(slice(start, start + s.n_params))
            start += s.n_params
        return out

    def initial_theta(self) -> np.ndarray:
        return np.concatenate([s.initial_params() for s in self.structures])


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ModelArrays:
    """y (n,), X (n, p), prior weights (n,), per term: codes (n,) and values (n, p_k);
    for a large crossed design, the non-zero pairs of the Schur complement's sparse
    product (`sparse_schur.SchurPairs`, found from the codes once), else None."""

    y: jnp.ndarray
    X: jnp.ndarray
    weights: jnp.ndarray
    codes: tuple[jnp.ndarray, ...]
    values: tuple[jnp.ndarray, ...]
    schur_pairs: tuple | None = None


def relative_factors(theta: jnp.ndarray, shape: ModelShape) -> list[jnp.ndarray]:
    """θ -> [Λ_1, ..., Λ_K], each term's relative covariance factor."""
    return [s.relative_factor(theta[sl]) for s, sl in zip(shape.structures, shape.theta_slices())]


def canonical_theta(theta: jnp.ndarray, shape: ModelShape) -> jnp.ndarray:
    """θ with each term in its structure's canonical form (lme4: non-negative diagonals)."""
    return jnp.concatenate([s.canonicalize(theta[sl])
                            for s, sl in zip(shape.structures, shape.theta_slices())])


def bounded_mask(shape: ModelShape) -> np.ndarray:
    """True for θ entries with a lower bound of 0 (variances' factors: lme4's isSingular checks these)."""
    return np.concatenate([s.lower_bounded() for s in shape.structures])
