"""Differentiable fits: derivatives of θ̂, β̂, σ̂² and the BLUPs w.r.t. y, X and the weights.

θ̂(data) is defined implicitly by the first-order condition g(θ̂; data) = 0 with
g = ∇_θ D and D the deviance (ML) or REML criterion of `model.deviance_function`. The
implicit function theorem gives, with H = ∇²_θ D at θ̂ (the exact Hessian),

    dθ̂ = -H⁻¹ [∂g/∂data · ddata].

`implicit_theta` is the identity in its primal value (θ̂ comes from the optimiser, run on
`stop_gradient`-ed data, so JAX never differentiates through its while_loop) and carries
this rule as a `jax.custom_jvp`. The rule is linear in the data tangents (a JVP of g
followed by a solve with a primal-only H), so JAX transposes it for reverse mode:
`jax.grad`, `jax.jacrev`, `jax.jacfwd`, `jit` and `vmap` all apply. β̂(θ̂, data), σ̂²,
the criterion and the conditional modes are then explicit functions of (θ̂, data),
evaluated after the solve, and their derivatives follow by the chain rule.

Boundary (singular fits): a bounded θ entry (a factor diagonal, lower bound 0) that
is exactly 0 at the optimum is held fixed, with zero derivative, and the theorem is
applied on the free sub-block only, dθ̂_F = -H_FF⁻¹ ∂g_F/∂data · ddata. The fit
reached the boundary because D increases into the feasible side (otherwise the boundary
point would not have been kept). D is even in the sign of each column of Λ, so for a
column whose only entry is its diagonal (a (1 | g) term) ∂D/∂θ_b = 0 at θ_b = 0 always
and the increase is second order (∂²D/∂θ_b² > 0, i.e. D increases in the variance θ_b²);
either way, for small enough data perturbations the optimum stays on the boundary and the
one-sided derivative of θ̂_b is zero. (At the exceptional data where the increase
vanishes, θ̂(data) has a kink and no derivative exists; we return the on-boundary branch.)
Tested against refits on dyestuff2 (lme4: singular) in tests/test_implicit.py.

    model = Model.from_formula("Reaction ~ Days + (Days | Subject)", data)
    jax.jacobian(lambda y: model.fit_params(y).beta)(model.arrays.y)   # (p, n)
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .arrays import ModelArrays, ModelShape, bounded_mask
from .blocked import blocked_random_effects, cross_products
from .conditioning import conditioned
from .model import (FitParams, criterion, deviance_function, fit_arrays, profile_function,
                    sigma2_estimate)
from .newton import EXACT_FIT


def boundary_free_mask(theta: jnp.ndarray, shape: ModelShape) -> jnp.ndarray:
    """True for θ entries the implicit derivative moves: all but bounded entries at exactly 0."""
    return ~(jnp.asarray(bounded_mask(shape)) & (theta == 0.0))


@partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def implicit_theta(arrays: ModelArrays, theta_hat: jnp.ndarray, shape: ModelShape,
                   evaluator: str = "blocked") -> jnp.ndarray:
    """θ̂ itself; its derivative w.r.t. `arrays` is the implicit-function-theorem one.

    `theta_hat` must be a minimiser of the criterion on `arrays` (its own tangent is
    ignored: locally the optimum does not depend on where the optimiser started).
    """
    return theta_hat


@implicit_theta.defjvp
def _implicit_theta_jvp(shape, evaluator, primals, tangents):
    arrays, theta_hat = primals
    arrays_dot, _ = tangents
    theta_hat = jax.lax.stop_gradient(theta_hat)

    def gradient(data):
        return jax.grad(deviance_function(data, shape, evaluator))(theta_hat)

    _, mixed = jax.jvp(gradient, (arrays,), (arrays_dot,))  # ∂g/∂data · ddata
    hessian = jax.hessian(deviance_function(arrays, shape, evaluator))(theta_hat)
    free = boundary_free_mask(theta_hat, shape)
    both = free[:, None] & free[None, :]
    hessian_free = jnp.where(both, hessian, jnp.eye(theta_hat.shape[0]))
    theta_dot = -jnp.linalg.solve(hessian_free, jnp.where(free, mixed, 0.0))
    return theta_hat, jnp.where(free, theta_dot, 0.0)


@partial(jax.jit, static_argnames=("shape", "maxiter", "evaluator"))
def differentiable_fit_arrays(arrays: ModelArrays, shape: ModelShape, theta0: jnp.ndarray,
                              maxiter: int = 200, evaluator: str = "blocked") -> FitParams:
    """`model.fit_arrays` with derivatives w.r.t. y, X and weights (module docstring).

    The primal values are `fit_arrays`'s exactly; the convergence record (gradient norm,
    iterations, status, singular flag) carries no derivative.
    """
    fit = fit_arrays(jax.lax.stop_gradient(arrays), shape, jax.lax.stop_gradient(theta0),
                     maxiter=maxiter, evaluator=evaluator)
    return estimates_at_optimum(arrays, shape, fit, evaluator)


def estimates_at_optimum(arrays: ModelArrays, shape: ModelShape, fit: FitParams,
                         evaluator: str = "blocked") -> FitParams:
    """`fit` (a `fit_arrays` result on `arrays`) with θ̂, β̂, σ̂² and the criterion as
    differentiable functions of `arrays`: differentiate a finished fit without re-running
    (or compiling) the optimiser."""
    theta = implicit_theta(arrays, jax.lax.stop_gradient(fit.theta), shape, evaluator)
    profiled = profile_function(arrays, shape, evaluator)(theta)
    objective = criterion(profiled, arrays, shape)
    beta = jnp.where(fit.status == EXACT_FIT, fit.beta, profiled.beta)  # NaN θ̂: keep b₀
    return fit._replace(theta=theta, beta=beta,
                        sigma2=sigma2_estimate(profiled, arrays, shape),
                        objective=objective, loglik=-0.5 * objective)


@partial(jax.jit, static_argnames="shape")
def conditional_modes(arrays: ModelArrays, shape: ModelShape, params: FitParams) -> jnp.ndarray:
    """All terms' conditional modes b̂ at (θ̂, σ̂²), concatenated term by term, level-major."""
    effects = blocked_random_effects(params.theta, cross_products(conditioned(arrays)[0], shape), shape,
                                     params.sigma2)
    return jnp.concatenate([modes.reshape(-1) for modes in effects.modes])


class Influence(NamedTuple):
    """∂β̂/∂y (p, n), ∂θ̂/∂y (k, n), ∂β̂/∂w (p, n), ∂θ̂/∂w (k, n): derivatives w.r.t. each
    observation, and per level of the first random term the approximate change in β̂ when
    the level's rows are deleted (m₁, p)."""

    dbeta_dy: jnp.ndarray
    dtheta_dy: jnp.ndarray
    dbeta_dweights: jnp.ndarray
    dtheta_dweights: jnp.ndarray
    group_deletion: jnp.ndarray


@partial(jax.jit, static_argnames="shape")
def influence(arrays: ModelArrays, shape: ModelShape, fit: FitParams) -> Influence:
    """Per-observation derivatives of β̂ and θ̂ at a finished fit (reverse mode, one pass
    per output entry).

    Leave-one-group-out (levels of the first random term), without refits: deleting the
    rows S of a level is setting their weights to 0. θ moves to first order,
    θ̂₋ₛ ≈ θ̂ - Σ_{i∈S} ∂θ̂/∂w_i w_i, and β̂₋ₛ = β̂(θ̂₋ₛ; data without S) is then the exact
    GLS solution at that θ (β̂ is a closed form given θ; the purely first-order
    Δβ̂ ≈ -Σ ∂β̂/∂w_i w_i badly underestimates deletions of whole groups, whose own random
    effects absorb most of a first-order perturbation)."""
    def estimates(y, weights):
        data = dataclasses.replace(arrays, y=y, weights=weights)
        params = estimates_at_optimum(data, shape, fit)
        return params.beta, params.theta

    (dbeta_dy, dbeta_dw), (dtheta_dy, dtheta_dw) = jax.jacrev(estimates, argnums=(0, 1))(
        arrays.y, arrays.weights)

    def deleted_beta(level):
        rows = arrays.codes[0] == level
        theta = fit.theta - jnp.where(rows, arrays.weights, 0.0) @ dtheta_dw.T
        weights = jnp.where(rows, 0.0, arrays.weights)
        data = dataclasses.replace(arrays, weights=weights)
        return profile_function(data, shape)(theta).beta - fit.beta

    deletion = jax.vmap(deleted_beta)(jnp.arange(shape.n_levels[0]))
    return Influence(dbeta_dy, dtheta_dy, dbeta_dw, dtheta_dw, deletion)
