"""A start for the quasi-Newton fit of a large model, from criterion values alone.

lme4's θ₀ (identity factors) can lie where the criterion is concave in a term's θ (a term
with few levels and a large relative variance: InstEval's dept:service at θ = 1, true
0.09); quasi-Newton steps crawl there. On large models a value costs ~1/3 of a gradient,
so a dozen values that land near the minimum save several BFGS iterations.

For each term k in turn, its θ block is halved (Λ_k -> Λ_k / 2) while the criterion
decreases, up to `MAX_HALVINGS` times. Where the halving stopped because a value rose, the
last three values bracket a minimum on the log scale: with f₊, f₀, f₋ at Λ_k's best scale
times 2, 1 and 1/2, the parabola through them in u = log₂(scale) is least at

    u* = (f₋ - f₊) / (2 (f₊ - 2 f₀ + f₋)),   |u*| ≤ 1/2,

and every such block is scaled by 2^{u*} at the end. That point is kept when its criterion
is lower (one more value); InstEval's start moves from (0.25, 0.5, 0.125) to within 4% of
the optimum (0.276, 0.435, 0.093).

`quasi_newton_start` also gives BFGS its starting quadratic model from criterion values at
that start x (value f₀), for k ≤ `VALUE_HESSIAN_MAX_THETA` parameters: with steps h_i =
`VALUE_HESSIAN_STEP` max(|x_i|, 10⁻²) and f_i^± = f(x ± h_i e_i), f_ij = f(x + h_i e_i + h_j e_j),

    g_i = (f_i⁺ - f_i⁻) / (2 h_i),    H_ii = (f_i⁺ - 2 f₀ + f_i⁻) / h_i²,
    H_ij = (f_ij - f_i⁺ - f_j⁺ + f₀) / (h_i h_j)   (i > j),

k(k + 3)/2 values in the same loop instead of `newton.minimize`'s evaluation at x and its
k gradient differences (k + 1 value+gradients, each costing ~4 values on InstEval: 30-40
against 125-160 ms; for k = 3, 9 values instead of 4 value+gradients). On InstEval H is within 0.5% of the exact Hessian
at the start and g within 1e-7 relative of the exact gradient (rounding in f, ~10⁻¹⁴
relative, over h: g is only the first step's; every later one is exact).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .arrays import ModelShape
from .loop_carries import tied_to

MAX_HALVINGS = 6  # each term's factor is tried down to 2⁻⁶ of lme4's θ₀
VALUE_HESSIAN_MAX_THETA = 3  # larger k: k(k + 3)/2 values cost about as much as k value+gradients
VALUE_HESSIAN_STEP = 1e-3  # relative step of the value differences (error ~1e-3 of H, rounding far below)


def log_parabola_minimum(f_up, f_best, f_down):
    """u* for values f₊ (scale 2), f₀ (scale 1), f₋ (scale 1/2) with f₀ ≤ both (module
    docstring); 0 where they do not bracket a minimum with positive curvature."""
    curvature = f_up - 2.0 * f_best + f_down
    bracketed = (f_best <= f_up) & (f_best <= f_down) & (curvature > 0) & jnp.isfinite(curvature)
    return jnp.where(bracketed, (f_down - f_up) / (2.0 * jnp.where(bracketed, curvature, 1.0)), 0.0)


def hessian_probe_pattern(k: int) -> np.ndarray:
    """The value differences' points in units of h: +e_i, -e_i, then e_i + e_j (i > j)."""
    eye = np.eye(k)
    i, j = np.tril_indices(k, -1)
    return np.concatenate([eye, -eye, eye[i] + eye[j]])


def hessian_probe_steps(x: jnp.ndarray) -> jnp.ndarray:
    """h_i = `VALUE_HESSIAN_STEP` max(|x_i|, 10⁻²)."""
    return VALUE_HESSIAN_STEP * jnp.maximum(jnp.abs(x), 1e-2)


class QuadraticModel(NamedTuple):
    """f, ∇f and ∇²f at a point, from value differences."""

    value: jnp.ndarray
    grad: jnp.ndarray
    hess: jnp.ndarray


def value_difference_model(f0, values: jnp.ndarray, steps: jnp.ndarray) -> QuadraticModel:
    """g and H from f₀ and the values at `hessian_probe_pattern`'s points (module docstring)."""
    k = steps.size
    up, down, pairs = values[:k], values[k:2 * k], values[2 * k:]
    i, j = np.tril_indices(k, -1)
    off = (pairs - up[i] - up[j] + f0) / (steps[i] * steps[j])
    hess = jnp.diag((up - 2.0 * f0 + down) / steps ** 2)
    return QuadraticModel(f0, (up - down) / (2.0 * steps), hess.at[i, j].set(off).at[j, i].set(off))


def quasi_newton_start(deviance, x0: jnp.ndarray, shape: ModelShape):
    """(start x, a `QuadraticModel` there or None): `term_scale_search`'s start and, for θ
    of at most `VALUE_HESSIAN_MAX_THETA` entries in float64, f, g and H from value
    differences (module docstring), else None (`newton.minimize` then evaluates x and probes
    with gradients). Not in float32: its rounding in f (~10⁻⁷ relative) over h² would swamp H."""
    k = shape.n_theta
    by_values = k <= VALUE_HESSIAN_MAX_THETA and x0.dtype == jnp.float64
    pattern = hessian_probe_pattern(k) if by_values else np.zeros((0, k))
    x, fx, values = _search(deviance, x0, shape, pattern)
    if not pattern.shape[0]:
        return x, None
    return x, value_difference_model(fx, values, hessian_probe_steps(x))


def term_scale_search(deviance, x0: jnp.ndarray, shape: ModelShape) -> jnp.ndarray:
    """The start (module docstring): halvings per term, then the log-parabola refinement."""
    return _search(deviance, x0, shape, np.zeros((0, shape.n_theta)))[0]


def _search(deviance, x0: jnp.ndarray, shape: ModelShape, pattern: np.ndarray):
    """(start x, its value, the values at x + `pattern` h (`hessian_probe_steps`)): the
    search, then one value per row of `pattern`, all through one traced criterion."""
    index = np.arange(shape.n_theta)
    masks = jnp.asarray(np.stack([(index >= sl.start) & (index < sl.stop) for sl in shape.theta_slices()]))
    n_terms, n_points = masks.shape[0], pattern.shape[0]
    offsets = jnp.asarray(pattern if n_points else np.zeros((1, shape.n_theta)), x0.dtype)

    def keep_searching(state):
        return state[0] <= n_terms + n_points

    def try_point(state):
        """term -1 evaluates x0 itself, terms 0 ... n-1 their halvings, term n the refined
        point, terms n + 1 ... the points of `pattern` around the start (x is not moved
        there); `f_up`: the value before the last accepted halving; `shifts`: each term's u*."""
        term, halvings, x, fx, f_up, shifts, values = state
        halving = (term >= 0) & (term < n_terms)
        probe = term - n_terms - 1
        trial = jnp.where(masks[jnp.clip(term, 0, n_terms - 1)] & halving, 0.5 * x, x)
        trial = jnp.where(term == n_terms, x * 2.0 ** (shifts @ masks.astype(x.dtype)), trial)
        trial = jnp.where(probe >= 0, x + offsets[jnp.clip(probe, 0, offsets.shape[0] - 1)] * hessian_probe_steps(x),
                          trial)
        f_trial = deviance(trial)
        better = (f_trial < fx) & (probe < 0)
        stay = halving & better & (halvings + 1 < MAX_HALVINGS)
        bracket_closed = halving & ~better & (halvings > 0)
        shift = jnp.where(bracket_closed, log_parabola_minimum(f_up, fx, f_trial), 0.0)
        shifts = jnp.where(jnp.arange(n_terms) == term, shift, shifts)
        values = jnp.where(jnp.arange(values.size) == probe, f_trial, values)
        return (jnp.where(stay, term, term + 1), jnp.where(stay, halvings + 1, 0),
                jnp.where(better, trial, x), jnp.where(better, f_trial, fx),
                jnp.where(better, fx, f_up), shifts, values)

    inf = jnp.asarray(jnp.inf, x0.dtype)
    start = tied_to((jnp.asarray(-1), jnp.asarray(0), x0, inf, inf, jnp.zeros(n_terms, x0.dtype),
                     jnp.zeros(n_points, x0.dtype)), jnp.sum(x0))
    _, _, x, fx, _, _, values = jax.lax.while_loop(keep_searching, try_point, start)
    return x, fx, values
