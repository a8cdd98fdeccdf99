"""A start for the quasi-Newton fit of a large model, from criterion values alone.

lme4's θ₀ (identity factors) can lie where the criterion is concave in a term's θ (a term
with few levels and a large relative variance: InstEval's dept:service at θ = 1, true
0.09); quasi-Newton steps crawl there. On large models a value costs ~1/3 of a gradient,
so a dozen values that land near the minimum save several BFGS iterations. (From lme4's
θ₀ with lme4's structures the fit starts from moment estimates instead, `moment_start.py`,
and skips the search: `model._quasi_newton_start`. The search serves other structures and
a θ₀ the user gives.)

For each term k in turn, its θ block is halved (Λ_k -> Λ_k / 2) while the criterion
decreases, up to `MAX_HALVINGS` times. Where the halving stopped because a value rose, the
last three values bracket a minimum on the log scale: with f₊, f₀, f₋ at Λ_k's best scale
times 2, 1 and 1/2, the parabola through them in u = log₂(scale) is least at

    u* = (f₋ - f₊) / (2 (f₊ - 2 f₀ + f₋)),   |u*| ≤ 1/2,

and every such block is scaled by 2^{u*} at the end. That point is kept when its criterion
is lower (one more value); InstEval's start moves from (0.25, 0.5, 0.125) to within 4% of
the optimum (0.276, 0.435, 0.093).

`quasi_newton_start` also gives BFGS, for k ≤ `VALUE_HESSIAN_MAX_THETA` parameters, a
better start and its Hessian from k(k + 3)/2 more values in the same loop: a quadratic model
from value differences around the searched start and its Newton step in log scale
(`value_differences.py`), instead of `newton.minimize`'s k gradient differences (k
value+gradients, each costing ~4 values on InstEval: 30-40 against 125-160 ms; for k = 3,
9 values instead of 3 value+gradients, and BFGS needs 2 iterations instead of 4; on an
InstEval-like model with a 2 x 2 term, k = 5, 20 values instead of 5 value+gradients and 9
iterations instead of 13).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .arrays import ModelShape
from .loop_carries import tied_to
from .value_differences import log_scale_newton, probe_pattern, probe_steps, value_difference_model

MAX_HALVINGS = 6  # each term's factor is tried down to 2⁻⁶ of lme4's θ₀
VALUE_HESSIAN_MAX_THETA = 5  # k(k + 3)/2 values cost at most k value+gradients (each ~4 values) for k ≤ 5


def log_parabola_minimum(f_up, f_best, f_down):
    """u* for values f₊ (scale 2), f₀ (scale 1), f₋ (scale 1/2) with f₀ ≤ both (module
    docstring); 0 where they do not bracket a minimum with positive curvature."""
    curvature = f_up - 2.0 * f_best + f_down
    bracketed = (f_best <= f_up) & (f_best <= f_down) & (curvature > 0) & jnp.isfinite(curvature)
    return jnp.where(bracketed, (f_down - f_up) / (2.0 * jnp.where(bracketed, curvature, 1.0)), 0.0)


def quasi_newton_start(deviance, x0: jnp.ndarray, shape: ModelShape, log_scale: np.ndarray, search=True):
    """(start x, BFGS's start Hessian there or None): for θ of at most
    `VALUE_HESSIAN_MAX_THETA` entries in float64, the log-scale Newton point of the value-
    difference model at `term_scale_search`'s start and its Hessian
    (`value_differences.py`; `log_scale`: the entries taken in log scale, Λ's diagonal);
    else that start and None (`newton.minimize` then probes with gradients). Not in float32:
    its rounding in f (~10⁻⁷ relative) over h² would swamp H. `search` (a bool, may be
    traced): False takes x0 itself as the searched start (a moment estimate:
    `moment_start.py`), with no halvings."""
    k = shape.n_theta
    if k > VALUE_HESSIAN_MAX_THETA or x0.dtype != jnp.float64:
        return term_scale_search(deviance, x0, shape, search), None
    x, fx, values = _search(deviance, x0, shape, probe_pattern(k), search)
    return log_scale_newton(x, value_difference_model(fx, values, probe_steps(x)), log_scale)


def term_scale_search(deviance, x0: jnp.ndarray, shape: ModelShape, search=True) -> jnp.ndarray:
    """The start (module docstring): halvings per term, then the log-parabola refinement
    (with `search` False: x0)."""
    return _search(deviance, x0, shape, np.zeros((0, shape.n_theta)), search)[0]


def _search(deviance, x0: jnp.ndarray, shape: ModelShape, pattern: np.ndarray, search=True):
    """(start x, its value, the values at x + `pattern` h (`value_differences.probe_steps`)): the
    search (skipped where `search` is False: x0's value, then the pattern), then one value per
    row of `pattern`, all through one traced criterion."""
    index = np.arange(shape.n_theta)
    masks = jnp.asarray(np.stack([(index >= sl.start) & (index < sl.stop) for sl in shape.theta_slices()]))
    n_terms, n_points = masks.shape[0], pattern.shape[0]
    offsets = jnp.asarray(pattern if n_points else np.zeros((1, shape.n_theta)), x0.dtype)

    def keep_searching(state):
        return state[0] <= n_terms + n_points

    def try_point(state):
        """term -1 evaluates x0 itself, terms 0 ... n-1 their halvings, term n the refined
        point, terms n + 1 ... the points of `pattern` around the start (x is not moved
        there; without the search, term -1 is followed by the first of those); `f_up`: the
        value before the last accepted halving; `shifts`: each term's u*."""
        term, halvings, x, fx, f_up, shifts, values = state
        halving = (term >= 0) & (term < n_terms)
        probe = term - n_terms - 1
        trial = jnp.where(masks[jnp.clip(term, 0, n_terms - 1)] & halving, 0.5 * x, x)
        trial = jnp.where(term == n_terms, x * 2.0 ** (shifts @ masks.astype(x.dtype)), trial)
        trial = jnp.where(probe >= 0, x + offsets[jnp.clip(probe, 0, offsets.shape[0] - 1)] * probe_steps(x),
                          trial)
        f_trial = deviance(trial)
        better = (f_trial < fx) & (probe < 0)
        stay = halving & better & (halvings + 1 < MAX_HALVINGS)
        bracket_closed = halving & ~better & (halvings > 0)
        shift = jnp.where(bracket_closed, log_parabola_minimum(f_up, fx, f_trial), 0.0)
        shifts = jnp.where(jnp.arange(n_terms) == term, shift, shifts)
        values = jnp.where(jnp.arange(values.size) == probe, f_trial, values)
        next_term = jnp.where(stay, term, jnp.where((term < 0) & jnp.logical_not(search), n_terms + 1, term + 1))
        return (next_term, jnp.where(stay, halvings + 1, 0),
                jnp.where(better, trial, x), jnp.where(better, f_trial, fx),
                jnp.where(better, fx, f_up), shifts, values)

    inf = jnp.asarray(jnp.inf, x0.dtype)
    start = tied_to((jnp.asarray(-1), jnp.asarray(0), x0, inf, inf, jnp.zeros(n_terms, x0.dtype),
                     jnp.zeros(n_points, x0.dtype)), jnp.sum(x0))
    _, _, x, fx, _, _, values = jax.lax.while_loop(keep_searching, try_point, start)
    return x, fx, values
