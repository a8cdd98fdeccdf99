"""Likelihood-profile confidence limits, lme4's `profile.merMod` + `confint.thpr`, as pure JAX.

lme4 profiles the ML deviance, also for REML fits (its `devfun2` refits by ML first), on
the sd/cor scale ψ = (sd/cor per term, σ, β) of `sdcor.py`. For one coordinate ψ_w,

    ζ(x) = sign(x - ψ̂_w) √(D_w(x) - D̂),   D_w(x) = min over ψ_{-w} of D(ψ) with ψ_w = x,

D̂ the minimum ML deviance. The level-(1-α) interval is {x : |ζ(x)| ≤ z}, z = Φ⁻¹(1 - α/2).
lme4 finds its ends by interpolating a spline through profile points; here each end is the
root of h(u) = √(D_w(ψ̂_w + s u) - D̂) - z in the distance u ≥ 0 from the estimate
(s = ±1 the direction), found by a safeguarded Newton iteration: the slope comes from the
envelope theorem, dD_w/dx = ∂D/∂ψ_w at the inner optimum, and a bracket [lo, hi] with
h(lo) < 0 < h(hi) falls back to bisection (or, with no upper end yet, to doubling u).
Each D_w(x) is a `newton.minimize` with ψ_w held fixed (`free` mask), warm-started at the
previous point's optimum. The first trial step is the Wald distance z √(2 (H⁻¹)_ww) from
the Hessian H of D at ψ̂.

The root search and the inner minimisations run in standardised coordinates φ = ψ / c,

    c_j = 2^round(log2 (H_jj)^(-1/2))   (1 where H_jj is not positive and finite),

so that D's curvature along each φ_j is about 1 whatever the units of y and of the
covariates: `newton.minimize`'s tolerances are absolute (a gradient of 1e-7), and in ψ
itself D's gradient scales like 1/scale(y), so with y ~ 1e8 the inner fits stopped short
of their optimum (ζ 1.914 at the reported ends of Days instead of 1.960). Powers of 2 make
ψ = c φ exact, so the bounds of the variance parameters and their reported ends map back
without rounding. The β coordinates are measured from β̂ (ψ_β = β̂ + c φ_β): the step
tolerance is relative to max|φ|, and β's origin is arbitrary (a response of mean 1e8 put
the intercept's φ at 1e7, the inner fits stopped a step short and Days' interval came out
0.1 % narrow); D itself sees β through β_c = R(β - b₀) (`sdcor.sdcor_deviance`).

An end that the profile does not reach inside the parameter's range is reported as lme4
reports it: the bound itself (an SD's lower limit 0, a correlation's ±1, σ's 0 or ∞), with
status `UNREACHED`.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .arrays import ModelArrays, ModelShape
from .conditioning import conditioned_cross_products
from .model import fit_arrays
from .newton import minimize
from .sdcor import n_variance, parameter_bounds, sdcor_deviance, theta_to_sdcor

REACHED = 0
UNREACHED = 1  # the profile stays below z up to the parameter's bound: the bound is reported
NOT_CONVERGED = 2  # the root iteration ran out of steps
STATUS_MESSAGES = {REACHED: "reached", UNREACHED: "not reached before the parameter's bound",
                   NOT_CONVERGED: "root search did not converge"}
ROOT_TOLERANCE = 1e-9  # |√ΔD - z| at an accepted end
AT_CORRELATION_BOUND = 1e-6  # |cor| ≥ 1 - this after an inner fit: held there and refitted
MAX_ROOT_STEPS = 60


class ProfileLimits(NamedTuple):
    """Per profiled coordinate: the estimate and both ends, each with a status code."""

    estimate: jnp.ndarray
    lower: jnp.ndarray
    upper: jnp.ndarray
    lower_status: jnp.ndarray
    upper_status: jnp.ndarray


class _Root(NamedTuple):
    u: jnp.ndarray        # the next distance to evaluate
    lo: jnp.ndarray       # largest distance known to have h < 0
    hi: jnp.ndarray       # smallest distance known to have h > 0 (inf: none yet)
    warm: jnp.ndarray     # the last inner optimum (warm start)
    best: jnp.ndarray     # the last evaluated distance
    h: jnp.ndarray
    step: jnp.ndarray
    status: jnp.ndarray   # -1 while running


def ml_shape(shape: ModelShape) -> ModelShape:
    """The same model under ML: lme4 profiles the ML deviance (`refitML`)."""
    return dataclasses.replace(shape, reml=False)


def _wald_distance(hess: jnp.ndarray, w, z) -> jnp.ndarray:
    """z √(2 (H⁻¹)_ww), H⁻¹ through its eigen-decomposition with tiny eigenvalues clipped."""
    eigvals, eigvecs = jnp.linalg.eigh(hess)
    floor = 1e-12 * jnp.maximum(jnp.max(jnp.abs(eigvals)), 1e-300)
    variance = jnp.sum(eigvecs[w] ** 2 / jnp.maximum(eigvals, floor))
    return z * jnp.sqrt(2.0 * variance)


def inner_minimum(deviance, start, free, upper):
    """min of D over the `free` coordinates from `start`, in two phases (one traced
    `minimize`, `lax.scan`ned). A correlation at ±1 stalls the first: steps past the
    bound give a NaN deviance and are refused, so the trust region shrinks to nothing
    with the other coordinates' gradients still large (Orthodont's sd_(Intercept) lower
    end: ζ 0.002 off). The second holds the correlations that the first left within
    `AT_CORRELATION_BOUND` of their bound where they are (not at ±1 itself, where
    chol(R)'s √(1 - r²) has no derivative) and refits the rest; kept when it converged
    no higher. `upper`: the coordinates' upper bounds (finite for correlations only)."""
    bounded = jnp.isfinite(upper)

    def phase(x, index):
        held = (index == 1) & bounded & (jnp.abs(x) >= (1.0 - AT_CORRELATION_BOUND) * upper)
        tried = (index == 0) | jnp.any(held)
        result = minimize(deviance, x, free & ~held, run=tried)
        return result.x, (result, tried)

    _, (phases, tried) = jax.lax.scan(phase, start, jnp.arange(2))
    first, second = (jax.tree_util.tree_map(lambda a, i=i: a[i], phases) for i in range(2))
    use_second = tried[1] & second.converged & (second.fun <= first.fun)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(use_second, a, b), second, first)


def profile_end(deviance, psi_hat, d_hat, hess, w, direction, z, lower, upper,
                max_steps: int = MAX_ROOT_STEPS):
    """One end of coordinate w's interval in `direction` (±1): (value, status)."""
    x_hat = psi_hat[w]
    bound = jnp.where(direction > 0, upper[w], lower[w])
    u_max = direction * (bound - x_hat)
    u_cap = jnp.where(jnp.isfinite(u_max),
                      jnp.maximum(u_max - 1e-9 * (1.0 + jnp.abs(bound)), 0.0), jnp.inf)
    free = jnp.arange(psi_hat.shape[0]) != w
    u0 = _wald_distance(hess, w, z)
    u0 = jnp.where(jnp.isfinite(u0) & (u0 > 0), u0, 1.0 + jnp.abs(x_hat))

    def evaluate(u, warm):
        start = warm.at[w].set(x_hat + direction * u)
        res = inner_minimum(deviance, start, free, upper)
        delta = res.fun - d_hat
        ok = res.converged & jnp.isfinite(res.fun)
        root = jnp.sqrt(jnp.maximum(delta, 0.0))
        slope = direction * jax.grad(deviance)(res.x)[w] / (2.0 * jnp.maximum(root, 1e-12))
        return root - z, slope, ok, jnp.where(ok, res.x, warm)

    def step(s: _Root) -> _Root:
        h, slope, ok, warm = evaluate(s.u, s.warm)
        below = ok & (h < 0)
        lo = jnp.where(below, s.u, s.lo)
        hi = jnp.where(below, s.hi, s.u)  # a failed inner fit counts as "too far"
        newton = s.u - h / slope
        use_newton = ok & jnp.isfinite(newton) & (newton > lo) & (newton < hi)
        fallback = jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), 2.0 * s.u)
        u_next = jnp.minimum(jnp.where(use_newton, newton, fallback), u_cap)
        done_root = (ok & (jnp.abs(h) < ROOT_TOLERANCE)) | (jnp.isfinite(hi) & (hi - lo <= 1e-13 * (1.0 + hi)))
        unreached = below & (s.u >= u_cap)
        status = jnp.where(done_root, REACHED, jnp.where(unreached, UNREACHED,
                           jnp.where(s.step + 1 >= max_steps, NOT_CONVERGED, -1)))
        return _Root(u_next, lo, hi, warm, s.u, h, s.step + 1, status)

    zero = jnp.zeros((), psi_hat.dtype)
    start = _Root(jnp.minimum(u0, u_cap), zero, jnp.asarray(jnp.inf, psi_hat.dtype), psi_hat,
                  zero, -z + zero, jnp.asarray(0), jnp.where(u_cap > 0, -1, UNREACHED))
    final = jax.lax.while_loop(lambda s: s.status < 0, step, start)
    value = jnp.where(final.status == UNREACHED, bound, x_hat + direction * final.best)
    return value, final.status


def sdcor_estimates(fit, shape: ModelShape):
    """(ψ̂, D̂) from an ML fit's `FitParams`: ψ on the sd/cor scale with β appended."""
    sigma = jnp.sqrt(fit.sigma2)
    variance = theta_to_sdcor(jnp.asarray(fit.theta), sigma, shape)[:n_variance(shape)]
    return jnp.concatenate([variance, jnp.asarray(fit.beta)]), jnp.asarray(fit.objective)


def ml_estimates(arrays: ModelArrays, shape: ModelShape, theta0):
    """(ψ̂, D̂) of the ML fit (lme4's `refitML` for a REML model)."""
    shape = ml_shape(shape)
    return sdcor_estimates(fit_arrays(arrays, shape, theta0), shape)


def coordinate_scales(hess: jnp.ndarray) -> jnp.ndarray:
    """c_j = 2^round(log2 (H_jj)^(-1/2)), the units of the standardised coordinates
    φ = ψ / c (module docstring); 1 where H_jj is not a positive finite number."""
    diag = jnp.diagonal(hess)
    usable = jnp.isfinite(diag) & (diag > 0)
    exponent = jnp.round(-0.5 * jnp.log2(jnp.where(usable, diag, 1.0)))
    return jnp.where(usable, jnp.exp2(exponent), 1.0)


@partial(jax.jit, static_argnames=("shape",))
def profile_limits(arrays: ModelArrays, shape: ModelShape, psi_hat, d_hat, z, which):
    """`ProfileLimits` for the coordinates `which` (an integer array) of ψ, at level
    Φ(z) - Φ(-z), from the ML estimates (ψ̂, D̂) of `ml_estimates`. A pure function of
    the arrays (`jax.lax.map` it over responses); all ends run in one `lax.map`, so one
    compiled program serves every coordinate. The ends are found in the standardised
    coordinates φ = ψ / c of `coordinate_scales` (D(c φ), its Hessian c_i H_ij c_j)."""
    shape = ml_shape(shape)
    cp, rep = conditioned_cross_products(arrays, shape)
    deviance = partial(sdcor_deviance, cp=cp, rep=rep, shape=shape, n=arrays.y.shape[0])
    hess = jax.hessian(deviance)(psi_hat)
    scale = coordinate_scales(hess)
    is_beta = jnp.arange(psi_hat.shape[0]) >= n_variance(shape)
    origin = jnp.where(is_beta, psi_hat, 0.0)
    lower, upper = ((jnp.asarray(b) - origin) / scale for b in parameter_bounds(shape, arrays.X.shape[1]))
    which = jnp.asarray(which)
    ws = jnp.repeat(which, 2)
    directions = jnp.tile(jnp.asarray([-1.0, 1.0]), which.shape[0])

    def end(w, direction):
        drift = conditional_beta_drift(hess, w, is_beta)
        phi_hat = (psi_hat - origin) / scale

        def to_psi(phi):
            return origin + scale * phi + drift * scale[w] * (phi[w] - phi_hat[w])

        return profile_end(lambda phi: deviance(to_psi(phi)), phi_hat, d_hat, hess * jnp.outer(scale, scale),
                           w, direction, z, lower, upper)

    values, status = jax.lax.map(lambda a: end(a[0], a[1]), (ws, directions))
    values = origin[ws] + values * scale[ws]
    return ProfileLimits(psi_hat[which], values[0::2], values[1::2], status[0::2], status[1::2])


def conditional_beta_drift(hess: jnp.ndarray, w, is_beta: jnp.ndarray) -> jnp.ndarray:
    """d = -H_bb⁻¹H_bw over the β coordinates b other than w (0 elsewhere): how the other β's
    optimum moves with ψ_w at ψ̂ (H the Hessian of D there). The inner fits' coordinates move
    along it (ψ_b = ψ̂_b + c_b φ_b + d_b (ψ_w - ψ̂_w)), so the free φ stay near 0 however far
    ψ_w goes; at an inner optimum ∂D/∂φ_b = 0, so dD_w/dψ_w is still ∂D/∂ψ_w there."""
    others = is_beta & (jnp.arange(hess.shape[0]) != w)
    block = jnp.where(others[:, None] & others[None, :], hess, jnp.eye(hess.shape[0], dtype=hess.dtype))
    drift = jnp.linalg.solve(block, jnp.where(others, -hess[:, w], 0.0))
    return jnp.where(jnp.isfinite(drift), drift, 0.0)


def all_coordinates(shape: ModelShape, n_fixed: int) -> np.ndarray:
    return np.arange(n_variance(shape) + n_fixed)


def check_against_base(arrays: ModelArrays, shape: ModelShape, theta0) -> float:
    """|D(ψ̂) - D̂|: the sd/cor deviance agrees with the fit's ML deviance (a self-check)."""
    psi_hat, d_hat = ml_estimates(arrays, shape, theta0)
    shape = ml_shape(shape)
    cp, rep = conditioned_cross_products(arrays, shape)
    return float(np.abs(sdcor_deviance(psi_hat, cp, rep, shape, arrays.y.shape[0]) - d_hat))
