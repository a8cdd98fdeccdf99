"""The trust-region Newton minimiser on functions with known minima."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax.newton import CONVERGED_GRADIENT, minimize


def rosenbrock(x):
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def test_rosenbrock():
    result = jax.jit(lambda x0: minimize(rosenbrock, x0, gtol=1e-10))(jnp.array([-1.2, 1.0]))
    np.testing.assert_allclose(result.x, [1.0, 1.0], rtol=1e-8)
    assert int(result.status) <= 1


def test_escapes_a_saddle_with_zero_gradient():
    # f is even in x[0]: at x[0] = 0 the gradient vanishes but the curvature is negative
    def f(x):
        return (x[0] ** 2 - 4.0) ** 2 + (x[1] - 1.0) ** 2

    result = minimize(f, jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(jnp.abs(result.x), [2.0, 1.0], rtol=1e-8)
    assert int(result.status) == CONVERGED_GRADIENT


def test_fixed_parameters_stay_put():
    def f(x):
        return jnp.sum((x - jnp.array([1.0, 2.0, 3.0])) ** 2) + x[0] * x[1]

    result = minimize(f, jnp.array([0.0, 5.0, 0.0]), free=jnp.array([True, False, True]))
    assert float(result.x[1]) == 5.0
    np.testing.assert_allclose(np.asarray(result.x)[[0, 2]], [1.0 - 2.5, 3.0], rtol=1e-10)


def test_bfgs_mode_reaches_the_same_minima():
    """The quasi-Newton Hessian (large models) finds what the exact one finds: Rosenbrock's
    valley, and a fixed entry stays put."""
    result = jax.jit(lambda x0: minimize(rosenbrock, x0, gtol=1e-10, hessian="bfgs"))(jnp.array([-1.2, 1.0]))
    np.testing.assert_allclose(result.x, [1.0, 1.0], rtol=1e-7)
    assert int(result.status) <= 1 and int(result.iterations) > 10  # more steps than Newton's, still bounded

    def f(x):
        return jnp.sum((x - jnp.array([1.0, 2.0, 3.0])) ** 2) + x[0] * x[2] + 0.1 * x[0] ** 4

    exact = minimize(f, jnp.array([0.0, 5.0, 0.0]), free=jnp.array([True, False, True]))
    bfgs = minimize(f, jnp.array([0.0, 5.0, 0.0]), free=jnp.array([True, False, True]), hessian="bfgs")
    assert float(bfgs.x[1]) == 5.0
    np.testing.assert_allclose(bfgs.x, exact.x, rtol=1e-8)
    # the BFGS matrix stays positive definite
    assert np.all(np.linalg.eigvalsh(np.asarray(bfgs.hess)) > 0)


def test_bfgs_from_a_given_start_hessian():
    """With hess0 BFGS starts from the caller's H instead of probing with gradients: on a
    quadratic, given its Hessian, one Newton step reaches the minimum (two evaluations:
    x0 and the step). hess0 with exact Hessians is refused."""
    a = jnp.array([[3.0, 0.5, 0.2], [0.5, 2.0, -0.4], [0.2, -0.4, 1.0]])
    centre = jnp.array([0.1, -0.2, 0.3])
    calls = []

    def f(x):
        jax.debug.callback(lambda: calls.append(1))
        return 0.5 * (x - centre) @ a @ (x - centre)

    result = jax.block_until_ready(jax.jit(lambda x: minimize(f, x, hessian="bfgs", hess0=a))(jnp.zeros(3)))
    np.testing.assert_allclose(result.x, centre, rtol=1e-12)
    assert len(calls) == 2 and int(result.iterations) == 1
    with pytest.raises(ValueError, match="hess0"):
        minimize(f, jnp.zeros(3), hess0=a)


def test_unknown_hessian_mode_is_refused():
    with pytest.raises(ValueError, match="hessian must be one of"):
        minimize(rosenbrock, jnp.array([0.0, 0.0]), hessian="sr1")


def _creeping_responses(sleepstudy):
    """Responses 12 and 21 of an audit's 24 simulated sleepstudy-shaped responses (crossed
    extra factors a and b, intercept and slope SDs varying with j; numpy's default_rng(1))."""
    rng = np.random.default_rng(1)
    n, subject = len(sleepstudy), pd.factorize(sleepstudy["Subject"])[0]
    a, b = np.arange(n) % 6, np.arange(n) // 3 % 10
    days = sleepstudy["Days"].to_numpy()
    out = {}
    for j in range(22):
        u0 = rng.normal(0, 25 * (j % 4) / 3, 18)
        u1 = rng.normal(0, 6 * ((j + 1) % 3) / 2, 18)
        ua, ub = rng.normal(0, 5, 6), rng.normal(0, 8 * (j % 2), 10)
        y = 250 + 10 * days + u0[subject] + u1[subject] * days + ua[a] + ub[b] + rng.normal(0, 25, n)
        out[j] = sleepstudy.assign(Reaction=y)
    return out[12], out[21]


@pytest.mark.parametrize("which, method, free_loop_objective", [
    (0, "REML", 1699.43837466), (1, "REML", 1759.11224189), (0, "ML", 1704.72652404), (1, "ML", 1765.54785198)])
def test_a_fit_creeping_to_a_boundary_tries_each_entry_at_zero(sleepstudy, which, method, free_loop_objective):
    """The free Newton loop crept along a flat valley towards θ₃ = 0 (θ̂ ≈ (5e-4, 0.07, 0.04))
    for all 200 iterations: not converged, and the all-near-zero retry (θ₁ and θ₃ at 0)
    was worse. Each bounded entry at 0 alone, the others free, finds the optimum at θ₃ = 0
    with θ₁ small and positive: converged, singular, and lower than where the loop stopped
    (lme4 1.1-31 stops at -879.556136 for the second, REML: above both)."""
    data = _creeping_responses(sleepstudy)[which]
    result = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", data, method=method)
    assert result.converged and result.singular
    assert result.theta[2] == 0.0 and 0.0 < result.theta[0] < 1e-2
    assert result.objective < free_loop_objective
