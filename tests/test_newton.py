"""The trust-region Newton minimiser on functions with known minima."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
