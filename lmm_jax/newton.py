"""A damped Newton (Levenberg-Marquardt trust-region) minimiser with exact Hessians, in jit.

Each iteration solves (H + μI) d = -g with μ ≥ max(0, -λ_min(H)) + ε, so the step is a
descent direction even where H is indefinite, and adapts μ by the ratio ρ of actual to
predicted reduction (accept when ρ > 1e-4; shrink μ when ρ > 0.5, grow it on rejection).
Parameters with `free = False` stay where they start (their gradient and Hessian rows
are masked), which serves boundary fits and profiling.

Returns an `OptimResult` record with a status code instead of raising inside jit.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

CONVERGED_GRADIENT = 0
CONVERGED_NO_PROGRESS = 1
MAX_ITERATIONS = 2
NOT_FINITE = 3
STATUS_MESSAGES = {
    CONVERGED_GRADIENT: "converged: gradient below tolerance",
    CONVERGED_NO_PROGRESS: "converged: no further decrease possible at machine precision",
    MAX_ITERATIONS: "stopped: maximum number of iterations reached",
    NOT_FINITE: "failed: the objective is not finite at the starting values",
}


class OptimResult(NamedTuple):
    x: jnp.ndarray
    fun: jnp.ndarray
    grad: jnp.ndarray
    hess: jnp.ndarray
    iterations: jnp.ndarray
    status: jnp.ndarray

    @property
    def converged(self):
        return self.status <= CONVERGED_NO_PROGRESS


class _State(NamedTuple):
    x: jnp.ndarray
    fun: jnp.ndarray
    grad: jnp.ndarray
    hess: jnp.ndarray
    damping: jnp.ndarray
    iteration: jnp.ndarray
    status: jnp.ndarray  # -1 while running


def value_grad_hess(f: Callable) -> Callable:
    """x -> (f(x), ∇f(x), ∇²f(x)) in one forward-over-reverse pass."""
    def grad_with_value(x):
        value, grad = jax.value_and_grad(f)(x)
        return grad, (value, grad)

    def evaluate(x):
        hess, (value, grad) = jax.jacfwd(grad_with_value, has_aux=True)(x)
        return value, grad, 0.5 * (hess + hess.T)

    return evaluate


def minimize(f: Callable, x0: jnp.ndarray, free: jnp.ndarray | None = None, *,
             gtol: float = 1e-7, maxiter: int = 200) -> OptimResult:
    """Minimise f from x0 over the entries where `free` is True (all by default)."""
    vgh = value_grad_hess(f)
    free = jnp.ones(x0.shape, bool) if free is None else free

    def masked(value, grad, hess):
        grad = jnp.where(free, grad, 0.0)
        hess = jnp.where(free[:, None] & free[None, :], hess, jnp.diag(jnp.where(free, 0.0, 1.0)))
        return value, grad, hess

    value, grad, hess = masked(*vgh(x0))
    status = jnp.where(jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)), -1, NOT_FINITE)
    status = jnp.where((status == -1) & (jnp.max(jnp.abs(grad)) <= gtol), CONVERGED_GRADIENT, status)
    state = _State(x0, value, grad, hess, jnp.asarray(0.0, x0.dtype), jnp.asarray(0), status)

    def step(s: _State) -> _State:
        eigvals, eigvecs = jnp.linalg.eigh(s.hess)
        scale = jnp.maximum(1.0, jnp.max(jnp.abs(eigvals)))
        shift = jnp.maximum(s.damping, jnp.maximum(0.0, -eigvals[0]) + 1e-10 * scale)
        direction = -eigvecs @ ((eigvecs.T @ s.grad) / (eigvals + shift))
        predicted = -(s.grad @ direction + 0.5 * direction @ s.hess @ direction)
        x_new = s.x + direction
        value, grad, hess = masked(*vgh(x_new))
        actual = s.fun - value
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
        ratio = jnp.where(ok, actual / jnp.maximum(predicted, 1e-300), -jnp.inf)
        accept = ratio > 1e-4
        grow = jnp.maximum(4.0 * s.damping, 1e-3 * scale)
        damping = jnp.where(accept, jnp.where(ratio > 0.5, 0.0, s.damping), grow)
        x = jnp.where(accept, x_new, s.x)
        fun = jnp.where(accept, value, s.fun)
        grad = jnp.where(accept, grad, s.grad)
        hess = jnp.where(accept, hess, s.hess)
        iteration = s.iteration + 1
        tiny = predicted <= 1e-15 * (1.0 + jnp.abs(s.fun))
        status = jnp.where(jnp.max(jnp.abs(grad)) <= gtol, CONVERGED_GRADIENT,
                           jnp.where(tiny, CONVERGED_NO_PROGRESS,
                                     jnp.where(iteration >= maxiter, MAX_ITERATIONS, -1)))
        return _State(x, fun, grad, hess, damping, iteration, status)

    final = jax.lax.while_loop(lambda s: s.status < 0, step, state)
    return OptimResult(final.x, final.fun, final.grad, final.hess, final.iteration, final.status)
