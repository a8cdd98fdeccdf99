"""A trust-region Newton minimiser with exact (or quasi-Newton) Hessians, in jit.

Each iteration takes the step d = -(H + μI)⁻¹ g with the smallest μ ≥ max(0, -λ_min(H))
for which ‖d‖ ≤ Δ (the trust radius): a pure Newton step when H is positive definite and
the step fits, otherwise a step on the trust-region boundary found by bisection on μ in
H's eigenbasis (the problems here have few parameters). The radius adapts to the ratio ρ
of actual to predicted reduction (accept when ρ > 1e-4; shrink Δ when ρ < 1/4, double it
when ρ > 3/4 and the step reached the boundary). Parameters with `free = False` stay
where they start (their gradient and Hessian rows are masked), which serves boundary
fits and profiling.

Converged (status 0): max |g| ≤ gtol, or H positive definite with a Newton step H⁻¹g of at
most xtol (1 + max |x|) in every entry (the final `_polish` takes that step), with no
negative curvature. Otherwise the loop stops when no further decrease is possible at
machine precision (status 1), or at maxiter. gtol, the start radius (1) and the curvature
floors (1e-8, 1e-12 of max(1, max |λ|)) are absolute: x should have units in which f's
curvature is of order 1. θ is free of y's units (not of a random slope's covariate's);
`profile.py` standardises its sd/σ/β coordinates, whose gradients scale like 1/scale(y).

With `hessian="bfgs"` the exact Hessian is replaced by a BFGS approximation built from
the gradients alone (for large models, where one exact Hessian by autodiff costs many
times a gradient: InstEval's dense 1,159² Schur complement). The update, with s the step
and y the change in gradient, is Powell's damped BFGS (Nocedal & Wright, Procedure 18.2),
which keeps H positive definite:

    r = φ y + (1 - φ) H s,   φ = 1 if s'y ≥ 0.2 s'Hs else 0.8 s'Hs / (s'Hs - s'y)
    H⁺ = H - H s s'H / s'Hs + r r' / s'r

applied after every trial step, accepted or not (both give valid curvature along s). The
starting H is the forward-difference Hessian of the gradient at x0 (n probes
x0 + h_j e_j, h_j = 1e-4 max(|x0_j|, 1e-2), before the first step; its eigenvalues taken
in absolute value so that it is positive definite): an identity start needs ~3x the
iterations on badly scaled criteria (InstEval's curvatures differ 8-fold), unless the
caller gives a start H (`hess0`, e.g. from criterion values: `value_differences.py`), which is
used instead of the probes. The same trust region, convergence tests (the Newton step then
uses H) and `_polish` apply.

Returns an `OptimResult` record with a status code instead of raising inside jit.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from .loop_carries import tied_to

CONVERGED_GRADIENT = 0
CONVERGED_NO_PROGRESS = 1
MAX_ITERATIONS = 2
NOT_FINITE = 3
EXACT_FIT = 4  # set on the host by fit_batch: no minimum to find (`Design.exactly_fitted`)
NOT_EVALUATED = -2  # internal: the loop has not evaluated f at x0 yet
STATUS_MESSAGES = {
    CONVERGED_GRADIENT: "converged: gradient or Newton step below tolerance",
    CONVERGED_NO_PROGRESS: "converged: no further decrease possible at machine precision",
    MAX_ITERATIONS: "stopped: maximum number of iterations reached",
    NOT_FINITE: "failed: the objective or its derivatives are not finite at the starting values",
    EXACT_FIT: "not fitted: the fixed effects fit the response exactly (zero residuals)",
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
    radius: jnp.ndarray
    iteration: jnp.ndarray
    status: jnp.ndarray  # -1 while running (-2 before the first evaluation)
    probe: jnp.ndarray  # BFGS: the next finite-difference column of the starting H (done at n)
    eigvals: jnp.ndarray  # H's eigendecomposition, computed once per iteration and used by the
    eigvecs: jnp.ndarray  # convergence test, the next trust-region step and `_polish`


def value_grad_hess(f: Callable) -> Callable:
    """x -> (f(x), ∇f(x), ∇²f(x)) in one forward-over-reverse pass."""
    def grad_with_value(x):
        value, grad = jax.value_and_grad(f)(x)
        return grad, (value, grad)

    def evaluate(x):
        hess, (value, grad) = jax.jacfwd(grad_with_value, has_aux=True)(x)
        return value, grad, 0.5 * (hess + hess.T)

    return evaluate


def value_grad(f: Callable) -> Callable:
    """x -> (f(x), ∇f(x), None): the evaluation of the quasi-Newton mode."""
    def evaluate(x):
        value, grad = jax.value_and_grad(f)(x)
        return value, grad, None

    return evaluate


HESSIANS = {"exact": value_grad_hess, "bfgs": value_grad}


def bfgs_update(hess, step, grad_change):
    """Powell's damped BFGS update of H along `step` (module docstring); left unchanged when
    the update is not defined (s'Hs = 0: no step)."""
    sy = step @ grad_change
    hs = hess @ step
    shs = step @ hs
    phi = jnp.where(sy >= 0.2 * shs, 1.0, 0.8 * shs / jnp.where(shs - sy > 0, shs - sy, 1.0))
    r = phi * grad_change + (1.0 - phi) * hs
    sr = step @ r
    updated = (hess - jnp.outer(hs, hs) / jnp.where(shs > 0, shs, 1.0)
               + jnp.outer(r, r) / jnp.where(sr > 0, sr, 1.0))
    valid = (shs > 0) & (sr > 0) & jnp.all(jnp.isfinite(updated))
    return jnp.where(valid, updated, hess)


def positive_definite(hess):
    """H with each eigenvalue λ replaced by max(|λ|, 1e-8 max|λ|): the starting BFGS matrix
    from finite differences, which may be indefinite far from the minimum (the identity
    if it is not finite)."""
    eigvals, eigvecs = jnp.linalg.eigh(0.5 * (hess + hess.T))
    floor = 1e-8 * jnp.maximum(jnp.max(jnp.abs(eigvals)), 1e-300)
    out = (eigvecs * jnp.maximum(jnp.abs(eigvals), floor)) @ eigvecs.T
    return jnp.where(jnp.all(jnp.isfinite(out)), out, jnp.eye(hess.shape[0], dtype=hess.dtype))


def trust_region_step(grad, eigvals, eigvecs, radius, bisections: int = 60):
    """argmin_d g'd + ½d'Hd subject to ‖d‖ ≤ Δ, through μ: d(μ) = -(H + μI)⁻¹g, from H's
    eigendecomposition H = V diag(λ) V'."""
    g_rotated = eigvecs.T @ grad
    tiny = 1e-12 * jnp.maximum(1.0, jnp.max(jnp.abs(eigvals)))
    lower = jnp.maximum(0.0, -eigvals[0]) + tiny

    def norm(mu):
        return jnp.linalg.norm(g_rotated / (eigvals + mu))

    newton_fits = (eigvals[0] > tiny) & (norm(0.0) <= radius)
    upper = lower + jnp.linalg.norm(grad) / radius

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        too_long = norm(mid) > radius
        return jnp.where(too_long, mid, lo), jnp.where(too_long, hi, mid)

    _, mu_boundary = jax.lax.fori_loop(0, bisections, bisect, (lower, upper))
    interior = norm(lower) <= radius
    mu = jnp.where(newton_fits, 0.0, jnp.where(interior, lower, mu_boundary))
    step = -eigvecs @ (g_rotated / (eigvals + mu))
    # the "hard case": negative curvature the gradient does not see (e.g. g = 0 at a saddle);
    # move along the most negative eigenvector to the trust-region boundary
    hard = (eigvals[0] < -tiny) & interior & ~newton_fits
    extra = jnp.sqrt(jnp.maximum(radius ** 2 - jnp.sum(step ** 2), 0.0))
    return step + jnp.where(hard, extra, 0.0) * eigvecs[:, 0]


def minimize(f: Callable, x0: jnp.ndarray, free: jnp.ndarray | None = None, *,
             gtol: float = 1e-7, xtol: float = 1e-7, maxiter: int = 200,
             radius: float = 1.0, hessian: str = "exact", derivatives: Callable | None = None,
             run=True, hess0: jnp.ndarray | None = None) -> OptimResult:
    """Minimise f from x0 over the entries where `free` is True (all by default), with the
    exact Hessian or (`hessian="bfgs"`) a quasi-Newton one. `derivatives`: x -> (f, ∇f, ∇²f)
    computed another way (closed form: `single_term_derivatives.py`), used instead of
    autodiff of f for the exact Hessian. `run` (a boolean, traced or not): when False, f is
    never evaluated and the record of a minimisation that did not run comes back (x0, value
    +inf, status 0), without a `lax.cond` (whose batching rule traces both branches twice:
    under vmap most of a batch program's trace time). `hess0` (BFGS only): the starting H,
    made positive definite, instead of the difference probes."""
    if hessian not in HESSIANS:
        raise ValueError(f"hessian must be one of {tuple(HESSIANS)}, got {hessian!r}")
    if derivatives is not None and hessian != "exact":
        raise ValueError("derivatives= gives exact Hessians; it cannot be combined with hessian='bfgs'")
    if hess0 is not None and hessian != "bfgs":
        raise ValueError("hess0= starts a BFGS Hessian; exact Hessians need none")
    evaluate = HESSIANS[hessian](f) if derivatives is None else derivatives
    free = jnp.ones(x0.shape, bool) if free is None else free
    n_probes = x0.size if hessian == "bfgs" and hess0 is None else 0

    def mask_hessian(hess):
        return jnp.where(free[:, None] & free[None, :], hess, jnp.diag(jnp.where(free, 0.0, 1.0)))

    def masked(value, grad, hess):
        grad = jnp.where(free, grad, 0.0)
        if hess is None:  # quasi-Newton: H is kept in the state
            return value, grad, None
        return value, grad, mask_hessian(hess)

    def stationary_minimum(x, grad, eigvals, eigvecs):
        """A small gradient, or a tiny Newton step (`_polish` takes it) at positive curvature."""
        scale = jnp.maximum(1.0, jnp.max(jnp.abs(eigvals)))
        curvature_ok = eigvals[0] >= -1e-8 * scale
        newton = (eigvecs.T @ grad) / jnp.where(eigvals > 1e-8 * scale, eigvals, jnp.inf)
        tiny_step = (eigvals[0] > 1e-8 * scale) & (jnp.max(jnp.abs(newton)) <= xtol * (1.0 + jnp.max(jnp.abs(x))))
        return ((jnp.max(jnp.abs(grad)) <= gtol) | tiny_step) & curvature_ok

    # status -2: x0 not evaluated yet. The loop's first pass evaluates f at x0 (a zero step),
    # so f, ∇f and ∇²f are traced once, inside the loop (half the compile time of a
    # separate evaluation before it).
    # every carry batched when x0 or `run` is (`loop_carries.py`: one batching pass of `step`)
    start_hess = jnp.eye(x0.size, dtype=x0.dtype) if hess0 is None else mask_hessian(positive_definite(hess0))
    state = tied_to(_State(x0, jnp.asarray(jnp.inf, x0.dtype), jnp.zeros_like(x0), start_hess,
                           jnp.asarray(radius, x0.dtype), jnp.asarray(0),
                           jnp.where(run, NOT_EVALUATED, CONVERGED_GRADIENT),
                           jnp.asarray(0), jnp.ones(x0.size, x0.dtype), jnp.eye(x0.size, dtype=x0.dtype)),
                    jnp.sum(x0) + jnp.asarray(run, x0.dtype))

    def probe_column(s: _State):
        """BFGS: e_j and h_j for the finite-difference probe h_j e_j of column j = `s.probe`
        of the start H."""
        j = jnp.minimum(s.probe, x0.size - 1)
        return (jnp.arange(x0.size) == j).astype(x0.dtype), 1e-4 * jnp.maximum(jnp.abs(s.x[j]), 1e-2)

    def quasi_newton_hessian(s: _State, probing, column, probe_step, direction, grad, ok):
        """While probing: column `s.probe` of the difference Hessian (made positive definite
        after the last); then the BFGS update along the trial step."""
        updated = bfgs_update(s.hess, direction, grad - s.grad)
        if n_probes:
            difference = s.hess * (1.0 - column)[None, :] + jnp.outer((grad - s.grad) / probe_step, column)
            finished = mask_hessian(positive_definite(mask_hessian(difference)))
            difference = jnp.where(s.probe == n_probes - 1, finished, difference)
            updated = jnp.where(probing, difference, updated)
        return jnp.where(ok | probing, updated, s.hess)

    def step(s: _State) -> _State:
        started = s.status != NOT_EVALUATED
        direction = jnp.where(started, trust_region_step(s.grad, s.eigvals, s.eigvecs, s.radius), 0.0)
        probing, column, probe_step = jnp.zeros((), bool), None, None  # exact Hessians, or hess0: never
        if n_probes:
            probing = started & (s.probe < n_probes)
            column, probe_step = probe_column(s)
            direction = jnp.where(probing, probe_step * column, direction)
        length = jnp.linalg.norm(direction)
        predicted = -(s.grad @ direction + 0.5 * direction @ s.hess @ direction)
        value, grad, hess = masked(*evaluate(s.x + direction))
        # a non-finite Hessian (a custom structure's rho ** lag at rho = 0 under autodiff) made
        # every later step NaN: the loop stalled at the start until maxiter
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)) & (hess is None or jnp.all(jnp.isfinite(hess)))
        ratio = jnp.where(ok, (s.fun - value) / jnp.maximum(predicted, 1e-300), -jnp.inf)
        accept = ((ratio > 1e-4) & ~probing) | ~started
        radius = jnp.where(ratio < 0.25, 0.25 * length,
                           jnp.where((ratio > 0.75) & (length >= 0.99 * s.radius), 2.0 * s.radius, s.radius))
        radius = jnp.where(started & ~probing, radius, s.radius)
        x = jnp.where(accept, s.x + direction, s.x)
        fun = jnp.where(accept, value, s.fun)
        if hessian == "bfgs":  # updated along every trial step, accepted or not
            hess = jnp.where(started, quasi_newton_hessian(s, probing, column, probe_step, direction, grad, ok),
                             s.hess)
        else:
            hess = jnp.where(accept, hess, s.hess)
        grad = jnp.where(accept, grad, s.grad)
        iteration = s.iteration + (started & ~probing)
        stalled = started & ~probing & ((predicted <= 1e-15 * (1.0 + jnp.abs(s.fun)))
                                        | (radius <= 1e-12 * (1.0 + jnp.linalg.norm(x))))
        eigvals, eigvecs = jnp.linalg.eigh(hess)
        status = jnp.where(stationary_minimum(x, grad, eigvals, eigvecs), CONVERGED_GRADIENT,
                           jnp.where(stalled, CONVERGED_NO_PROGRESS,
                                     jnp.where(iteration >= maxiter, MAX_ITERATIONS, -1)))
        status = jnp.where(probing, -1, status)
        status = jnp.where(started | ok, status, NOT_FINITE)
        return _State(x, fun, grad, hess, radius, iteration, status, s.probe + probing, eigvals, eigvecs)

    final = jax.lax.while_loop(lambda s: s.status < 0, step, state)
    return OptimResult(_polish(final), final.fun, final.grad, final.hess, final.iteration, final.status)


def _polish(state: _State) -> jnp.ndarray:
    """One last pure Newton step x - H⁻¹g where H is positive definite and the step is small.

    Near a minimum Newton converges quadratically, but the stopping tests are limited by
    rounding in f (the ratio test); the Newton step itself is computed from g and H, which
    stay accurate, so it takes x from ~1e-7 to near machine precision.
    """
    eigvals, eigvecs = state.eigvals, state.eigvecs
    newton = -eigvecs @ ((eigvecs.T @ state.grad) / eigvals)
    small = jnp.linalg.norm(newton) <= 1e-3 * (1.0 + jnp.linalg.norm(state.x))
    usable = (eigvals[0] > 0) & small & jnp.all(jnp.isfinite(newton)) & (state.status <= CONVERGED_NO_PROGRESS)
    return jnp.where(usable, state.x + newton, state.x)
